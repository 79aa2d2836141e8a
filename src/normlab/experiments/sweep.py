"""Run a study's trials, each in its own run directory with a manifest; finished trials are never rerun.

``OUT/trials/<id>/manifest.json`` says what the trial is (setting, full config, provenance) and how far it got
(``running`` -> ``done``, ``failed`` or ``interrupted``). Rerunning the same command skips ``done`` trials and resumes the
others from their checkpoints. The pending trials' jobs are one list for the worker pool, so trials share its cores
as a study's seeds do; each trial is written up as soon as its last job is finished.
"""

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from normlab import signals
from normlab.errors import ConfigError, NormlabError
from normlab.files import FileProblem, display, read_json, read_text, write_text
from normlab.experiments import workers
from normlab.experiments.provenance import provenance
from normlab.experiments.config import StudyConfig
from normlab.experiments.reproduce import ask_for_most_devices, assemble, check_memory, jobs, run_jobs
from normlab.experiments.study import Study, expand, make_config, setting, trial_id


def trials(study: Study) -> list[tuple[str, dict]]:
    return [(trial_id(i, overrides), overrides) for i, overrides in enumerate(expand(study.sweep))]


MANIFEST_BYTES = 16 << 20


def _write_json(path: Path, value: dict) -> None:
    write_text(path, json.dumps(value, indent=1, allow_nan=False))


def status(trial_dir: Path) -> str:
    """The manifest's status; ``new`` for a trial without a readable manifest (it is then run again)."""
    try:
        manifest = read_json(trial_dir / "manifest.json", MANIFEST_BYTES)
    except FileProblem:
        return "new"
    found = manifest.get("status") if isinstance(manifest, dict) else None
    return found if found in ("running", "done", "failed", "interrupted") else "new"


def prepare(study: Study, out: Path) -> None:
    """Record the study itself; a different study in the same folder is refused, not mixed in."""
    saved = out / "study.toml"
    if saved.exists():
        try:
            same = read_text(saved, len(study.source.encode()) + 1) == study.source
        except FileProblem:
            same = False
        if not same:
            raise ConfigError(f"{display(out)} holds a different study ({display(saved)}); choose another folder")
    else:
        write_text(saved, study.source)


@dataclass
class _Trial:
    folder: Path
    overrides: dict
    manifest: dict
    indices: range                                # its jobs' places in the sweep's job list
    results: dict = field(default_factory=dict)   # job index -> SeedsResult
    status: str = "running"

    def record(self, status: str, **extra) -> None:
        _write_json(self.folder / "manifest.json", {**self.manifest, "status": status, **extra})
        self.status = status


def ask_for_devices(study: Study) -> None:
    """Before JAX starts (the pool's size starts it): the most devices any of the study's trials trains on."""
    ask_for_most_devices(_configs(study, trials(study)))


def _configs(study: Study, pending: list[tuple[str, dict]]) -> list[StudyConfig]:
    return [make_config(study.base, overrides, f"{study.name} trial {tid}") for tid, overrides in pending]


def _pool_size(configs: list[StudyConfig], processes: int) -> int:
    """As ``StudyConfig.worker_count``: a trial on several devices runs here, on all of them, one job at a time."""
    return 1 if any(config.devices > 1 for config in configs) else processes


def check_trials_fit(study: Study, processes: int) -> None:
    """Before any work: every trial's jobs, as ``run`` trains them in up to ``processes`` workers, must fit in
    memory (``reproduce.check_memory``)."""
    configs = _configs(study, trials(study))
    check_memory(configs, _pool_size(configs, processes))


def run(study: Study, out: Path, pending: list[tuple[str, dict]], data, processes: int, on_epoch=None, say=print,
        write_reports: Callable[[dict, Path], None] | None = None, pool: Callable = workers.run) -> list[str]:
    """Train the ``pending`` trials (all presets x seeds of each configuration) in one pool of up to ``processes``
    workers (``pool``: as ``reproduce.run_jobs`` takes it); return the ids of those that failed. A trial's results, report and ``done`` are written together as
    soon as its last job is finished; a trial that cannot finish is ``failed`` (its error in the manifest) while
    the others go on; a signal or a crash leaves every unfinished trial ``interrupted`` or ``failed``."""
    todo, started = [], []
    configs = _configs(study, pending)
    ask_for_most_devices(configs)  # the most any trial needs, before the first trial's jobs start JAX
    processes = _pool_size(configs, processes)
    for (tid, overrides), config in zip(pending, configs):
        folder = out / "trials" / tid
        mine = jobs(config, folder, tid, resume=True)
        trial = _Trial(folder, overrides, {"study": study.name, "trial": tid, "setting": overrides,
                                           "config": config.as_dict(), "provenance": provenance()},
                       range(len(todo), len(todo) + len(mine)))
        trial.record("running")
        todo += mine
        started.append(trial)
    owner = {index: trial for trial in started for index in trial.indices}

    def on_done(index: int, outcome) -> None:
        trial = owner[index]
        if trial.status != "running":  # failed already: its other jobs' checkpoints serve the rerun
            return
        if isinstance(outcome, NormlabError):
            trial.record("failed", error=str(outcome))
            say(f"trial {trial.folder.name} failed: {outcome}")
            return
        trial.results[index] = outcome
        if len(trial.results) == len(trial.indices):
            _finish(study, trial, todo, data, write_reports)
            say(f"trial {trial.folder.name} done")

    try:
        run_jobs(todo, data, processes, on_done, on_epoch, say, out / "logs", pool)
    except BaseException as error:
        interrupted = signals.interruption(error) is not None
        for trial in started:
            if trial.status == "running" and interrupted:
                trial.record("interrupted")
            elif trial.status == "running":
                trial.record("failed", error=f"{type(error).__name__}: {error}")
        raise
    return [trial.folder.name for trial in started if trial.status == "failed"]


def _finish(study: Study, trial: _Trial, todo: list, data, write_reports) -> None:
    """Results, report and manifest: all of them or, after a crash, a trial to rerun."""
    results = assemble([todo[i] for i in trial.indices], [trial.results[i] for i in trial.indices], data)
    for run in results["runs"]:
        run["setting"] = {"preset": run["preset"], **setting(trial.overrides)}
    results["study"] = {"name": study.name, "trial": trial.folder.name}
    with signals.held():
        _write_json(trial.folder / "results.json", results)
        if write_reports is not None:
            write_reports(results, trial.folder)
        trial.record("done", finished=time.time())
