"""The study: every preset trained for several seeds, gathered into one results dict (the ``results.json`` schema).

Each preset's seeds train through one compiled program, vmapped ``program_width`` seeds at a time (see
``train.loop``), checkpointed after every epoch under ``OUT/checkpoints/PRESET`` so an interrupted study
resumes where it stopped. On a multi-core CPU the (preset, seeds) jobs run in worker processes, one per core
(``experiments.workers``).
"""

from dataclasses import replace
from pathlib import Path
from typing import Callable

from normlab.experiments.config import StudyConfig
from normlab.experiments.provenance import provenance
from normlab.nn.models import build
from normlab.nn.summary import param_counts
from normlab.train.loop import Checkpointing, SeedsResult, fit, group_directory, merge, seed_groups


def subset(data, n: int | None):
    """The first ``n`` training images; validation and test stay whole so numbers remain comparable."""
    return data if n is None else replace(data, x_train=data.x_train[:n], y_train=data.y_train[:n])


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


def jobs(config: StudyConfig) -> list[tuple[str, list[int]]]:
    """The study's units of work: each preset's seeds in groups of ``program_width`` (one compiled program each)."""
    groups = seed_groups(config.seed_list, config.program_width)
    return [(preset, group) for preset in config.presets for group in groups]


def build_model(preset: str, config: StudyConfig):
    return build(preset) if preset == "baseline" else build(preset, momentum=config.bn_momentum,
                                                            epsilon=config.bn_epsilon)


def train_job(data, config: StudyConfig, preset: str, seeds: list[int], out: Path | None, resume: bool,
              on_epoch: Callable[[int, dict, float], None] | None = None, warn=print) -> SeedsResult:
    """Train one job; its checkpoints go where ``fit`` puts a group of seeds, so either path can resume it."""
    checkpointing = None
    if out is not None:
        directory = group_directory(Path(out) / "checkpoints" / preset, seeds, config.seed_list)
        checkpointing = Checkpointing(directory, config.identity(preset), resume, warn=warn)
    return fit(build_model(preset, config), data, seeds, config.train_config(), on_epoch, checkpointing,
               config.program_width)


def reproduce(data, config: StudyConfig = StudyConfig(), out: Path | None = None, resume: bool = False,
              on_epoch: Callable[[str, int, dict, float], None] | None = None, warn=print) -> dict:
    """Train each preset for ``config.seed_list`` and return ``{"provenance", "config", "runs"}``.

    With more than one worker (the default on a multi-core CPU) the jobs run in parallel processes, one per core.
    """
    data = subset(data, config.subset)
    todo = jobs(config)
    if config.worker_count > 1 and len(todo) > 1:
        from normlab.experiments import workers
        results = workers.run(todo, config, data, out, resume, on_epoch, warn)
    else:
        results = [train_job(data, config, preset, seeds, out, resume,
                             None if on_epoch is None else (lambda *args, p=preset: on_epoch(p, *args)), warn)
                   for preset, seeds in todo]
    runs = []
    for preset in config.presets:
        merged = merge([result for (name, _), result in zip(todo, results) if name == preset])
        runs += run_records(preset, param_counts(build_model(preset, config)), merged, config.program_width)
    return {"provenance": provenance(), "config": config.as_dict(), "runs": runs}
