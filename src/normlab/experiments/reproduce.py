"""The study: every preset trained for several seeds, as jobs, gathered into one results dict (``results.json``).

A job is one preset's group of seeds: one compiled program, checkpointed after every epoch under
``FOLDER/checkpoints/PRESET`` (``.../seeds-A-B`` when a preset's seeds take several programs), so an interrupted
study resumes where it stopped. ``jobs`` is the one place seeds are grouped into programs; ``run_jobs`` trains any
list of jobs — a study's, or those of all a sweep's trials at once — in the worker pool (``experiments.workers``),
whose processes call ``train_job``.
"""

import os
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import jax
import numpy as np

from normlab import memory
from normlab.data.dataset import Dataset, content_digest
from normlab.errors import NormlabError
from normlab.experiments import workers
from normlab.experiments.config import StudyConfig
from normlab.experiments.provenance import provenance
from normlab.files import one_line
from normlab.interop import model_files
from normlab.nn.models import Model
from normlab.nn.summary import param_counts
from normlab.train import checkpoint
from normlab.train.loop import Checkpointing, EpochEvent, SeedsResult, fit, merge
from normlab.train.parallel import DataParallel
from normlab.train.preprocess import preprocessing

ARRAYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


@dataclass(frozen=True)
class Job:
    """One compiled program's work: ``preset`` for ``seeds`` under ``config``, checkpointed in and reported to the
    run folder ``folder`` (None: neither); ``trial`` is the sweep trial it belongs to."""
    preset: str
    seeds: list[int]
    config: StudyConfig
    folder: Path | None = None
    trial: str | None = None
    resume: bool = False

    @property
    def checkpoints(self) -> Path | None:
        if self.folder is None:
            return None
        directory = Path(self.folder) / "checkpoints" / self.preset
        whole = len(self.seeds) == self.config.seeds
        return directory if whole else directory / f"seeds-{self.seeds[0]}-{self.seeds[-1]}"


def default_seeds_per_program() -> int:
    """How many seeds one compiled program trains at once (its vmap width).

    Measured on the 2-core CPU: vmapping 5 seeds made each seed's epoch 1.6 s -> 2.6 s, since 5 models' weights
    no longer fit the caches. So on CPU each program trains one seed (and the programs run side by side in the
    worker pool, one per core); an accelerator trains them all at once.
    """
    return 1 if jax.default_backend() == "cpu" else 0  # 0: all seeds in one program


def ask_for_most_devices(configs: list[StudyConfig]) -> None:
    """Before JAX starts here (``default_seeds_per_program`` starts it): as many devices as the most any of
    ``configs`` trains on (``train.parallel``; on a CPU, virtual ones)."""
    if (most := max((config.devices for config in configs), default=1)) > 1:
        DataParallel(most).ask_for_cpu_devices()


def program_width(config: StudyConfig) -> int:
    """Seeds per compiled program: ``seeds_per_program`` (default ``default_seeds_per_program``; more than
    ``seeds``, or 0, means all of them)."""
    width = config.seeds_per_program if config.seeds_per_program is not None else default_seeds_per_program()
    return config.seeds if width <= 0 else min(width, config.seeds)


def check_memory(configs: list[StudyConfig], processes: int) -> None:
    """Before any work: refuse a study (or a sweep's trials, ``configs``) whose largest job cannot fit in memory as
    many times as the pool runs jobs at once (up to ``processes`` workers, ``workers.run``), in one line."""
    ask_for_most_devices(configs)
    needs, count = [], 0
    for config in configs:
        width = program_width(config)
        count += len(config.presets) * -(-config.seeds // width)
        sizes = config.splits()
        needs += [(memory.training_bytes(config.model(preset), config.train_config(), width, sizes["train"],
                                         sizes["validation"] + sizes["test"]), preset,
                   config.batch_size, width) for preset in config.presets]
    need, preset, batch_size, width = max(needs)
    memory.check(need, min(processes, count, len(workers.usable_cores())),
                 f"{preset} at batch size {batch_size}, {width} seed(s) per program")


def jobs(config: StudyConfig, folder: Path | None = None, trial: str | None = None,
         resume: bool = False) -> list[Job]:
    """The study's units of work: each preset's seeds in consecutive groups of ``seeds_per_program`` (by default
    ``default_seeds_per_program``; more than ``seeds``, or 0, means all of them), one compiled program each."""
    ask_for_most_devices([config])
    width = program_width(config)
    seeds = config.seed_list
    groups = [seeds[i:i + width] for i in range(0, len(seeds), width)]
    return [Job(preset, group, config, folder, trial, resume) for preset in config.presets for group in groups]


def subset(arrays: dict[str, np.ndarray], n: int | None) -> SimpleNamespace:
    """The data as ``fit`` reads it, with the first ``n`` training images only (None: all); validation and test
    stay whole so numbers remain comparable."""
    return SimpleNamespace(**{**arrays, "x_train": arrays["x_train"][:n], "y_train": arrays["y_train"][:n]})


def data_record(dataset: Dataset, n: int | None) -> dict:
    """results.json's ``data`` (``report.results_json``): the dataset's provenance as the runs used it, with its
    first ``n`` training images only (``subset``; None: all), so the splits and the SHA-256 are those of the very
    arrays trained and evaluated on, and ``subset`` says it was cut. (Hashing all of Fashion-MNIST: 0.04 s.)"""
    used = vars(subset({name: getattr(dataset, name) for name in ARRAYS}, n))
    return {**dataset.provenance(), "sha256": content_digest(*(used[name] for name in ARRAYS)),
            "splits": {"train": len(used["y_train"]), "validation": len(used["y_val"]), "test": len(used["y_test"])},
            "subset": n}


def run_records(preset: str, params: dict, result: SeedsResult, width: int) -> list[dict]:
    """One ``runs`` entry per seed; compile and train time are those of the preset's whole group of seeds.

    A diverged seed keeps the epochs before its first non-finite loss and gets ``status: diverged``.
    """
    records = []
    for i, seed in enumerate(result.seeds):
        stop = result.diverged_epoch[i]
        kept = slice(None) if stop is None else slice(0, stop - 1)
        records.append({
            "preset": preset,
            "seed": seed,
            "params": params,
            "status": "ok" if stop is None else "diverged",
            "diverged_epoch": stop,
            "history": {k: v[i, kept].tolist() for k, v in result.history.items()},
            "test": None if stop is not None else {k: float(v[i]) for k, v in result.test.items()},
            "time": {"compile_s": result.compile_s, "train_s": result.train_s,
                     "seeds": len(result.seeds), "seeds_per_program": width, "resumed_from_epoch": result.resumed_from},
        })
    return records


def start(config: StudyConfig, model: Model, resume: bool) -> tuple[tuple | None, str | None, dict]:
    """The weights a run of ``model`` starts from (None: each seed draws its own), the digest that names them in
    its checkpoints' identity, and what a resume leaves to the checkpoints (``Checkpointing``'s ``unchecked`` and
    ``cannot_start``).

    A checkpoint holds every weight of the run, so a resumed run no longer needs its ``init_from`` file. The
    identity is the weights' SHA-256, not the path: a moved or re-exported copy still resumes, other weights (at
    the same path or not) are another configuration, refused. A file gone by the resume, or no ``init_from`` at
    all, leaves the start to the checkpoints; only a run that no checkpoint restores then needs the file.
    """
    path = config.init_from
    if path is not None and not (resume and not os.path.exists(path)):
        weights = model_files.initial(path, model)
        return weights, checkpoint.digest(weights), {}
    if not resume:
        return None, None, {}
    return None, None, {"unchecked": ("init_from",),
                        "cannot_start": None if path is None else f"init_from {one_line(path)} is gone"}


def train_job(job: dict, arrays: dict[str, np.ndarray], send: Callable[[dict], None]) -> dict:
    """The pool's target: train one job (as ``run_jobs`` sends it) and return its result; its ``EpochEvent``s and
    warnings are sent on as they come."""
    config = StudyConfig.from_dict(job["config"])
    model = config.model(job["preset"])
    resume = job["resume"] and job["checkpoints"] is not None
    initial, weights, resuming = start(config, model, resume)
    checkpointing = None
    if job["checkpoints"] is not None:
        checkpointing = Checkpointing(Path(job["checkpoints"]), config.identity(job["preset"], weights, job["data"]),
                                      resume,
                                      warn=lambda text: send({"warn": text}), **resuming)

    def on_epoch(event: EpochEvent) -> None:
        send({"event": {"epoch": event.epoch, "stage": event.stage, "seconds": event.seconds,
                        "metrics": _lists(event.metrics)}})

    result = fit(model, subset(arrays, config.subset), job["seeds"], config.train_config(), on_epoch, checkpointing,
                 initial)
    return {"history": _lists(result.history), "test": _lists(result.test), "diverged_epoch": result.diverged_epoch,
            "compile_s": result.compile_s, "train_s": result.train_s, "resumed_from": result.resumed_from}


def _lists(arrays: dict) -> dict:
    return {k: np.asarray(v).tolist() for k, v in arrays.items()}


def _arrays(lists: dict) -> dict:
    return {k: np.asarray(v, np.float64) for k, v in lists.items()}


def run_jobs(todo: list[Job], data, processes: int, on_done: Callable[[int, SeedsResult | NormlabError], None],
             on_epoch: Callable[[EpochEvent], None] | None = None, warn=print, logs: Path | None = None,
             pool: Callable = workers.run) -> None:
    """Train ``todo`` in a pool of up to ``processes`` workers (``pool``: ``workers.run``, or Ray's,
    ``ray_pool.pool``). ``on_done(index, outcome)`` gets each job's ``SeedsResult`` (without ``final_state``), or
    the ``NormlabError`` that stopped it, as soon as it is finished; ``on_epoch`` gets every ``EpochEvent`` with its
    ``job``."""
    def on_message(index: int, message: dict) -> None:
        job = todo[index]
        if "event" in message:
            event = message["event"]
            if on_epoch is not None:
                on_epoch(EpochEvent(job.seeds, event["epoch"], _arrays(event["metrics"]), event["seconds"],
                                    event["stage"], job))
        elif "warn" in message:
            warn(message["warn"])
        elif "error" in message:
            on_done(index, NormlabError(message["error"]))
        else:
            done = message["done"]
            on_done(index, SeedsResult(job.seeds, _arrays(done["history"]), _arrays(done["test"]),
                                       done["diverged_epoch"], done["compile_s"], done["train_s"], None,
                                       done["resumed_from"]))

    wire = [{"preset": job.preset, "seeds": job.seeds, "config": job.config.as_dict(), "resume": job.resume,
             "checkpoints": None if job.checkpoints is None else str(job.checkpoints), "data": data.digest}
            for job in todo]
    pool("normlab.experiments.reproduce:train_job", wire, {name: getattr(data, name) for name in ARRAYS}, processes,
         on_message, logs)


def assemble(todo: list[Job], results: list[SeedsResult], dataset: Dataset) -> dict:
    """One study's ``{"provenance", "config", "data", "preprocessing", "runs"}`` from its jobs, their results and the
    ``dataset`` they trained on: each preset's runs merged."""
    config = todo[0].config
    runs = []
    for preset in config.presets:
        mine = [(job, result) for job, result in zip(todo, results) if job.preset == preset]
        runs += run_records(preset, param_counts(config.model(preset)), merge([r for _, r in mine]),
                            max(len(job.seeds) for job, _ in mine))
    return {"provenance": provenance(), "config": config.as_dict(), "data": data_record(dataset, config.subset),
            "preprocessing": recorded_preprocessing(dataset, config), "runs": runs}


def recorded_preprocessing(dataset: Dataset, config: StudyConfig) -> dict:
    """results.json's ``preprocessing`` (``train.preprocess.preprocessing`` of the training images used): the scale,
    and each channel's mean and std only when the run normalized."""
    done = preprocessing(dataset.x_train[:config.subset], config.normalize)
    return {key: value for key, value in done.items() if value is not None}


def reproduce(data, config: StudyConfig = StudyConfig(), out: Path | None = None, resume: bool = False,
              on_epoch: Callable[[EpochEvent], None] | None = None, warn=print) -> dict:
    """Train each preset for ``config.seed_list`` in ``config.worker_count`` processes (default: one per core on a
    CPU) on ``data`` (a ``Dataset``) and return the results dict (``assemble``); a job's error is the study's."""
    todo = jobs(config, None if out is None else Path(out), resume=resume)
    results: list = [None] * len(todo)

    def on_done(index: int, outcome: SeedsResult | NormlabError) -> None:
        if isinstance(outcome, NormlabError):
            raise outcome
        results[index] = outcome

    run_jobs(todo, data, config.worker_count, on_done, on_epoch, warn, None if out is None else Path(out) / "logs")
    return assemble(todo, results, data)
