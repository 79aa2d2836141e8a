"""The study: every preset trained for several seeds, gathered into one results dict (the ``results.json`` schema).

Each preset's seeds train through one compiled program, vmapped ``program_width`` seeds at a time (see
``train.loop``), checkpointed after every epoch under ``OUT/checkpoints/PRESET`` so an interrupted study
resumes where it stopped.
"""

from dataclasses import replace
from pathlib import Path
from typing import Callable

from normlab.experiments.config import StudyConfig
from normlab.experiments.provenance import provenance
from normlab.nn.models import build
from normlab.nn.summary import param_counts
from normlab.train.loop import Checkpointing, SeedsResult, fit


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


def reproduce(data, config: StudyConfig = StudyConfig(), out: Path | None = None, resume: bool = False,
              on_epoch: Callable[[str, int, dict, float], None] | None = None, warn=print) -> dict:
    """Train each preset for ``config.seed_list`` and return ``{"provenance", "config", "runs"}``."""
    data = subset(data, config.subset)
    runs = []
    for preset in config.presets:
        model = build(preset) if preset == "baseline" else build(preset, momentum=config.bn_momentum,
                                                                  epsilon=config.bn_epsilon)
        callback = None if on_epoch is None else (lambda *args, p=preset: on_epoch(p, *args))
        checkpointing = None if out is None else Checkpointing(Path(out) / "checkpoints" / preset,
                                                               config.identity(preset), resume, warn=warn)
        result = fit(model, data, config.seed_list, config.train_config(), callback, checkpointing,
                     config.program_width)
        runs += run_records(preset, param_counts(model), result, config.program_width)
    return {"provenance": provenance(), "config": config.as_dict(), "runs": runs}

