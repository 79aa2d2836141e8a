"""The typed configuration of a study, checked before any work starts."""

import dataclasses
import math
import numbers
import reprlib
import typing
from dataclasses import dataclass

import numpy as np

from normlab.errors import ConfigError
from normlab.nn.models import PRESETS, check_preset
from normlab.train.loop import OPTIMIZERS, TrainConfig, default_seeds_per_program

DEFAULT_PRESETS = ("baseline", "bn-after", "bn-before")
FLOAT32_MAX = float(np.finfo(np.float32).max)  # training runs in float32: a larger value would become inf
TRAIN_IMAGES = 55_000  # the training split; a batch or subset larger than it is a typo, not a study
MAX_SEEDS = 1000  # an accelerator trains all seeds in one program: 1,000 MLPs are ~1 GB of float32 weights alone
SEED_LIMIT = 2**32  # seeds become uint32 PRNG seeds

INTS = {  # inclusive ranges; the upper bounds keep memory and time bounded whatever a file or option says
    "seeds": (1, MAX_SEEDS, ""),
    "first_seed": (0, SEED_LIMIT - 1, " (seeds are uint32)"),
    "epochs": (1, 100_000, ""),
    "batch_size": (1, TRAIN_IMAGES, " (the training set's size)"),
    "subset": (1, TRAIN_IMAGES, " (the training set's size)"),
    "seeds_per_program": (1, MAX_SEEDS, ""),  # more than ``seeds`` means all of them (``program_width``)
    "workers": (1, 1024, ""),
}
_POSITIVE = (f"(0, {FLOAT32_MAX!r}]", lambda x: x > 0)
_FRACTION = ("[0, 1)", lambda x: 0 <= x < 1)
FLOATS = {"learning_rate": _POSITIVE, "bn_momentum": _FRACTION, "bn_epsilon": _POSITIVE,
          "optimizer_momentum": _FRACTION}


class _Short(reprlib.Repr):
    """``repr`` within reprlib's limits, ints included: ``repr`` itself refuses one of more than 4,300 digits."""

    def repr_int(self, x, level):
        return super().repr_int(x, level) if x.bit_length() < 1000 else f"<an int of {x.bit_length()} bits>"


def shown(value) -> str:
    """A value as an error message quotes it: one short line, whatever its size or depth."""
    text = _Short().repr(value)
    return text if len(text) <= 80 else f"{text[:76]}..."


def _real(value) -> float | None:
    """``value`` as a float if it is a real number (a bool is not), else None; too large for a float is inf."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    try:
        return float(value)
    except OverflowError:
        return math.inf


def check(name: str, value):
    """``value`` as field ``name`` of a StudyConfig holds it (ints become floats where floats belong, a list of
    presets a tuple), or a one-line ConfigError with the allowed range.

    The one place a value is validated, whether it comes from a study file, a command-line option or Python.
    """
    if name == "presets":
        names = tuple(value) if isinstance(value, (tuple, list)) else ()
        if not names or not all(isinstance(n, str) for n in names) or len(set(names)) < len(names):
            raise ConfigError(f"presets must be a non-empty list of distinct preset names "
                              f"({', '.join(PRESETS)}), got {shown(value)}")
        return tuple(check_preset(n) for n in names)
    if name == "optimizer":
        if not isinstance(value, str) or value not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {shown(value)}")
        return value
    if name in FLOATS:
        interval, test = FLOATS[name]
        x = _real(value)
        if x is None or not math.isfinite(x) or abs(x) > FLOAT32_MAX or not test(float(np.float32(x))):
            raise ConfigError(f"{name} must be a number in {interval} as float32, got {shown(value)}")
        return x
    low, high, note = INTS[name]
    if value is None and name in OPTIONAL:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= value <= high:
        unset = "unset or " if name in OPTIONAL else ""
        raise ConfigError(f"{name} must be {unset}an int in {low}..{high}{note}, got {shown(value)}")
    return int(value)


@dataclass(frozen=True)
class StudyConfig:
    presets: tuple[str, ...] = DEFAULT_PRESETS
    seeds: int = 5               # seeds first_seed, first_seed + 1, ...
    first_seed: int = 0
    epochs: int = 10
    learning_rate: float = 1e-3
    batch_size: int = 32
    bn_momentum: float = 0.99
    bn_epsilon: float = 1e-3
    subset: int | None = None    # train on the first N of the 55,000 training images (quick looks, tests)
    optimizer: str = "sgd"       # sgd | momentum | adam
    optimizer_momentum: float = 0.9
    seeds_per_program: int | None = None  # vmap width; None: measured default (1 on CPU, all on accelerators)
    workers: int | None = None   # training processes; None: measured default (one per core on CPU, else 1)

    def __post_init__(self):
        for f in dataclasses.fields(self):  # normalized in place, so equal configs compare and serialize equal
            object.__setattr__(self, f.name, check(f.name, getattr(self, f.name)))
        last = self.first_seed + self.seeds - 1
        if last >= SEED_LIMIT:
            raise ConfigError(f"first_seed + seeds - 1 must be below 2**32 (seeds are uint32), got {last}")

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))

    @property
    def program_width(self) -> int:
        """Seeds per compiled program, resolved (see ``train.loop.default_seeds_per_program``)."""
        width = self.seeds_per_program if self.seeds_per_program is not None else default_seeds_per_program()
        return self.seeds if width <= 0 else min(width, self.seeds)

    @property
    def worker_count(self) -> int:
        """Training processes, resolved (see ``experiments.workers.default_workers``)."""
        from normlab.experiments.workers import default_workers
        return self.workers if self.workers is not None else default_workers()

    def train_config(self) -> TrainConfig:
        return TrainConfig(self.learning_rate, self.batch_size, self.epochs, self.optimizer, self.optimizer_momentum)

    def identity(self, preset: str) -> dict:
        """What a checkpoint of ``preset`` must match to be resumed: everything but the epoch count and workers."""
        fields = dataclasses.asdict(self)
        del fields["presets"], fields["epochs"], fields["workers"]
        return {"preset": preset, **fields}

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "presets": list(self.presets), "validation": "first 5,000 training images"}

    @classmethod
    def from_dict(cls, fields: dict) -> "StudyConfig":
        """The inverse of ``as_dict`` (how a worker process receives its study)."""
        if not isinstance(fields, dict):
            raise ConfigError(f"a study configuration must be a dict of fields, got {shown(fields)}")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in fields.items() if k in names})


OPTIONAL = {f.name for f in dataclasses.fields(StudyConfig) if type(None) in typing.get_args(f.type)}
