"""The ``normlab`` command. User errors (bad data, bad options) end here as one line and exit code 2."""

import argparse
import dataclasses
import os
import shlex
import sys
import time
from pathlib import Path

from normlab import signals
from normlab.errors import ConfigError, NormlabError, closest
from normlab.files import display, one_line

EXIT_USER_ERROR = 2
PRESET_HELP = "a preset (baseline, bn-after, bn-before, ...: nn/presets.toml) or a [models.NAME] of --study"


# StudyConfig field -> the option that sets it; the config checks every value, argparse only parses them.
OPTIONS = {"epochs": "--epochs", "learning_rate": "--lr", "batch_size": "--batch-size", "optimizer": "--optimizer",
           "bn_momentum": "--bn-momentum", "bn_epsilon": "--bn-eps", "subset": "--subset", "seeds": "--seeds",
           "seeds_per_program": "--seeds-per-program", "workers": "--workers", "first_seed": "--seed",
           "lr_batch": "--lr-batch", "init_from": "--init-from",
           "shuffle": "--no-shuffle"}  # stored as args.no_shuffle = False: the field's value


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _study_config(args, **fixed):
    """The seed study (studies/seed.toml, what `reproduce` runs) or the study ``--study`` names, with the options
    the user gave on top; an option's error names the option."""
    from normlab.experiments.study import builtin, load, make_config
    config = (load(args.study) if args.study else builtin("seed")).base
    for field, flag in OPTIONS.items():
        if (value := getattr(args, flag[2:].replace("-", "_"), None)) is not None:
            config = make_config(config, {field: value}, flag)
    return dataclasses.replace(config, **{k: v for k, v in fixed.items() if v is not None})


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
    from rich.text import Text
    from normlab.nn.summary import layer_rows, param_counts
    model = _study_config(args, presets=[args.preset]).model(args.preset)
    if args.folded:
        from normlab.nn.fold import folded
        model = folded(model)
    table = Table(title=Text(f'Model: "{model.name}"'))
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
    from normlab.nn.summary import variables
    for var in variables(_study_config(args, presets=[args.preset]).model(args.preset)):
        print(f"{var.path:<40} {str(var.shape):<12} {'trainable' if var.trainable else 'non-trainable'}")


def _run_study(args, config, out: Path, on_epoch, progress=None) -> dict:
    """Train in a run folder this process holds, checkpointing every epoch; write results.json and the report.

    The report is written with SIGINT/SIGTERM held back, so an interrupt there still leaves it whole.
    """
    from normlab import rundir
    warn = print if progress is None else progress.console.print
    with rundir.claim(out):
        if (held := rundir.holds(out)) not in (None, "run") or (held and not args.resume):
            raise ConfigError(f"{display(out)} already holds a {held}; "
                              + ("choose another --out" if held == "sweep" else
                                 "add --resume to continue it, or choose another --out"))
        from normlab.data import load  # the heavy imports (JAX, scipy, matplotlib) once the folder is ours
        from normlab.experiments.reproduce import reproduce
        from normlab.report import write_all
        from normlab.report.results_json import write_results
        from normlab.report.tensorboard import LiveTensorBoard
        args.stop_note = lambda: _resume_note(args, out)
        signals.safe_point("data")
        data = load(args.data_dir, verify=not args.no_verify)
        with LiveTensorBoard() as tensorboard:
            results = reproduce(data, config, out, args.resume, _tee(on_epoch, tensorboard), warn)
        with signals.held():
            signals.safe_point("report")
            write_results(results, out / "results.json")
            write_all(results, out)
            args.stop_note = f"the run had finished: results and report are in {display(out)}"
    for run in results["runs"]:
        if run["status"] == "diverged":
            print(f"warning: {run['preset']} seed {run['seed']} diverged at epoch {run['diverged_epoch']} "
                  f"(non-finite loss); recorded in results.json", file=sys.stderr)
    return results


def _tee(*hooks):
    """One ``on_epoch`` hook that passes each ``EpochEvent`` to every one of ``hooks`` (a printer, TensorBoard)."""
    def on_epoch(event) -> None:
        for hook in hooks:
            hook(event)
    return on_epoch


def _resume_note(args, out: Path) -> str:
    """What an interrupted train/reproduce left, and the command that carries on from there."""
    again = [a for a in args.argv if a != "--resume"] + ([] if args.out else ["--out", display(out)])
    if any((out / "checkpoints").rglob("epoch-*.safetensors")):
        return (f"finished epochs are checkpointed in {display(out / 'checkpoints')}. "
                f"Resume with: normlab {shlex.join(again)} --resume")
    return f"no epoch had finished, so nothing was saved. Start again with: normlab {shlex.join(again)}"


def _check_init_from(config) -> None:
    """A model file to start from is read now, so a wrong one is an error before any training."""
    if config.init_from is not None:
        from normlab.interop.model_files import initial
        for preset in config.presets:
            initial(config.init_from, config.model(preset))


def cmd_train(args) -> None:
    config = _study_config(args, presets=[args.preset], seeds=1)
    _check_init_from(config)
    out = Path(args.out or f"runs/train-{args.preset}-seed{config.first_seed}-{time.strftime('%Y%m%d-%H%M%S')}")
    print(f"{args.preset}, seed {config.first_seed} -> {display(out)}", flush=True)

    def on_epoch(event):
        m = event.metrics
        if event.stage == "trained":
            print(f"Epoch {event.epoch}/{config.epochs}\n{event.seconds:.1f}s - loss: {m['loss'][0]:.4f} - "
                  f"accuracy: {m['accuracy'][0]:.4f} - val_loss: {m['val_loss'][0]:.4f} - "
                  f"val_accuracy: {m['val_accuracy'][0]:.4f}", flush=True)

    run = _run_study(args, config, out, on_epoch)["runs"][0]
    test = "—" if run["test"] is None else f"loss {run['test']['loss']:.4f}, accuracy {run['test']['accuracy']:.4f}"
    print(f"compile {run['time']['compile_s']:.1f}s, train {run['time']['train_s']:.1f}s; test {test}")


def cmd_reproduce(args) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    config = _study_config(args, presets=None if args.presets is None else _names(args.presets))
    _check_init_from(config)
    out = Path(args.out or f"runs/reproduce-{time.strftime('%Y%m%d-%H%M%S')}")
    console = Console()
    _say(console, f"{len(config.presets)} presets x {config.seeds} seeds x {config.epochs} epochs -> {display(out)}")
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        tasks = {p: progress.add_task(f"{escape(p):<10} compiling", total=config.epochs * config.seeds)
                 for p in config.presets}  # model-epochs

        def on_epoch(event):
            if event.stage != "test":
                took = "restored" if event.stage == "restored" else f"{event.seconds:.1f}s/epoch"
                progress.update(tasks[event.job.preset], advance=len(event.seeds),
                                description=f"{escape(event.job.preset):<10} epoch {event.epoch}: "
                                            f"val_accuracy {_mean(event.metrics['val_accuracy'])} ({took})")

        results = _run_study(args, config, out, on_epoch, progress)
    table = _summary_table(results)
    if table.row_count:
        console.print(table)
    else:
        _say(console, "every run diverged: no accuracy to summarize (see the warnings above and report.md)")
    _say(console, f"wrote {display(out)}/results.json, history.csv, report.md, learning_curves.png, tensorboard/")


def _say(console, text: str) -> None:
    """Print text as it is: names and paths are the user's, never rich markup."""
    console.print(text, markup=False, highlight=False)


def _mean(values) -> str:
    """Mean of one epoch's metric over the seeds that have not diverged ("—" when none is left)."""
    import numpy as np
    finite = np.asarray(values)[np.isfinite(values)]
    return f"{finite.mean():.4f}" if finite.size else "—"


def _summary_table(results: dict):
    """The study's terminal table (`report.summary.terminal_table`) as rich renders it; no rows if all diverged."""
    from normlab.report.stats import group_runs
    from normlab.report.summary import terminal_table
    from normlab.report.table import to_rich
    return to_rich(terminal_table(group_runs(results)))


def cmd_run(args) -> None:
    from rich.console import Console
    from normlab import rundir
    from normlab.experiments import study as studies
    from normlab.experiments import sweep
    study = studies.load(args.study)
    pool = study.base if args.workers is None else studies.make_config(study.base, {"workers": args.workers},
                                                                        "--workers")
    out = Path(args.out or f"runs/{study.name}")
    with rundir.claim(out):
        if (held := rundir.holds(out)) not in (None, "sweep"):
            raise ConfigError(f"{display(out)} holds a {'train or reproduce run' if held == 'run' else held}, "
                              f"not a sweep; choose another --out")
        args.stop_note = (f"finished trials and epochs are kept in {display(out)}. Resume with the same command: "
                          f"normlab {shlex.join(args.argv)}")
        sweep.prepare(study, out)
        everything = sweep.trials(study)
        pending = [(tid, o) for tid, o in everything if sweep.status(out / "trials" / tid) != "done"]
        console = Console()
        _say(console, f"{study.name}: {len(everything)} trial(s), {len(everything) - len(pending)} already done, "
                      f"{len(pending)} to run -> {display(out)}")
        if pending:
            from normlab.data import load
            from normlab.report import write_all
            from normlab.report.tensorboard import LiveTensorBoard
            signals.safe_point("data")
            data = load(args.data_dir, verify=not args.no_verify)

            def on_epoch(event):
                if event.stage == "trained":
                    _say(console, f"  {event.job.trial} {event.job.preset} seed {','.join(map(str, event.seeds))} "
                                  f"epoch {event.epoch}: val_accuracy {_mean(event.metrics['val_accuracy'])} "
                                  f"({event.seconds:.1f}s)")

            with LiveTensorBoard() as tensorboard:
                failed = sweep.run(study, out, pending, data, pool.worker_count, _tee(on_epoch, tensorboard),
                                   lambda text: _say(console, text), write_all)
            if failed:
                raise ConfigError(f"{len(failed)} trial(s) failed: {', '.join(failed)}; their manifest.json in "
                                  f"{display(out / 'trials')} says why; rerun the same command to retry them")
        with signals.held():
            signals.safe_point("report")
            _sweep_report(out, console)


DIAGNOSE_OPTIONS = {"presets": "--presets", "seeds": "--seeds", "every": "--every", "etas": "--etas",
                    "unit": "--unit", "precise_batches": "--precise-batches"}


def _diagnose_config(args):
    """The study's ``[diagnose]`` (the seed study's by default) with the options given; an error names its option."""
    from normlab.diagnose.config import with_options
    from normlab.experiments.study import builtin, load
    config = (load(args.study) if args.study else builtin("seed")).diagnose
    for field, flag in DIAGNOSE_OPTIONS.items():
        if (value := getattr(args, flag[2:].replace("-", "_"), None)) is not None:
            if field in ("presets", "etas"):
                value = _names(value)
            if field == "etas":
                value = [_number(flag, text) for text in value] or None
            config = with_options(config, {field: value}, flag)
    return config


def _number(flag: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{flag}: {text!r} is not a number") from None


def cmd_diagnose(args) -> None:
    from rich.console import Console
    from normlab import rundir
    from normlab.data import load
    from normlab.diagnose.study import run_diagnosis
    from normlab.report.tensorboard import LiveTensorBoard
    from normlab.diagnose.run import check_unit
    diagnosis = _diagnose_config(args)
    config = _study_config(args, presets=diagnosis.presets, seeds=diagnosis.seeds)
    if config.init_from is not None:
        raise ConfigError("diagnose measures training from each seed's own initial weights: remove init_from")
    for preset in diagnosis.presets:
        check_unit(config.model(preset), diagnosis.unit)
    out = Path(args.out or f"runs/diagnose-{time.strftime('%Y%m%d-%H%M%S')}")
    console = Console()
    with rundir.claim(out):
        if (held := rundir.holds(out)) not in (None, "diagnosis") or (held and not args.resume):
            raise ConfigError(f"{display(out)} already holds a {held}; "
                              + ("add --resume to continue it, or choose another --out" if held == "diagnosis" else
                                 "choose another --out"))
        again = [a for a in args.argv if a != "--resume"] + ([] if args.out else ["--out", display(out)])
        args.stop_note = (f"finished presets are kept in {display(out / 'presets')}. Resume with: "
                          f"normlab {shlex.join(again)} --resume")
        _say(console, f"diagnose {', '.join(diagnosis.presets)}: {diagnosis.seeds} seeds x {config.epochs} epochs, "
                      f"measured every {diagnosis.every} steps -> {display(out)}")
        signals.safe_point("data")
        data = load(args.data_dir, verify=not args.no_verify)

        def on_epoch(event):
            _say(console, f"  {event.job.preset} epoch {event.epoch}/{config.epochs}: val_accuracy "
                          f"{_mean(event.metrics['val_accuracy'])} ({event.seconds:.1f}s with probes)")

        with LiveTensorBoard() as tensorboard:
            diagnostics = run_diagnosis(config, diagnosis, data, out, args.resume, _tee(on_epoch, tensorboard),
                                        lambda where, seed, epoch, arrays: tensorboard.histograms(
                                            where.folder, where.preset, seed, epoch, arrays),
                                        lambda text: _say(console, text))
        args.stop_note = f"the diagnosis had finished: {display(out)}"
    for name, entry in diagnostics["presets"].items():
        time_ = entry["time"]
        _say(console, f"{name}: compile {time_['compile_s']:.1f}s, {time_['probed_epoch_s']:.2f}s per epoch with "
                      f"probes vs {time_['plain_epoch_s']:.2f}s without")
    _say(console, f"wrote {display(out)}/diagnostics.json, report.html, figures/, tensorboard/")


def _sweep_report(out: Path, console) -> None:
    from normlab.report.hparams import write_hparams
    from normlab.report.html import report_command
    from normlab.report.results_json import find_results, load_results
    from normlab.report.summary import final_table, group_settings
    from normlab.report.table import to_rich
    page = report_command([out], out / "report.html")
    results_list = [load_results(p) for p in find_results(out)]
    write_hparams(results_list, out / "tensorboard-hparams")
    console.print(to_rich(final_table(group_settings(results_list))))
    _say(console, f"report: {display(page)} (and {display(page.with_suffix('.md'))}); TensorBoard HParams: "
                  f"tensorboard --logdir {display(out / 'tensorboard-hparams')}")


def cmd_report(args) -> None:
    from normlab.report.html import report_command
    with signals.held():
        signals.safe_point("report")
        page = report_command(args.run_dirs, args.out, args.control)
        args.stop_note = f"the report was complete: {display(page)}"
    print(f"wrote {display(page)} and {display(page.with_suffix('.md'))}")


class Parser(argparse.ArgumentParser):
    """argparse, but errors are one line, and an unknown option gets a "did you mean" among the options of the
    command it was given to. No abbreviations: ``--seed`` for ``--seeds`` is a typo to point out, not to guess at."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{"allow_abbrev": False, **kwargs})

    def parse_args(self, args=None, namespace=None):
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            command = self._subcommand(getattr(parsed, "command", None)) or self
            known = [o for action in command._actions for o in action.option_strings]
            match = closest(extras[0].split("=")[0], known) if extras[0].startswith("-") else None
            where = f" for `{command.prog}`" if command is not self else ""
            self.error(f"unrecognized arguments{where}: {' '.join(extras)}"
                       + (f" (did you mean {match}?)" if match else ""))
        return parsed

    def _subcommand(self, name):
        for action in self._subparsers._group_actions if self._subparsers else []:
            if name in action.choices:
                return action.choices[name]
        return None

    def error(self, message):
        self.exit(EXIT_USER_ERROR, f"normlab: error: {one_line(message)}\n")


def build_parser() -> argparse.ArgumentParser:
    """Options only parse; the study config checks every value. Defaults shown are the seed study's."""
    from normlab.experiments.defaults import default, diagnose_default
    parser = Parser(prog="normlab", description="Batch normalization, reproduced and measured.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    def with_study(p):
        p.add_argument("--study", help="a study .toml whose [models] and [config] to use instead of the seed study")
        return p

    def with_data(p):
        p.add_argument("--data-dir", type=Path, help="folder with the Fashion-MNIST IDX files (.gz or plain)")
        p.add_argument("--no-verify", action="store_true", help="skip the SHA-256 check (a modified copy of the data)")
        return p

    def with_training(p):
        with_data(p)
        with_study(p)
        p.add_argument("--epochs", type=int, help=f"default {default('epochs')}")
        p.add_argument("--lr", type=float, help=f"learning rate (default {default('learning_rate')})")
        p.add_argument("--batch-size", type=int, help=f"default {default('batch_size')}")
        p.add_argument("--lr-batch", type=int, help="scale the learning rate linearly with the batch size: --lr is "
                       "for batches of this size (Goyal et al. 2017); default: no scaling")
        p.add_argument("--optimizer", help=f"sgd, momentum or adam (default {default('optimizer')})")
        p.add_argument("--bn-momentum", type=float, help=f"BN moving-average momentum, in [0, 1), for every batch_norm "
                       f"layer that sets none (default {default('bn_momentum')})")
        p.add_argument("--bn-eps", type=float, help=f"BN epsilon, > 0, likewise (default {default('bn_epsilon')})")
        p.add_argument("--subset", type=int, help="train on the first N training images only")
        p.add_argument("--out", type=Path, help="run directory: checkpoints, results.json, report")
        p.add_argument("--resume", action="store_true", help="continue from the newest intact checkpoint in --out")
        return p

    def with_start(p):
        p.add_argument("--init-from", help="start from this .keras or .safetensors model's weights (normlab export)")
        p.add_argument("--no-shuffle", action="store_const", const=False,
                       help="visit the training batches in order every epoch, as Keras' fit(shuffle=False)")
        return p

    p = with_data(sub.add_parser("data", help="find, fetch and verify Fashion-MNIST"))
    p.add_argument("--no-download", action="store_true", help="only look, never download")
    p.set_defaults(func=cmd_data)
    for name, func, text in (("summary", cmd_summary, "Keras-style model summary"),
                             ("inspect", cmd_inspect, "every variable with shape and trainable flag")):
        p = with_study(sub.add_parser(name, help=text))
        p.add_argument("preset", help=PRESET_HELP)
        p.set_defaults(func=func)
        if name == "summary":
            p.add_argument("--folded", action="store_true", help="the model with its batch norms folded for inference")
    p = with_start(with_training(sub.add_parser("train", help="train one model, one seed, Keras-like log")))
    p.add_argument("preset", help=PRESET_HELP)
    p.add_argument("--seed", type=int, help=f"default {default('first_seed')}")
    p.set_defaults(func=cmd_train)
    p = with_start(with_training(sub.add_parser("reproduce", help="the three-preset study over several seeds")))
    p.add_argument("--presets", help=f"comma-separated (default {','.join(default('presets'))})")
    p.add_argument("--seeds", type=int, help=f"default {default('seeds')}")
    p.add_argument("--seeds-per-program", type=int,
                   help="seeds vmapped into one compiled program (default: 1 on CPU, where it is fastest; all on GPU)")
    p.add_argument("--workers", type=int,
                   help="training processes, each pinned to a core (default: one per core on CPU, 1 on GPU)")
    p.set_defaults(func=cmd_reproduce)
    p = with_data(sub.add_parser("run", help="run a study TOML file (or a built-in study) and its sweep"))
    p.add_argument("study", help="path to a .toml study, or a built-in name: seed, lr-sweep, batch-size, momentum")
    p.add_argument("--out", type=Path, help="sweep directory (default runs/<study name>); rerun to resume")
    p.add_argument("--workers", type=int,
                   help="training processes for all trials' jobs, each pinned to its share of the cores (default: "
                        "the study's workers, else one per core on CPU, 1 on GPU)")
    p.set_defaults(func=cmd_run)
    p = with_training(sub.add_parser("diagnose", help="measure why BN helps: covariate shift, smoothness, the "
                                                       "train/eval gap (Ioffe & Szegedy 2015, Santurkar et al. 2018)"))
    p.add_argument("--presets", help=f"comma-separated (default {','.join(diagnose_default('presets'))})")
    p.add_argument("--seeds", type=int, help=f"default {diagnose_default('seeds')}")
    p.add_argument("--every", type=int, help=f"measure every K training steps (default {diagnose_default('every')})")
    p.add_argument("--etas", help="comma-separated step sizes of the landscape (default "
                                  f"{','.join(map(str, diagnose_default('etas')))})")
    p.add_argument("--unit", type=int,
                   help=f"watched unit of the last hidden layer (default {diagnose_default('unit')})")
    p.add_argument("--precise-batches", type=int,
                   help=f"training batches of precise BN (default {diagnose_default('precise_batches')})")
    p.set_defaults(func=cmd_diagnose)
    p = sub.add_parser("report", help="one self-contained HTML report (and Markdown) from run directories")
    p.add_argument("run_dirs", nargs="+", type=Path)
    p.add_argument("--out", type=Path, help="HTML file (default RUN_DIRS[0]/summary.html)")
    p.add_argument("--control", help="setting or preset to compare against (default baseline)")
    p.set_defaults(func=cmd_report)
    from normlab.interop.command import add_parsers
    add_parsers(sub, with_data)
    from normlab.bench.command import add_bench_parser
    add_bench_parser(sub)  # compiles cold on purpose: bench does not switch on the compile cache
    return parser


def main(argv: list[str] | None = None) -> int:
    """The command; its exit code. SIGINT/SIGTERM at any moment end it with 130/143 and one line saying what was
    kept (``signals``: acted on at the next safe point). Called as the program (``argv`` None), an interrupted run
    leaves with ``os._exit``: XLA's threads can crash the interpreter's normal shutdown after an interrupted
    compilation (exit 139 instead of 143)."""
    previous = signals.install()
    args = None
    try:
        signals.safe_point("start")
        for stream in (sys.stdout, sys.stderr):  # a C or ASCII locale must not turn "±" into a crash
            if hasattr(stream, "reconfigure"):
                stream.reconfigure(errors="backslashreplace")
        args = build_parser().parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)
        args.stop_note = "nothing was written"
        if args.command != "bench":  # bench's children configure themselves; its peers run as their users do
            from normlab import runtime
            runtime.configure(compile_cache=args.command in ("train", "reproduce", "run", "diagnose"))
        args.func(args)
        signals.check()  # a signal after the last safe point still ends the command as interrupted
        code = 0
    except BaseException as error:
        signals.ignore()  # from here on the command is ending: a second Ctrl-C must not cut its last line
        code = _exit_code(error, args)
    finally:
        signals.ignore()
        if argv is not None:
            signals.restore(previous)
    if argv is None and code in (128 + s for s in signals.SIGNALS):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _exit_code(error: BaseException, args) -> int:
    """What the command's end means: an interrupt (whatever exception it became), a user error, or our bug."""
    if (stop := signals.interruption(error)) is not None:
        signals.clear()
        note = getattr(args, "stop_note", "nothing was written")
        _error(f"interrupted by {stop}; {note() if callable(note) else note}", prefix="normlab: ")
        return stop.exit_code
    if isinstance(error, SystemExit) or (args is not None and args.debug):
        raise error
    if isinstance(error, NormlabError):
        _error(str(error))
    elif isinstance(error, OSError):  # disk full, read-only or vanished output folder: the environment, not a bug
        _error(f"{display(error.filename) if error.filename else 'output'}: {error.strerror or error}")
    elif isinstance(error, MemoryError):
        _error("out of memory; ask for fewer seeds, a smaller batch or a --subset")
    else:
        raise error
    return EXIT_USER_ERROR


def _error(message: str, prefix: str = "normlab: error: ") -> None:
    print(prefix + one_line(message), file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
