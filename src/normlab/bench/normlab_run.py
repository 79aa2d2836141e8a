"""Bench child for normlab: ``fit`` for 1 seed (plus the matmul floor), N vmapped seeds, N seeds in N worker
processes (one per core), or the whole study.

The child configures the engine as the CLI does (``runtime.configure``): the bench measures it as users run it.
"""

import dataclasses
import time

import numpy as np

from normlab.bench.common import (PeakTreeRss, child_parser, load_arrays, peak_rss_mib, read_model, summarize,
                                  write_result)


def main(argv=None) -> None:
    parser = child_parser(__doc__)
    parser.add_argument("--seeds", type=int, default=1, help="seeds trained as one vmapped program")
    parser.add_argument("--floor", action="store_true", help="also time the matmul floor (after training)")
    parser.add_argument("--procs", type=int, help="seeds trained at once in this many worker processes instead")
    parser.add_argument("--study", action="store_true", help="time the reproduce study end to end instead")
    args = parser.parse_args(argv)

    from normlab import runtime
    from normlab.engine import applied
    runtime.configure()  # the engine's XLA flags, as `normlab` sets them; compiled cold on purpose (no cache)
    import jax
    from normlab.experiments.config import StudyConfig
    from normlab.experiments.provenance import versions
    from normlab.train.loop import fit
    data, x_train, y_train, _, _ = load_arrays(args)
    job = read_model(args)
    config = StudyConfig.from_dict(job["config"])
    if args.study:
        write_result(args.out, study(data, args.subset))
        return
    data = dataclasses.replace(data, x_train=x_train, y_train=y_train)
    if args.procs:
        write_result(args.out, in_processes(data, config, job["preset"], args.procs, args.epochs))
        return

    model, epoch_times = config.model(job["preset"]), []
    result = fit(model, data, list(range(args.seeds)), dataclasses.replace(config, epochs=args.epochs).train_config(),
                 lambda event: epoch_times.extend([event.seconds] if event.stage == "trained" else []))
    out = summarize(epoch_times, len(y_train), compile_s=result.compile_s)
    out |= {"seeds": args.seeds, "val_accuracy": float(np.mean(result.history["val_accuracy"][:, -1])),
            "val_accuracy_per_seed": result.history["val_accuracy"][:, -1].tolist(),
            "peak_rss_mib": peak_rss_mib(),  # before the floor's own buffers
            "versions": versions(), "device": str(jax.devices()[0]), "engine": applied.describe()}
    if args.seeds > 1:
        out |= {"program_epoch_s": out["epoch_s"], "epoch_s": out["epoch_s"] / args.seeds,
                "samples_per_s": out["samples_per_s"] * args.seeds,
                "per_model": f"epoch_s and samples_per_s are per model: {args.seeds} seeds in one program"}
    if args.floor:
        from normlab.bench.floor import matmul_floor
        out["floor"] = matmul_floor(model, len(y_train))
        out["step_ops"] = step_ops(model)
    write_result(args.out, out)


def step_ops(model) -> dict:
    """The passes of one training step (``bench.ops``) with XLA's GEMM and with the engine's, for comparison."""
    from normlab.bench.ops import step_ops as passes
    from normlab.engine import gemm
    from normlab.engine.measure import epoch_program
    found = {}
    for name in gemm.usable(dict.fromkeys(("xla", gemm.chosen()))):
        epoch, (state, images, labels, learning_rate) = epoch_program(model, 4)
        found[name] = passes(epoch.lower(state, images, labels, 0, learning_rate).compile().as_text())
    return found


def in_processes(data, study, preset: str, procs: int, epochs: int) -> dict:
    """``procs`` seeds of ``study``'s ``preset`` at once, one worker process per core: per-model time = concurrent
    epoch time / procs.

    Each worker's first epoch is left out, so only epochs during which all of them train are counted.
    """
    from normlab.experiments.reproduce import reproduce
    config = dataclasses.replace(study, presets=(preset,), seeds=procs, first_seed=0, epochs=epochs,
                                 seeds_per_program=1, workers=procs)
    steady = []

    def on_epoch(event):
        steady.extend([event.seconds] if event.stage == "trained" and (event.epoch > 1 or epochs == 1) else [])

    with PeakTreeRss() as rss:
        runs = reproduce(data, config, on_epoch=on_epoch)["runs"]
    out = summarize(steady, len(data.y_train), compile_s=max(r["time"]["compile_s"] for r in runs))
    return out | {"seeds": procs, "procs": procs, "program_epoch_s": out["epoch_s"], "epoch_s": out["epoch_s"] / procs,
                  "samples_per_s": out["samples_per_s"] * procs, "peak_rss_mib": rss.peak_mib,
                  "peak_rss_sum_mib": rss.peak_rss_sum_mib,
                  "val_accuracy": float(np.mean([r["history"]["val_accuracy"][-1] for r in runs])),
                  "per_model": f"epoch_s and samples_per_s are per model: {procs} single-core processes at once"}


def study(data, subset: int | None) -> dict:
    """``reproduce`` with its defaults (3 presets x 5 seeds x 10 epochs), compile included, timed end to end.

    Without a run directory, so no checkpoints are written: the time is training, evaluation and compilation.
    """
    from normlab.experiments.config import StudyConfig
    from normlab.experiments.reproduce import reproduce
    config = StudyConfig(subset=subset)
    start = time.perf_counter()
    with PeakTreeRss() as rss:
        results = reproduce(data, config)
    total = time.perf_counter() - start
    per_preset = {p: next(r["time"] for r in results["runs"] if r["preset"] == p) for p in config.presets}
    return {"presets": list(config.presets), "seeds": config.seeds, "epochs": config.epochs, "total_s": total,
            "workers": config.worker_count, "per_preset": per_preset, "peak_rss_mib": rss.peak_mib,
            "peak_rss_sum_mib": rss.peak_rss_sum_mib,
            "val_accuracy": {p: float(np.mean([r["history"]["val_accuracy"][-1] for r in results["runs"]
                                               if r["preset"] == p])) for p in config.presets},
            "method": "measured end to end (compile included, no checkpoints); peak memory: PSS summed over its "
                      "processes (peak_rss_sum_mib: RSS summed, shared pages counted in each)"}


if __name__ == "__main__":
    main()
