"""The commands as Python functions: the CLI parses its options and calls these, and so does a notebook.

Each checks everything it is given before any work (errors are one-line ``NormlabError``s), claims its run folder
(one writer per folder), trains through the worker pool and returns the run as a ``Results``, ``Sweep`` or
``Diagnosis``. What an interruption keeps is said by the stop note (``signals.set_note``), phrased for whoever
called: the command line to type again, or the call with ``resume=True``.
"""

import dataclasses
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING

from normlab import signals
from normlab.api.command import COMMAND, again as _again, flag as _flag, option_name, path_of, path_text, public
from normlab.api.progress import Display
from normlab.api.settings import data_name, study_config
from normlab.data.dataset import Dataset  # normlab.Dataset: arrays checked and split, for data=
from normlab.errors import ConfigError, shown
from normlab.files import display

if TYPE_CHECKING:  # imported where they are returned: ``normlab data`` must stay light (scipy, matplotlib)
    from normlab.api.results import Diagnosis, Results, Sweep


def _engine(tune_if_missing: bool = False) -> None:
    """The engine's settings (GEMM, XLA flags, compile cache) before JAX starts, as the CLI sets them; the long
    jobs (``reproduce``, ``run``) tune an untuned machine first."""
    from normlab import runtime
    runtime.configure(compile_cache=True, tune_if_missing=tune_if_missing)


def _stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


@public
def config(study=None, **options):
    """The settings a run would use, checked: the seed study's (or ``study``'s) with ``options`` on top.
    ``models`` adds models of your own, ``{name: {"layers": [...]}}`` as a study file's ``[models.NAME]``, which
    ``presets`` may name; a preset may also be a ``normlab.Model``, whose layers join them.

    >>> normlab.config(epochs=3, learning_rate=0.01).step_size
    0.01
    >>> normlab.config(models={"linear": {"layers": [{"kind": "flatten"}, {"kind": "dense", "units": "classes"}]}},
    ...                presets=["linear", "baseline"]).presets
    ('linear', 'baseline')
    >>> normlab.config(epoch=3)
    Traceback (most recent call last):
    normlab.errors.ConfigError: epoch: unknown config key 'epoch'; did you mean 'epochs'? known: ...
    """
    from normlab.api.model import placed
    presets = options.pop("presets", None)  # names, or normlab.Models: their layers join the study's models
    settings, presets = placed(study_config(study, options), presets)
    return study_config(settings, {"presets": presets})


@public
def data(data=None, *, data_dir=None, download: bool = True, verify: bool = True, val_split: int | None = None):
    """A dataset, found (or downloaded) and checked: a name (fashion-mnist, the default; mnist, cifar10, ...), the
    path of an ``.npz`` file or an image folder, arrays ``(x_train, y_train, x_test, y_test)`` or a ``Dataset``.

    >>> fashion = normlab.data()
    >>> fashion.splits, fashion.x_train.dtype, fashion.class_names[:3]
    ({'train': 55000, 'validation': 5000, 'test': 10000}, dtype('uint8'), ('T-shirt/top', 'Trouser', 'Pullover'))
    """
    from normlab.data import registry
    if val_split is not None:  # checked as a study's setting is; only then: the config module imports JAX
        from normlab.experiments.config import check
        val_split = check("val_split", val_split)
    signals.safe_point("data")
    return registry.load(data_name(data), data_dir=path_of(data_dir, "data_dir"), download=download,
                         verify=_flag(verify, "verify"), val_split=val_split)


def load_data(settings, data_dir, verify: bool):
    """The data ``settings`` name, loaded and checked against the study's sizes (``config.check_fits``)."""
    from normlab.experiments.config import check_fits
    dataset = data(settings.data, data_dir=data_dir, verify=verify, val_split=settings.val_split)
    check_fits(settings, dataset)
    return dataset


def _started(settings, presets, out: Path, reinit: bool, resume: bool):
    """``settings`` and the ``Start`` of a run of ``presets`` in ``out``: a ``normlab.Model``'s weights to train from
    (``api.model.starting``). A model file to start from is read now, so a wrong one is an error before any
    training; resuming, one that is gone is left to the checkpoints (``experiments.reproduce.start``)."""
    from normlab.api.model import starting
    settings, begin = starting(settings, presets, out, reinit)
    if begin is None and settings.init_from is not None:
        from normlab.experiments.reproduce import start
        for preset in settings.presets:
            start(settings, settings.model(preset), resume)
    return settings, begin


def _not_given(options: dict, fixed: dict[str, str]) -> None:
    """A ConfigError for an option the command sets itself (``fixed``: option -> why), rather than dropping it."""
    for name, why in fixed.items():
        if options.get(name) is not None:
            raise ConfigError(f"{option_name(name)} cannot be given here: {why}")


def _check_memory(settings) -> None:
    """Whether the study's jobs fit in memory, as its worker pool runs them: refused before its folder is made."""
    from normlab.experiments.reproduce import check_memory
    check_memory([settings], settings.worker_count)


def _tee(*hooks):
    """One ``on_epoch`` hook that passes each ``EpochEvent`` to every one of ``hooks`` (a printer, TensorBoard)."""
    def on_epoch(event) -> None:
        for hook in hooks:
            hook(event)
    return on_epoch


def _claimed(out: Path, kind: str, resume: bool) -> None:
    """Raise unless ``out`` (claimed by the caller) is new, or holds a ``kind`` and ``resume`` is set."""
    from normlab import rundir
    if (held := rundir.holds(out)) not in (None, kind) or (held and not resume):
        resuming = f"add {option_name('resume', 'resume=True')} to continue it, or " if held == kind else ""
        raise ConfigError(f"{display(out)} already holds a {held}; {resuming}choose another {option_name('out')}")


def _run_study(settings, out: Path, out_given: bool, call: str, resume: bool, data_dir, verify: bool, on_epoch,
               warn, begin) -> dict:
    """Train in a run folder this process holds (from ``begin``'s weights, if a ``Start``), checkpointing every
    epoch; write results.json and the report.

    The report is written with SIGINT/SIGTERM held back, so an interrupt there still leaves it whole.
    """
    from normlab import rundir
    with rundir.claim(out):
        _claimed(out, "run", resume)
        if begin is not None:
            begin.write(resume)
        from normlab.experiments.reproduce import reproduce as train_jobs  # heavy: JAX, once the folder is ours
        from normlab.report import write_all
        from normlab.report.results_json import write_results
        from normlab.report.tensorboard import LiveTensorBoard

        resume_with, start_with = _again(call, out, out_given), _again(call, out, out_given, False)

        def note() -> str:  # said after the caller's context is gone: the texts are made now
            if any((out / "checkpoints").rglob("epoch-*.safetensors")):
                return f"finished epochs are checkpointed in {display(out / 'checkpoints')}. Resume with: {resume_with}"
            return f"no epoch had finished, so nothing was saved. Start again with: {start_with}"

        signals.set_note(note)
        dataset = load_data(settings, data_dir, verify)
        with LiveTensorBoard() as tensorboard:
            results = train_jobs(dataset, settings, out, resume, _tee(on_epoch, tensorboard), warn)
        with signals.held():
            signals.safe_point("report")
            write_results(results, out / "results.json")
            write_all(results, out)
            signals.set_note(f"the run had finished: results and report are in {display(out)}")
    for run in results["runs"]:
        if run["status"] == "diverged":
            _warning(f"warning: {run['preset']} seed {run['seed']} diverged at epoch {run['diverged_epoch']} "
                     f"(non-finite loss); recorded in results.json")
    return results


@public
def train(preset, *, seed: int | None = None, out=None, resume: bool = False, reinit: bool = False, study=None,
          data_dir=None, verify: bool = True, progress: bool = True, config=None, **options) -> "Results":
    """Train one model for one seed, printing a Keras-like line per epoch; checkpoints, TensorBoard scalars,
    results.json and report.md go to ``out`` (default runs/train-PRESET-seedS-TIME). ``preset`` is a preset's or
    study model's name, or a ``normlab.Model`` (``normlab.model``), its layers built for the run's data: one with
    weights (from a file, a run or ``init``) trains from them, written to ``out``/init/NAME.safetensors as its
    ``init_from``, unless ``reinit``.
    ``options`` are settings (epochs, learning_rate, batch_size, subset, optimizer, shuffle, init_from, ...:
    ``normlab.config``); ``config`` a ready ``StudyConfig`` instead of ``study``.

    >>> results = normlab.train("bn-after", epochs=1, subset=5000, out="runs/doc-train", progress=False)
    >>> results.test["bn-after"]["accuracy"].shape
    (1,)
    >>> linear = normlab.model([{"kind": "flatten"}, {"kind": "dense", "units": "classes", "activation": "softmax"}],
    ...                        name="linear")
    >>> normlab.train(linear, epochs=1, subset=5000, out="runs/doc-linear", progress=False).presets
    ['linear']
    """
    _engine()
    _not_given(options, {"presets": "train trains one preset: give it as the first argument",
                         "seeds": "train trains one seed: choose it with seed",
                         **({"first_seed": "seed gives it: give one of them"} if seed is not None else {})})
    _one_model(preset)
    settings = _settings(config, study, {**options, "first_seed": seed} if seed is not None else options,
                         presets=[preset], seeds=1)
    name = settings.presets[0]
    data_dir = path_of(data_dir, "data_dir")
    out_given = out is not None
    out = path_of(out, "out") if out_given else Path(f"runs/train-{name}-seed{settings.first_seed}-{_stamp()}")
    settings, begin = _started(settings, [preset], out, reinit, resume)
    _check_memory(settings)
    shown = Display(progress)
    shown.say(f"{name}, seed {settings.first_seed} -> {display(out)}")

    def on_epoch(event):
        m = event.metrics
        if event.stage == "trained":
            shown.say(f"Epoch {event.epoch}/{settings.epochs}\n{event.seconds:.1f}s - loss: {m['loss'][0]:.4f} - "
                      f"accuracy: {m['accuracy'][0]:.4f} - val_loss: {m['val_loss'][0]:.4f} - "
                      f"val_accuracy: {m['val_accuracy'][0]:.4f}")

    record = _run_study(settings, out, out_given, "train", resume, data_dir, verify, on_epoch,
                        shown.say if shown.enabled else _warning, begin)
    run = record["runs"][0]
    test = "—" if run["test"] is None else f"loss {run['test']['loss']:.4f}, accuracy {run['test']['accuracy']:.4f}"
    shown.say(f"compile {run['time']['compile_s']:.1f}s, train {run['time']['train_s']:.1f}s; test {test}")
    _say_data(shown, [record])
    from normlab.api.results import Results
    return Results(record, out)


def _one_model(preset) -> None:
    """``train``'s model: a name or a ``normlab.Model``, else a one-line error (a list is ``reproduce``'s)."""
    from normlab.api.model import Model
    if not isinstance(preset, (str, Model)):
        raise ConfigError(f"{option_name('preset')} must be a preset's or study model's name or a normlab.Model, "
                          f"got {shown(preset)}")


def _warning(text: str) -> None:
    import sys
    print(text, file=sys.stderr, flush=True)


def _settings(config, study, options: dict, **fixed):
    """``config`` (a ready StudyConfig) or ``study``'s settings, with ``options`` and ``fixed`` on top."""
    from normlab.experiments.config import StudyConfig
    if config is not None and study is not None:
        raise ConfigError("give config or study, not both")
    if config is not None and not isinstance(config, StudyConfig):
        raise ConfigError(f"config must be a StudyConfig (normlab.config(...)), got {shown(config)}")
    from normlab.api.model import placed
    presets = fixed.pop("presets", None)  # names, or normlab.Models: their layers join the study's models
    settings, presets = placed(study_config(study if config is None else config, options, **fixed), presets)
    return settings if presets is None else dataclasses.replace(settings, presets=presets)


@public
def reproduce(presets=None, *, seeds: int | None = None, out=None, resume: bool = False, reinit: bool = False,
              study=None, data_dir=None, verify: bool = True, progress: bool = True, config=None,
              **options) -> "Results":
    """The study: every preset (baseline, bn-after, bn-before by default) for several seeds (5), in worker
    processes, one pinned to each core; a progress bar per preset. Writes results.json, history.csv, report.md,
    the figures and TensorBoard logs to ``out`` (default runs/reproduce-TIME). ``presets`` are names or
    ``normlab.Model``s, as ``train`` takes one; a Model with weights trains from them alone, unless ``reinit``.

    >>> study = normlab.reproduce(["baseline", "bn-after"], seeds=2, epochs=1, subset=5000,
    ...                           out="runs/doc-reproduce", progress=False)
    >>> study.history["bn-after"]["val_accuracy"].shape
    (2, 1)
    """
    if isinstance(presets, str):
        presets = [presets]
    _engine(tune_if_missing=True)
    settings = _settings(config, study, {**options, "seeds": seeds} if seeds is not None else options,
                         presets=presets)
    data_dir = path_of(data_dir, "data_dir")
    out_given = out is not None
    out = path_of(out, "out") if out_given else Path(f"runs/reproduce-{_stamp()}")
    settings, begin = _started(settings, presets, out, reinit, resume)
    _check_memory(settings)
    shown = Display(progress)
    shown.say(f"{len(settings.presets)} presets x {settings.seeds} seeds x {settings.epochs} epochs -> {display(out)}")
    with shown.bars({p: settings.epochs * settings.seeds for p in settings.presets}, "compiling") as bars:
        def on_epoch(event):
            if event.stage != "test":
                took = "restored" if event.stage == "restored" else f"{event.seconds:.1f}s/epoch"
                bars.update(event.job.preset, len(event.seeds),
                            f"epoch {event.epoch}: val_accuracy {_mean(event.metrics['val_accuracy'])} ({took})")

        record = _run_study(settings, out, out_given, "reproduce", resume, data_dir, verify, on_epoch,
                            bars.say if shown.enabled else _warning, begin)
    from normlab.api.results import Results
    results = Results(record, out)
    if shown.enabled:
        if not shown.notebook:  # in a notebook the returned Results shows its own tables
            from normlab.report.stats import group_runs
            from normlab.report.summary import terminal_table
            from normlab.report.table import to_rich
            table = to_rich(terminal_table(group_runs(record)))
            if table.row_count:
                shown.console.print(table)
            else:
                shown.say("every run diverged: no accuracy to summarize (see the warnings above and report.md)")
        _say_data(shown, [record])
        shown.say(f"wrote {display(out)}/results.json, history.csv, report.md, learning_curves.png, tensorboard/")
    return results


def _say_data(shown: Display, records: list[dict]) -> None:
    """What the runs trained on, one line per distinct data (``report.dataset.data_lines``), control characters of
    names and paths escaped."""
    from normlab.report.dataset import data_lines
    from normlab.report.literal import terminal
    for line in data_lines(records):
        shown.say(terminal(line))


def _mean(values) -> str:
    """Mean of one epoch's metric over the seeds that have not diverged ("—" when none is left)."""
    import numpy as np
    finite = np.asarray(values)[np.isfinite(values)]
    return f"{finite.mean():.4f}" if finite.size else "—"


@public
def run(study, *, out=None, workers: int | None = None, data=None, data_dir=None, verify: bool = True,
        progress: bool = True, engine: str = "local", address: str | None = None) -> "Sweep":
    """A study file (or a built-in study: seed, lr-sweep, batch-size, momentum, norms-vs-batch-size) and its sweep:
    every trial's jobs in one worker pool, each trial a run folder under ``out``/trials (default runs/NAME), then
    report.html over all of them. Calling it again resumes: finished trials and epochs are kept. ``data`` (a
    dataset name or path) replaces the study's ``[config]`` data, and is recorded with the study in ``out``.

    ``engine="ray"`` runs the jobs as Ray tasks instead: on a local Ray instance started (and shut down) for the
    sweep, or on the running cluster at ``address`` (``"auto"`` or the head's ``HOST:PORT``; ``out`` must then be
    on a file system the cluster's nodes share). Same folders, results and reports.

    >>> from pathlib import Path
    >>> _ = Path("lr.toml").write_text('''name = "lr"
    ... [config]
    ... presets = ["bn-after"]
    ... seeds = 1
    ... epochs = 1
    ... subset = 5000
    ... [sweep]
    ... learning_rate = [0.001, 0.01]
    ... ''')
    >>> sweep = normlab.run("lr.toml", out="runs/doc-sweep", progress=False)
    >>> sorted(sweep.trials)
    ['000-learning_rate=0.001', '001-learning_rate=0.01']
    """
    from normlab import rundir
    from normlab.experiments import study as studies
    from normlab.experiments import sweep
    _engine(tune_if_missing=True)
    if not (isinstance(engine, str) and engine in ("local", "ray")):
        raise ConfigError(f"{option_name('engine')} must be local or ray, got {engine!r:.80}")
    if address is not None and engine != "ray":
        raise ConfigError(f"{option_name('address')} is the address of a Ray cluster: it needs "
                          f"{option_name('engine')} ray")
    if address is not None and not (isinstance(address, str) and 0 < len(address) <= 1000 and address.isprintable()):
        raise ConfigError(f"{option_name('address')} must be auto or a Ray head's HOST:PORT, got {address!r:.80}")
    loaded = studies.load(path_text(study, "study", required=True))
    if data is not None:
        name = data_name(data)
        loaded = dataclasses.replace(loaded, base=studies.make_config(loaded.base, {"data": name}, option_name("data")),
                                     source=f"{loaded.source.rstrip()}\n\n# {option_name('data')}: {name!r}\n")
    sweep.ask_for_devices(loaded)
    pool = loaded.base if workers is None else studies.make_config(loaded.base, {"workers": workers},
                                                                   option_name("workers"))
    sweep.check_trials_fit(loaded, pool.worker_count)
    out = path_of(out, "out") if out is not None else Path(f"runs/{loaded.name}")
    data_dir = path_of(data_dir, "data_dir")
    shown = Display(progress)
    with rundir.claim(out):
        if (held := rundir.holds(out)) not in (None, "sweep"):
            raise ConfigError(f"{display(out)} holds a {'train or reproduce run' if held == 'run' else held}, "
                              f"not a sweep; choose another {option_name('out')}")
        again = (f"normlab {shlex.join(COMMAND.get()[0])}" if COMMAND.get() is not None else
                 f"normlab.run({str(study)!r}, out={str(out)!r})")
        signals.set_note(f"finished trials and epochs are kept in {display(out)}. Resume with the same "
                         f"{'command' if COMMAND.get() is not None else 'call'}: {again}")
        sweep.prepare(loaded, out)
        everything = sweep.trials(loaded)
        pending = [(tid, o) for tid, o in everything if sweep.status(out / "trials" / tid) != "done"]
        shown.say(f"{loaded.name}: {len(everything)} trial(s), {len(everything) - len(pending)} already done, "
                  f"{len(pending)} to run -> {display(out)}")
        if pending:
            from normlab.report import write_all
            from normlab.report.tensorboard import LiveTensorBoard
            dataset = load_data(loaded.base, data_dir, verify)

            def on_epoch(event):
                if event.stage == "trained":
                    shown.say(f"  {event.job.trial} {event.job.preset} seed {','.join(map(str, event.seeds))} "
                              f"epoch {event.epoch}: val_accuracy {_mean(event.metrics['val_accuracy'])} "
                              f"({event.seconds:.1f}s)")

            with LiveTensorBoard() as tensorboard:
                failed = sweep.run(loaded, out, pending, dataset, pool.worker_count, _tee(on_epoch, tensorboard),
                                   shown.say, write_all, *_ray_pool(engine, address))
            if failed:
                raise ConfigError(f"{len(failed)} trial(s) failed: {', '.join(failed)}; their manifest.json in "
                                  f"{display(out / 'trials')} says why; "
                                  + ("rerun the same command to retry them" if COMMAND.get() is not None
                                     else "call normlab.run again to retry them"))
        with signals.held():
            signals.safe_point("report")
            page = _sweep_report(out)
    from normlab.api.results import Sweep
    result = Sweep(out)
    if shown.enabled and not shown.notebook:
        from normlab.report.table import to_rich
        shown.console.print(to_rich(result.tables()[0]))
        _say_data(shown, [trial.record for trial in result.trials.values()])
    shown.say(f"report: {display(page)} (and {display(page.with_suffix('.md'))}); TensorBoard HParams: "
              f"tensorboard --logdir {display(out / 'tensorboard-hparams')}")
    return result


def _ray_pool(engine: str, address: str | None) -> tuple:
    """``sweep.run``'s ``pool`` argument for ``engine``: none (its own default) for the local one."""
    if engine == "local":
        return ()
    from normlab.experiments import ray_pool
    return (ray_pool.pool(address),)


def _sweep_report(out: Path) -> Path:
    from normlab.report.hparams import write_hparams
    from normlab.report.html import report_command
    from normlab.report.results_json import find_results, load_results
    page = report_command([out], out / "report.html")
    write_hparams([load_results(p) for p in find_results(out)], out / "tensorboard-hparams")
    return page


@public
def diagnose(presets=None, *, seeds: int | None = None, every: int | None = None, etas=None, unit: int | None = None,
             precise_batches: int | None = None, out=None, resume: bool = False, study=None, data_dir=None,
             verify: bool = True, progress: bool = True, config=None, **options) -> "Diagnosis":
    """Measure why BN helps: train ``presets`` with probes every ``every`` steps (the study's ``[diagnose]``,
    the seed study's by default) and write diagnostics.json, figures and report.html to ``out``.

    >>> diagnosis = normlab.diagnose(["baseline", "bn-after"], seeds=2, epochs=1, subset=5000,
    ...                              out="runs/doc-diagnose", progress=False)
    >>> sorted(diagnosis.figures())
    ['accuracy', 'ics', 'landscape', 'percentiles', 'train_eval_gap']
    """
    from normlab import rundir
    from normlab.diagnose.config import with_options
    from normlab.diagnose.run import check_unit
    from normlab.experiments.study import builtin, load
    _engine()
    loaded = load(path_text(study, "study")) if study is not None else builtin("seed")
    diagnosis = loaded.diagnose
    given = {"presets": [presets] if isinstance(presets, str) else presets, "seeds": seeds, "every": every,
             "etas": etas, "unit": unit, "precise_batches": precise_batches}
    for field, value in given.items():
        if value is not None:
            diagnosis = with_options(diagnosis, {field: value}, option_name(field))
    settings = _settings(config, loaded if config is None else study, options, presets=diagnosis.presets,
                         seeds=diagnosis.seeds)
    if settings.init_from is not None:
        raise ConfigError("diagnose measures training from each seed's own initial weights: remove init_from")
    if settings.devices > 1:
        raise ConfigError(f"diagnose measures training on one device: remove devices = {settings.devices}")
    if settings.normalize != "none" or settings.augment:
        raise ConfigError("diagnose measures training on the images as stored: remove normalize and augment")
    for preset in diagnosis.presets:
        check_unit(settings.model(preset), diagnosis.unit)
    data_dir = path_of(data_dir, "data_dir")
    _check_memory(dataclasses.replace(settings, seeds_per_program=settings.seeds, workers=1))  # as run_diagnosis
    out_given = out is not None
    out = path_of(out, "out") if out_given else Path(f"runs/diagnose-{_stamp()}")
    shown = Display(progress)
    with rundir.claim(out):
        _claimed(out, "diagnosis", resume)
        signals.set_note(f"finished presets are kept in {display(out / 'presets')}. Resume with: "
                         f"{_again('diagnose', out, out_given)}")
        shown.say(f"diagnose {', '.join(diagnosis.presets)}: {diagnosis.seeds} seeds x {settings.epochs} epochs, "
                  f"measured every {diagnosis.every} steps -> {display(out)}")
        from normlab.diagnose.study import run_diagnosis
        from normlab.report.tensorboard import LiveTensorBoard
        dataset = load_data(settings, data_dir, verify)

        def on_epoch(event):
            shown.say(f"  {event.job.preset} epoch {event.epoch}/{settings.epochs}: val_accuracy "
                      f"{_mean(event.metrics['val_accuracy'])} ({event.seconds:.1f}s with probes)")

        with LiveTensorBoard() as tensorboard:
            diagnostics = run_diagnosis(settings, diagnosis, dataset, out, resume, _tee(on_epoch, tensorboard),
                                        lambda where, seed, epoch, arrays: tensorboard.histograms(
                                            where.folder, where.preset, seed, epoch, arrays), shown.say)
        signals.set_note(f"the diagnosis had finished: {display(out)}")
    for name, entry in diagnostics["presets"].items():
        time_ = entry["time"]
        shown.say(f"{name}: compile {time_['compile_s']:.1f}s, {time_['probed_epoch_s']:.2f}s per epoch with "
                  f"probes vs {time_['plain_epoch_s']:.2f}s without")
    shown.say(f"wrote {display(out)}/diagnostics.json, report.html, figures/, tensorboard/")
    from normlab.api.results import Diagnosis
    return Diagnosis(diagnostics, out)


@public
def report(folders, out=None, control: str | None = None) -> Path:
    """One self-contained HTML report (and its Markdown twin) over run folders: tables with intervals and tests,
    learning curves, sweeps, and a diagnosis found among them. Returns the page's path.

    >>> normlab.report(["runs/doc-reproduce", "runs/doc-diagnose"], out="runs/doc-report.html")
    PosixPath('runs/doc-report.html')
    """
    from normlab.report.html import report_command
    many = folders if isinstance(folders, (list, tuple)) else [folders]
    folders = [path_of(folder, "folders") for folder in many]
    with signals.held():
        signals.safe_point("report")
        page = report_command(folders, path_of(out, "out"), control)
        signals.set_note(f"the report was complete: {display(page)}")
    return page
