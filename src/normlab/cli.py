"""The ``normlab`` command. User errors (bad data, bad options) end here as one line and exit code 2."""

import argparse
import os
import sys
import time
from pathlib import Path

from normlab import signals
from normlab.errors import ConfigError, NormlabError, closest
from normlab.files import display, one_line

EXIT_USER_ERROR = 2
LONG_JOBS = ("reproduce", "run")  # the engine is tuned on their first use here: a minute is little beside them
RUN_MODELS = ("train", "reproduce", "run", "diagnose", "export", "evaluate")  # the others need no GEMM (nor JAX)
PRESET_HELP = "a preset (baseline, bn-after, bn-before, ...: nn/presets.toml) or a [models.NAME] of --study"


# StudyConfig field -> the option that sets it; the config checks every value, argparse only parses them.
OPTIONS = {"epochs": "--epochs", "learning_rate": "--lr", "batch_size": "--batch-size", "optimizer": "--optimizer",
           "bn_momentum": "--bn-momentum", "bn_epsilon": "--bn-eps", "subset": "--subset", "seeds": "--seeds",
           "seeds_per_program": "--seeds-per-program", "workers": "--workers", "first_seed": "--seed",
           "lr_batch": "--lr-batch", "init_from": "--init-from", "devices": "--devices",
           "bn_sync": "--bn-sync",  # --bn-sync and --bn-local store args.bn_sync
           "shuffle": "--no-shuffle",  # stored as args.no_shuffle = False: the field's value
           "data": "--data", "val_split": "--val-split", "normalize": "--normalize", "augment": "--augment"}


DIAGNOSE_OPTIONS = {"presets": "--presets", "seeds": "--seeds", "every": "--every", "etas": "--etas",
                    "unit": "--unit", "precise_batches": "--precise-batches"}
# How errors and stop notes name the API's settings on the command line.
FLAGS = {**OPTIONS, **DIAGNOSE_OPTIONS, "out": "--out", "resume": "--resume", "format": "--format",
         "preset": "--preset", "seed": "--seed", "engine": "--engine", "address": "--address"}


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _options(args) -> dict:
    """The settings the user gave (StudyConfig field -> value); the API checks every value."""
    return {field: value for field, flag in OPTIONS.items()
            if (value := getattr(args, flag[2:].replace("-", "_"), None)) is not None}


def _common(args) -> dict:
    return {"out": args.out, "resume": args.resume, "study": args.study, "data_dir": args.data_dir,
            "verify": not args.no_verify}


def cmd_data(args) -> None:
    from normlab.data import BUILTIN, DEFAULT, folders
    if args.list:
        for name, builtin in BUILTIN.items():
            print(f"{name:<14} {builtin.description}; train {builtin.spec.splits['train']:,} / validation "
                  f"{builtin.spec.splits['validation']:,} / test {builtin.spec.splits['test']:,}")
        return
    if args.name is not None and args.data is not None and args.name != args.data:
        raise ConfigError(f"give the dataset once: {args.name!r} or --data {args.data!r}")
    args.data = args.name or args.data or DEFAULT
    if args.data in BUILTIN:
        spec = BUILTIN[args.data].spec
        for path, origin in folders.candidate_dirs(args.data, args.data_dir, getattr(spec, "debian", None)):
            print(f"looked in {path} ({origin})")
    start = time.perf_counter()
    data = api().data(args.data, data_dir=args.data_dir, download=not args.no_download, verify=not args.no_verify,
                      val_split=args.val_split)
    seconds = time.perf_counter() - start
    if args.data == "fashion-mnist":
        print(f"found Fashion-MNIST in {data.source}: 4 files, SHA-256 of the decompressed content "
              f"{'NOT checked (--no-verify)' if args.no_verify else 'verified'} ({seconds:.1f} s)")
    else:
        print(f"read {one_line(data.name)} from {one_line(data.source)} ({seconds:.1f} s): content SHA-256 "
              f"{data.digest[:16]}..., {'verified' if data.verified else 'not verified (no published checksum)'}")
    held = f" (first {len(data.y_val):,} training images)" if args.data in BUILTIN else ""
    names = ", ".join(data.class_names[:10]) + (f", ... ({len(data.class_names):,} in all)"
                                                 if len(data.class_names) > 10 else "")
    print(f"train {len(data.y_train):,} / validation {len(data.y_val):,}{held} / test {len(data.y_test):,}, "
          f"{'x'.join(map(str, data.shape.image))} {data.x_train.dtype}, {data.shape.classes} classes: {names}")


def cmd_summary(args) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text
    model = api().model(args.preset, args.study, args.data)
    summary = (model.folded() if args.folded else model).summary()
    table = Table(title=Text(f'Model: "{summary.name}"'))
    for column in summary.header:
        table.add_column(column, justify="right" if column == "Param #" else "left")
    for row in summary.rows:
        table.add_row(*row)
    console = Console()
    console.print(table)
    console.print("\n".join(summary.totals()), highlight=False)


def cmd_inspect(args) -> None:
    for var in api().model(args.preset, args.study, args.data).variables():
        print(f"{var.path:<40} {str(var.shape):<12} {'trainable' if var.trainable else 'non-trainable'}")


def cmd_train(args) -> None:
    """A model file (``mine.keras``) trains from its weights, or fresh ones with ``--reinit``, on --data."""
    from normlab.api.model import is_model_file
    model = api().model(args.preset) if is_model_file(args.preset) else args.preset
    api().train(model, reinit=args.reinit, **_common(args), **_options(args))


def cmd_reproduce(args) -> None:
    api().reproduce(None if args.presets is None else _names(args.presets), **_common(args), **_options(args))


def cmd_run(args) -> None:
    if args.val_split is not None:
        raise ConfigError("--val-split: a study file sets val_split in its [config]")
    api().run(args.study, out=args.out, workers=args.workers, data=args.data, data_dir=args.data_dir,
              verify=not args.no_verify,
              engine=args.engine, address=args.address)


def _number(flag: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{flag}: {text!r} is not a number") from None


def cmd_diagnose(args) -> None:
    etas = None if args.etas is None else [_number("--etas", text) for text in _names(args.etas)]
    api().diagnose(None if args.presets is None else _names(args.presets), seeds=args.seeds, every=args.every,
                   etas=etas, unit=args.unit, precise_batches=args.precise_batches, **_common(args),
                   **{k: v for k, v in _options(args).items() if k != "seeds"})


def cmd_report(args) -> None:
    page = api().report(args.run_dirs, args.out, args.control)
    print(f"wrote {display(page)} and {display(page.with_suffix('.md'))}")


def api():
    """The public API (``normlab``): each function is imported when a command calls it, not at start."""
    import normlab
    return normlab


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
        p.add_argument("--data", help=f"a dataset (default {default('data')}; `normlab data --list`), or the path of "
                                      "an .npz file (x_train, y_train, x_test, y_test) or an image folder")
        p.add_argument("--val-split", type=int, help="hold out the first N training images for validation (default: "
                                                     "the dataset's own split, 5,000 for the built-ins)")
        p.add_argument("--data-dir", type=Path, help="folder holding a built-in dataset's files (.gz or plain)")
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
        p.add_argument("--normalize", help="none (default) or per_channel: each channel's mean and std over the "
                                           "training images, applied to every split (and inside exports)")
        p.add_argument("--augment", type=_names, help="comma-separated, from crop4 (random crop after 4 pixels of "
                                                      "padding) and flip (random horizontal flip), redrawn every step")
        p.add_argument("--out", type=Path, help="run directory: checkpoints, results.json, report")
        p.add_argument("--resume", action="store_true", help="continue from the newest intact checkpoint in --out")
        return p

    def with_start(p):
        p.add_argument("--init-from", help="start from this .keras or .safetensors model's weights (normlab export)")
        p.add_argument("--no-shuffle", action="store_const", const=False,
                       help="visit the training batches in order every epoch, as Keras' fit(shuffle=False)")
        p.add_argument("--devices", type=int, help="data parallel: split every batch over N devices (GPUs, or on a "
                                                   "CPU N virtual devices sharing its cores); default 1")
        bn = p.add_mutually_exclusive_group()
        bn.add_argument("--bn-sync", dest="bn_sync", action="store_const", const=True,
                        help="with --devices: batch norm's statistics over the whole batch, as one device (default)")
        bn.add_argument("--bn-local", dest="bn_sync", action="store_const", const=False,
                        help="with --devices: each device normalizes its own rows (DDP without SyncBatchNorm)")
        hosts = p.add_argument_group("several processes or hosts (jax.distributed; run the same command on each, "
                                     "with its own --process-id and --out)")
        hosts.add_argument("--coordinator", help="HOST:PORT where process 0 listens (there only: 127.0.0.1 keeps a "
                           "one-host run off the network) and the others connect; with NORMLAB_JOIN_TOKEN set alike "
                           "in every process's environment, only processes that know it may join")
        hosts.add_argument("--processes", type=int, help="how many processes take part (>= 2)")
        hosts.add_argument("--process-id", type=int, help="this process's number, 0 .. processes - 1")
        hosts.add_argument("--join-timeout", type=int, default=300,
                           help="seconds to wait for every process to join (default 300)")
        return p

    p = with_data(sub.add_parser("data", help="find, fetch and verify a dataset (Fashion-MNIST by default), or check "
                                              "your own"))
    p.add_argument("name", nargs="?", help="the dataset (as --data): a name, or the path of an .npz file or image folder")
    p.add_argument("--list", action="store_true", help="the built-in datasets, with their sizes")
    p.add_argument("--no-download", action="store_true", help="only look, never download")
    p.set_defaults(func=cmd_data)
    for name, func, text in (("summary", cmd_summary, "Keras-style model summary"),
                             ("inspect", cmd_inspect, "every variable with shape and trainable flag")):
        p = with_study(sub.add_parser(name, help=text))
        p.add_argument("preset", help=PRESET_HELP)
        p.add_argument("--data", help="the dataset whose images and classes the model is built for (default: the "
                                      "study's); a name, or the path of an .npz file or an image folder")
        p.set_defaults(func=func)
        if name == "summary":
            p.add_argument("--folded", action="store_true", help="the model with its batch norms folded for inference")
    p = with_start(with_training(sub.add_parser("train", help="train one model, one seed, Keras-like log")))
    p.add_argument("preset", help=f"{PRESET_HELP}, or a model file (.keras: Keras' own or normlab's; .safetensors)")
    p.add_argument("--seed", type=int, help=f"default {default('first_seed')}")
    p.add_argument("--reinit", action="store_true", help="a model file's layers with fresh weights, not its own")
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
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: the pool of pinned processes (default); ray: Ray tasks (pip install 'normlab[ray]')")
    p.add_argument("--address", help="with --engine ray: a running Ray cluster (auto, or the head's HOST:PORT); "
                                     "default: a local Ray instance for this sweep")
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
    p = sub.add_parser("tune", help="measure which GEMM and XLA flags train fastest on this machine, and keep them")
    p.add_argument("--show", action="store_true", help="print the tuned choice and its measurements, measure nothing")
    p.add_argument("--steps", type=int, default=300, help="training steps per timed epoch (default 300)")
    p.add_argument("--rounds", type=int, default=3, help="timed epochs per candidate, the fastest counts (default 3)")
    p.add_argument("--cores", type=int, help="tune for this many cores only (default: all usable cores, and 1 core, "
                                             "a study's pinned worker)")
    p.set_defaults(func=cmd_tune)
    from normlab.bench.command import add_bench_parser
    add_bench_parser(sub)  # compiles cold on purpose: bench does not switch on the compile cache
    return parser


def cmd_tune(args) -> None:
    from normlab import runtime
    from normlab.engine import tune
    if not args.show:
        tune.tune(print, args.steps, args.rounds, cores=args.cores)
    for cores in tune.core_counts():
        entry = tune.cached(cores)
        print(f"{tune.machine_key(cores)}: " + (f"gemm={entry['gemm']},flags={entry['flags']} (tuned "
              f"{entry['timestamp']}; ms per step: {entry['step_ms']})" if entry else "not tuned"))
    here = runtime.chosen()
    print(f"in use here: gemm={here.gemm},flags={here.flags} ({here.source}); kept in {display(tune.cache_file())}")


def main(argv: list[str] | None = None) -> int:
    """The command; its exit code. SIGINT/SIGTERM at any moment end it with 130/143 and one line saying what was
    kept (``signals``: acted on at the next safe point). Called as the program (``argv`` None), an interrupted run
    leaves with ``os._exit``: XLA's threads can crash the interpreter's normal shutdown after an interrupted
    compilation (exit 139 instead of 143), and so does a process of several that failed: JAX's exit handler would
    wait at a shutdown barrier for peers that are gone."""
    previous = signals.install()
    args = None
    try:
        signals.safe_point("start")
        for stream in (sys.stdout, sys.stderr):  # a C or ASCII locale must not turn "±" into a crash
            if hasattr(stream, "reconfigure"):
                stream.reconfigure(errors="backslashreplace")
        args = build_parser().parse_args(argv)
        signals.set_note(signals.NOTHING_WRITTEN)
        _devices(args)
        if args.command != "bench":  # bench's children configure themselves; its peers run as their users do
            from normlab import runtime
            runtime.configure(compile_cache=args.command in ("train", "reproduce", "run", "diagnose"),
                              tune_if_missing=args.command in LONG_JOBS, load_gemm=args.command in RUN_MODELS)
        from normlab.api.command import as_command
        with as_command(sys.argv[1:] if argv is None else argv, FLAGS):
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
    from normlab.train.processes import joined  # light: JAX is imported only by joining
    if argv is None and (code in (128 + s for s in signals.SIGNALS) or code and joined()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _devices(args) -> None:
    """Before JAX starts: with ``--processes`` join the other processes (``train.processes.Processes``); with
    ``--devices N`` alone, ask for N devices (on a CPU, virtual ones: JAX makes them only before it starts)."""
    given = {flag: getattr(args, name, None) for flag, name in
             (("--coordinator", "coordinator"), ("--processes", "processes"), ("--process-id", "process_id"))}
    if all(value is None for value in given.values()):
        if getattr(args, "devices", None) is not None:
            from normlab.experiments.config import check
            from normlab.train.parallel import DataParallel
            DataParallel(check("devices", args.devices)).ask_for_cpu_devices()
        return
    if missing := [flag for flag, value in given.items() if value is None]:
        raise ConfigError(f"{', '.join(missing)} missing: a run over several processes needs --coordinator, "
                          f"--processes and --process-id")
    from normlab.experiments.config import check
    from normlab.train.processes import Processes, watched
    processes = Processes(given["--coordinator"], given["--processes"], given["--process-id"], args.join_timeout)
    if args.out is None:
        raise ConfigError("with --processes, give each process its own --out (they write the same numbers)")
    settings = _shared_settings(args)
    if args.devices is None:
        args.devices = processes.count  # one device per process
    processes.join(check("devices", args.devices), settings, args.out)
    args.func = watched(args.func)  # its end is the run's: the peers are told, and a peer's stop ends it


# What each process of a run over several may be given its own way; every other option is the run's, alike in all.
PER_PROCESS = ("process_id", "out", "data_dir", "no_verify", "join_timeout", "debug", "func")


def _shared_settings(args) -> dict:
    """What every process of a run is given alike, from which they derive the run's key (``processes.run_key``):
    the command and its options; a study file or --init-from by its content, since each host has its own paths."""
    import hashlib
    from normlab.files import FileProblem, open_regular
    settings = {name: value for name, value in vars(args).items() if name not in PER_PROCESS}
    for name in ("study", "init_from"):
        try:
            with open_regular(settings[name], 1 << 30) as file:
                settings[name] = hashlib.file_digest(file, "sha256").hexdigest()
        except (FileProblem, OSError, TypeError, ValueError):  # a built-in study, none, or a path the run refuses
            pass
    return settings


def _exit_code(error: BaseException, args) -> int:
    """What the command's end means: an interrupt (whatever exception it became), a user error, or our bug."""
    from normlab.memory import out_of_memory
    if (stop := signals.interruption(error)) is not None:
        signals.clear()
        _error(f"interrupted by {stop}; {signals.note()}", prefix="normlab: ")
        return stop.exit_code
    if isinstance(error, SystemExit) or (args is not None and args.debug):
        raise error
    if isinstance(error, NormlabError):
        _error(str(error))
    elif isinstance(error, OSError):  # disk full, read-only or vanished output folder: the environment, not a bug
        _error(f"{display(error.filename) if error.filename else 'output'}: {error.strerror or error}")
    elif (short := out_of_memory(error)) is not None:  # a MemoryError, or XLA's RESOURCE_EXHAUSTED
        _error(str(short))
    else:
        raise error
    return EXIT_USER_ERROR


def _error(message: str, prefix: str = "normlab: error: ") -> None:
    print(prefix + one_line(message), file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
