"""``normlab bench``: the options and the command; wire it in with ``add_bench_parser(subparsers)``."""

import argparse
from pathlib import Path


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def add_bench_parser(subparsers) -> argparse.ArgumentParser:
    from normlab.bench.runner import PEERS
    p = subparsers.add_parser("bench", help="time normlab against Keras (TF, JAX) and PyTorch on the same training")
    p.add_argument("--preset", default="bn-after", help="a preset, or a [models.NAME] of --study")
    p.add_argument("--study", help="a study .toml whose [models] and settings to use instead of the seed study")
    p.add_argument("--epochs", type=int, default=3, help="epochs per system (>= 2 for a steady epoch)")
    p.add_argument("--peers", type=_names, default=tuple(PEERS), help=f"comma-separated, from {','.join(PEERS)}")
    p.add_argument("--out", type=Path, help="run directory (default runs/bench-<time>)")
    p.add_argument("--subset", type=int, help="train on the first N training images (default all)")
    p.add_argument("--seeds-vmapped", type=int, default=5, help="seeds of normlab-vmap (< 2: skip it)")
    p.add_argument("--procs", type=int, help="worker processes of normlab-procs (default: one per core; < 2: skip)")
    p.add_argument("--keras-jax-spe", type=lambda t: tuple(map(int, _names(t))), default=(1, 32, 256),
                   help="steps_per_execution values tried for keras-jax (2 epochs each)")
    p.add_argument("--rounds", type=int, default=1,
                   help="run every system this many times, interleaved, and keep each one's fastest (noisy machines)")
    p.add_argument("--full-study", action="store_true", help="also time the 3x5x10 reproduce study (long)")
    p.add_argument("--data", help="a dataset name or the path of an .npz file or image folder (default: the study's)")
    p.add_argument("--data-dir", type=Path, help="folder holding a built-in dataset's files (.gz or plain)")
    p.set_defaults(func=cmd_bench)
    return p


def config_from_args(args):
    from normlab.bench.runner import BenchConfig
    options = {k: getattr(args, k) for k in ("preset", "epochs", "peers", "subset", "seeds_vmapped",
                                             "keras_jax_spe", "full_study", "study", "data", "data_dir", "out", "procs",
                                             "rounds")}
    return BenchConfig(**{k: v for k, v in options.items() if v is not None})


def cmd_bench(args) -> dict:
    from rich.console import Console
    from normlab.bench.report import bench_table, footer_lines
    from normlab.bench.runner import run_bench
    from normlab.rundir import claim
    config = config_from_args(args)
    console = Console()
    if not console.is_terminal:  # a log file or pipe: wide enough that the table's rows stay on one line
        console = Console(width=132)
    say = lambda line: console.print(line, highlight=False, markup=False)  # text as is: "normlab[bench]"
    from normlab import runtime
    engine = runtime.chosen(tune_if_missing=True, say=say)  # normlab's children run the tuned engine, as users do
    say(f"bench -> {config.out}; each system in its own process, one at a time; normlab's engine: "
        f"gemm={engine.gemm},flags={engine.flags} ({engine.source})")
    with claim(config.out):
        bench = run_bench(config, say)
    console.print(bench_table(bench))
    for line in footer_lines(bench):
        say(line)
    say(f"wrote {config.out}/bench.json, bench.png, results/, logs/")
    return bench


def main(argv: list[str] | None = None) -> int:
    """``python -m normlab.bench.command [options]``: the same command, before or without ``normlab bench``."""
    import sys
    from normlab.errors import NormlabError
    parser = argparse.ArgumentParser(prog="normlab")
    add_bench_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    try:
        args.func(args)
    except NormlabError as error:
        print(f"normlab: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
