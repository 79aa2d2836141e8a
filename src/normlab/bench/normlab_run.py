"""Bench child for normlab: ``fit`` for 1 seed (plus the matmul floor) or N vmapped seeds, or the whole study.

XLA_FLAGS are left as the environment and the engine set them: the bench measures the engine as users run it.
"""

import dataclasses
import time

import numpy as np

from normlab.bench.common import child_parser, load_arrays, peak_rss_mib, summarize, write_result


def main(argv=None) -> None:
    parser = child_parser(__doc__)
    parser.add_argument("--seeds", type=int, default=1, help="seeds trained as one vmapped program")
    parser.add_argument("--floor", action="store_true", help="also time the matmul floor (after training)")
    parser.add_argument("--study", action="store_true", help="time the reproduce study end to end instead")
    args = parser.parse_args(argv)

    import jax
    from normlab.experiments.provenance import versions
    from normlab.nn.models import build
    from normlab.train.loop import TrainConfig, fit
    data, x_train, y_train, _, _ = load_arrays(args)
    if args.study:
        write_result(args.out, study(data, args.subset))
        return
    data = dataclasses.replace(data, x_train=x_train, y_train=y_train)

    model, epoch_times = build(args.preset), []
    result = fit(model, data, list(range(args.seeds)), TrainConfig(epochs=args.epochs),
                 lambda epoch, metrics, seconds: epoch_times.append(seconds))
    out = summarize(epoch_times, len(y_train), compile_s=result.compile_s)
    out |= {"seeds": args.seeds, "val_accuracy": float(np.mean(result.history["val_accuracy"][:, -1])),
            "val_accuracy_per_seed": result.history["val_accuracy"][:, -1].tolist(),
            "peak_rss_mib": peak_rss_mib(),  # before the floor's own buffers
            "versions": versions(), "device": str(jax.devices()[0])}
    if args.seeds > 1:
        out |= {"program_epoch_s": out["epoch_s"], "epoch_s": out["epoch_s"] / args.seeds,
                "samples_per_s": out["samples_per_s"] * args.seeds,
                "per_model": f"epoch_s and samples_per_s are per model: {args.seeds} seeds in one program"}
    if args.floor:
        from normlab.bench.floor import matmul_floor
        out["floor"] = matmul_floor(model, len(y_train))
    write_result(args.out, out)


def study(data, subset: int | None) -> dict:
    """``reproduce`` with its defaults (3 presets x 5 seeds x 10 epochs), compile included, timed end to end.

    Without a run directory, so no checkpoints are written: the time is training, evaluation and compilation.
    """
    from normlab.experiments.config import StudyConfig
    from normlab.experiments.reproduce import reproduce
    config = StudyConfig(subset=subset)
    start = time.perf_counter()
    results = reproduce(data, config)
    total = time.perf_counter() - start
    per_preset = {p: next(r["time"] for r in results["runs"] if r["preset"] == p) for p in config.presets}
    return {"presets": list(config.presets), "seeds": config.seeds, "epochs": config.epochs, "total_s": total,
            "per_preset": per_preset, "method": "measured end to end (compile included, no checkpoints)"}


if __name__ == "__main__":
    main()
