"""The study: every preset trained for several seeds, gathered into one results dict (the ``results.json`` schema).

Each preset's seeds train together as one vmapped program (see ``train.loop``).
"""

from typing import Callable

from normlab.experiments.provenance import provenance
from normlab.nn.models import build
from normlab.nn.summary import param_counts
from normlab.train.loop import SeedsResult, TrainConfig, fit

DEFAULT_PRESETS = ("baseline", "bn-after", "bn-before")


def run_records(preset: str, params: dict, result: SeedsResult) -> list[dict]:
    """One ``runs`` entry per seed; compile and train time are shared by the seeds trained together."""
    return [{
        "preset": preset,
        "seed": seed,
        "params": params,
        "history": {k: v[i].tolist() for k, v in result.history.items()},
        "test": {k: float(v[i]) for k, v in result.test.items()},
        "time": {"compile_s": result.compile_s, "train_s": result.train_s, "seeds_in_program": len(result.seeds)},
    } for i, seed in enumerate(result.seeds)]


def reproduce(data, presets=DEFAULT_PRESETS, seeds: int = 5, config: TrainConfig = TrainConfig(),
              on_epoch: Callable[[str, int, dict, float], None] | None = None, on_preset_done=None) -> dict:
    """Train each preset for seeds 0..seeds-1 and return ``{"provenance", "config", "runs"}``."""
    runs = []
    for preset in presets:
        model = build(preset)
        callback = None if on_epoch is None else (lambda *args, p=preset: on_epoch(p, *args))
        result = fit(model, data, list(range(seeds)), config, callback)
        runs += run_records(preset, param_counts(model), result)
        if on_preset_done is not None:
            on_preset_done(preset, result)
    return {
        "provenance": provenance(),
        "config": {"presets": list(presets), "seeds": seeds, "learning_rate": config.learning_rate,
                   "batch_size": config.batch_size, "epochs": config.epochs, "optimizer": "sgd",
                   "validation": "first 5,000 training images", "bn_momentum": 0.99, "bn_epsilon": 1e-3},
        "runs": runs,
    }
