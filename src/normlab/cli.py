"""The ``normlab`` command. User errors (bad data, bad options) end here as one line and exit code 2."""

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from normlab.errors import ConfigError, NormlabError, closest

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _preset_names(text: str) -> tuple[str, ...]:
    from normlab.nn.models import check_preset
    names = tuple(check_preset(name.strip()) for name in text.split(",") if name.strip())
    if not names:
        raise ConfigError("--presets is empty")
    return names


def _study_config(args, **fixed):
    """The seed study (studies/seed.toml, what `reproduce` runs) with the options the user gave on top."""
    from normlab.experiments.study import load, make_config
    given = {"epochs": args.epochs, "learning_rate": args.lr, "batch_size": args.batch_size,
             "bn_momentum": args.bn_momentum, "bn_epsilon": args.bn_eps, "subset": args.subset,
             "optimizer": args.optimizer, **fixed}
    return make_config(load("seed").base, {k: v for k, v in given.items() if v is not None}, "options")


def cmd_data(args) -> None:
    from normlab.data import candidate_dirs, load
    for path, origin in candidate_dirs(args.data_dir):
        print(f"looked in {path} ({origin})")
    start = time.perf_counter()
    data = load(args.data_dir, download=not args.no_download, verify=not args.no_verify)
    print(f"found Fashion-MNIST in {data.source}: 4 files, SHA-256 of the decompressed content "
          f"{'NOT checked (--no-verify)' if args.no_verify else 'verified'} "
          f"({time.perf_counter() - start:.1f} s)")
    print(f"train {len(data.y_train):,} / validation {len(data.y_val):,} (first 5,000 training images) "
          f"/ test {len(data.y_test):,}, 28x28 uint8")


def cmd_summary(args) -> None:
    from rich.console import Console
    from rich.table import Table
    from normlab.nn.models import build
    from normlab.nn.summary import layer_rows, param_counts
    model = build(_preset_names(args.preset)[0])
    table = Table(title=f'Model: "{model.name}"')
    for column in ("Layer (type)", "Output Shape", "Param #"):
        table.add_column(column, justify="right" if column == "Param #" else "left")
    for row in layer_rows(model):
        table.add_row(f"{row.name} ({row.kind})", str(row.output_shape), f"{row.params:,}")
    counts = param_counts(model)
    console = Console()
    console.print(table)
    console.print(f"Total params: {counts['total']:,}\nTrainable params: {counts['trainable']:,}\n"
                  f"Non-trainable params: {counts['non_trainable']:,}", highlight=False)


def cmd_inspect(args) -> None:
    from normlab.nn.models import build
    from normlab.nn.summary import variables
    for var in variables(build(_preset_names(args.preset)[0])):
        print(f"{var.path:<40} {str(var.shape):<12} {'trainable' if var.trainable else 'non-trainable'}")


def _run_study(args, config, out: Path, on_epoch, progress=None) -> dict:
    """Train, checkpointing every epoch; write results.json and the report. Interrupts say how to resume."""
    from normlab import signals
    from normlab.data import load
    from normlab.experiments.reproduce import reproduce
    from normlab.report import write_all
    from normlab.report.results_json import write_results
    data = load(args.data_dir, verify=not args.no_verify)
    warn = print if progress is None else progress.console.print
    signals.install()
    try:
        results = reproduce(data, config, out, args.resume, on_epoch, warn)
    except signals.Interrupted as stop:
        resume = [a for a in sys.argv[1:] if a != "--resume"] + ([] if args.out else ["--out", str(out)])
        print(f"normlab: interrupted by {stop}; finished epochs are checkpointed in {out / 'checkpoints'}. "
              f"Resume with: normlab {shlex.join(resume)} --resume", file=sys.stderr)
        raise SystemExit(stop.exit_code) from None
    write_results(results, out / "results.json")
    write_all(results, out)
    for run in results["runs"]:
        if run["status"] == "diverged":
            print(f"warning: {run['preset']} seed {run['seed']} diverged at epoch {run['diverged_epoch']} "
                  f"(non-finite loss); recorded in results.json", file=sys.stderr)
    return results


def cmd_train(args) -> None:
    config = _study_config(args, presets=list(_preset_names(args.preset)), seeds=1, first_seed=args.seed)
    out = Path(args.out or f"runs/train-{args.preset}-seed{args.seed}-{time.strftime('%Y%m%d-%H%M%S')}")
    print(f"{args.preset}, seed {args.seed} -> {out}", flush=True)

    def on_epoch(preset, epoch, m, seconds):
        print(f"Epoch {epoch + 1}/{config.epochs}\n{seconds:.1f}s - loss: {m['loss'][0]:.4f} - "
              f"accuracy: {m['accuracy'][0]:.4f} - val_loss: {m['val_loss'][0]:.4f} - "
              f"val_accuracy: {m['val_accuracy'][0]:.4f}", flush=True)

    run = _run_study(args, config, out, on_epoch)["runs"][0]
    test = "—" if run["test"] is None else f"loss {run['test']['loss']:.4f}, accuracy {run['test']['accuracy']:.4f}"
    print(f"compile {run['time']['compile_s']:.1f}s, train {run['time']['train_s']:.1f}s; test {test}")


def cmd_reproduce(args) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table
    from normlab.report import summary_rows
    config = _study_config(args, presets=None if args.presets is None else list(_preset_names(args.presets)),
                           seeds=args.seeds, seeds_per_program=args.seeds_per_program, workers=args.workers)
    out = Path(args.out or f"runs/reproduce-{time.strftime('%Y%m%d-%H%M%S')}")
    console = Console()
    console.print(f"{len(config.presets)} presets x {config.seeds} seeds x {config.epochs} epochs -> {out}")
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        programs = -(-config.seeds // config.program_width)
        tasks = {p: progress.add_task(f"{p:<10} compiling", total=config.epochs * programs) for p in config.presets}

        def on_epoch(preset, epoch, m, seconds):
            progress.update(tasks[preset], advance=1, description=f"{preset:<10} epoch {epoch + 1}: val_accuracy "
                            f"{np.nanmean(m['val_accuracy']):.4f} ({seconds:.1f}s/epoch)")

        results = _run_study(args, config, out, on_epoch, progress)
    table = Table(title=f"after {config.epochs} epochs, % mean ± std over seeds; gain vs baseline in pp")
    for column in ("preset", "n", "val acc", "test acc", "gain ep 1", "gain final", "compile s", "train s"):
        table.add_column(column, justify="left" if column == "preset" else "right")
    for row in summary_rows(results):
        gains = ("—", "—") if row["gain_final_pp"] is None else (f"{row['gain_epoch1_pp']:+.2f}",
                                                                 f"{row['gain_final_pp']:+.2f}")
        table.add_row(row["preset"], str(row["n"]),
                      f"{100 * row['final_val_accuracy_mean']:.2f} ± {100 * row['final_val_accuracy_std']:.2f}",
                      f"{100 * row['test_accuracy_mean']:.2f} ± {100 * row['test_accuracy_std']:.2f}", *gains,
                      f"{row['compile_s_mean']:.1f}", f"{row['train_s_mean']:.1f}")
    console.print(table)
    console.print(f"wrote {out}/results.json, history.csv, report.md, learning_curves.png, tensorboard/")


def cmd_run(args) -> None:
    from rich.console import Console
    from normlab import signals
    from normlab.data import load
    from normlab.experiments import study as studies
    from normlab.experiments import sweep
    from normlab.report import write_all
    study = studies.load(args.study)
    out = Path(args.out or f"runs/{study.name}")
    sweep.prepare(study, out)
    everything = sweep.trials(study)
    if args.trial is not None:
        chosen = [t for t in everything if t[0] == args.trial]
        if not chosen:
            raise ConfigError(f"no trial {args.trial!r} in {study.name}")
        everything = chosen
    pending = [(tid, o) for tid, o in everything if sweep.status(out / "trials" / tid) != "done"]
    console = Console()
    console.print(f"{study.name}: {len(everything)} trial(s), {len(everything) - len(pending)} already done, "
                  f"{len(pending)} to run -> {out}")
    signals.install()
    try:
        if args.workers > 1 and len(pending) > 1:
            tail = [*(["--data-dir", str(args.data_dir)] if args.data_dir else []),
                    *(["--no-verify"] if args.no_verify else [])]
            failed = sweep.run_in_processes(out / "study.toml", out, [tid for tid, _ in pending], args.workers,
                                            tail, console.print)
            if failed:
                raise ConfigError(f"{len(failed)} trial(s) failed: {', '.join(failed)}; see their .log files "
                                  f"in {out / 'trials'}; rerun the same command to retry them")
        elif pending:
            data = load(args.data_dir, verify=not args.no_verify)
            for tid, overrides in pending:
                def on_epoch(preset, epoch, m, seconds, tid=tid):
                    console.print(f"  {tid} {preset} epoch {epoch + 1}: val_accuracy "
                                  f"{np.nanmean(m['val_accuracy']):.4f} ({seconds:.1f}s)", highlight=False)
                sweep.run_trial(study, tid, overrides, out, data, on_epoch, console.print, write_all,
                                in_process=args.trial is not None)
    except signals.Interrupted as stop:
        print(f"normlab: interrupted by {stop}; finished trials and epochs are kept in {out}. "
              f"Resume with the same command: normlab {shlex.join(sys.argv[1:])}", file=sys.stderr)
        raise SystemExit(stop.exit_code) from None
    if args.trial is None:
        _sweep_report(out, console)


def _sweep_report(out: Path, console) -> None:
    from rich.table import Table
    from normlab.report import html
    from normlab.report.hparams import write_hparams
    page = html.report_command([out], out / "report.html")
    results_list = [html.load_results(p) for p in html.find_results(out)]
    write_hparams(results_list, out / "tensorboard-hparams")
    groups = html.group_settings(results_list)
    title, _, header, rows = html.tables(groups, html.controls(groups))[0]
    table = Table(title=title)
    for column in header:
        table.add_column(column)
    for row in rows:
        table.add_row(*map(str, row))
    console.print(table)
    console.print(f"report: {page} (and {page.with_suffix('.md')}); TensorBoard HParams: "
                  f"tensorboard --logdir {out / 'tensorboard-hparams'}")


def cmd_report(args) -> None:
    from normlab.report.html import report_command
    page = report_command(args.run_dirs, args.out, args.control)
    print(f"wrote {page} and {page.with_suffix('.md')}")


class Parser(argparse.ArgumentParser):
    """argparse, but errors are one line, and an unknown option gets a "did you mean"."""

    def error(self, message):
        if message.startswith("unrecognized arguments: "):
            known = [o for a in self._actions for o in a.option_strings]
            for action in self._subparsers._group_actions if self._subparsers else []:
                known += [o for p in action.choices.values() for a in p._actions for o in a.option_strings]
            unknown = message.split(": ", 1)[1].split()[0].split("=")[0]
            match = closest(unknown, known)
            message += f" (did you mean {match}?)" if match else ""
        self.exit(EXIT_USER_ERROR, f"normlab: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="normlab", description="Batch normalization, reproduced and measured.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    def with_data(p):
        p.add_argument("--data-dir", type=Path, help="folder with the Fashion-MNIST IDX files (.gz or plain)")
        p.add_argument("--no-verify", action="store_true", help="skip the SHA-256 check (a modified copy of the data)")
        return p

    def with_training(p):
        with_data(p)
        p.add_argument("--epochs", type=_positive_int, help="default 10")
        p.add_argument("--lr", type=_positive_float, help="learning rate (default 1e-3)")
        p.add_argument("--batch-size", type=_positive_int, help="default 32")
        p.add_argument("--optimizer", choices=["sgd", "momentum", "adam"], help="default sgd, as in the study")
        p.add_argument("--bn-momentum", type=float, help="BN moving-average momentum, in [0, 1) (default 0.99)")
        p.add_argument("--bn-eps", type=_positive_float, help="BN epsilon, > 0 (default 1e-3)")
        p.add_argument("--subset", type=_positive_int, help="train on the first N training images only")
        p.add_argument("--out", type=Path, help="run directory: checkpoints, results.json, report")
        p.add_argument("--resume", action="store_true", help="continue from the newest intact checkpoint in --out")
        return p

    p = with_data(sub.add_parser("data", help="find, fetch and verify Fashion-MNIST"))
    p.add_argument("--no-download", action="store_true", help="only look, never download")
    p.set_defaults(func=cmd_data)
    for name, func, text in (("summary", cmd_summary, "Keras-style model summary"),
                             ("inspect", cmd_inspect, "every variable with shape and trainable flag")):
        p = sub.add_parser(name, help=text)
        p.add_argument("preset")
        p.set_defaults(func=func)
    p = with_training(sub.add_parser("train", help="train one model, one seed, Keras-like log"))
    p.add_argument("preset")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_train)
    p = with_training(sub.add_parser("reproduce", help="the three-preset study over several seeds"))
    p.add_argument("--presets", help="comma-separated (default baseline,bn-after,bn-before)")
    p.add_argument("--seeds", type=_positive_int, help="default 5")
    p.add_argument("--seeds-per-program", type=_positive_int,
                   help="seeds vmapped into one compiled program (default: 1 on CPU, where it is fastest; all on GPU)")
    p.add_argument("--workers", type=_positive_int,
                   help="training processes, each pinned to a core (default: one per core on CPU, 1 on GPU)")
    p.set_defaults(func=cmd_reproduce)
    p = with_data(sub.add_parser("run", help="run a study TOML file (or a built-in study) and its sweep"))
    p.add_argument("study", help="path to a .toml study, or a built-in name: seed, lr-sweep, batch-size, momentum")
    p.add_argument("--out", type=Path, help="sweep directory (default runs/<study name>); rerun to resume")
    p.add_argument("--workers", type=_positive_int, default=1,
                   help="trials in parallel processes, each training in-process (default 1: one trial at a time, "
                        "its seeds spread over one process per core)")
    p.add_argument("--trial", help=argparse.SUPPRESS)  # one trial, used by --workers
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("report", help="one self-contained HTML report (and Markdown) from run directories")
    p.add_argument("run_dirs", nargs="+", type=Path)
    p.add_argument("--out", type=Path, help="HTML file (default RUN_DIRS[0]/summary.html)")
    p.add_argument("--control", help="setting or preset to compare against (default baseline)")
    p.set_defaults(func=cmd_report)
    from normlab.bench.command import add_bench_parser
    add_bench_parser(sub)  # compiles cold on purpose: bench does not switch on the compile cache
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("train", "reproduce", "run"):
        from normlab.runtime import enable_compile_cache
        enable_compile_cache()
    try:
        args.func(args)
    except NormlabError as error:
        if args.debug:
            raise
        print(f"normlab: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as error:  # disk full, read-only or vanished output folder: the environment, not a bug
        if args.debug:
            raise
        print(f"normlab: error: {error.filename or 'output'}: {error.strerror or error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("normlab: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
