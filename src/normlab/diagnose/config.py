"""What `normlab diagnose` compares and measures, typed and checked: a study's ``[diagnose]`` table (the seed
study's holds the defaults) with the command line's options on top. Training settings stay the study's
``[config]``; which of its models exist is checked against the study."""

import dataclasses
from dataclasses import dataclass

from normlab.errors import ConfigError, did_you_mean, shown
from normlab.experiments.defaults import diagnose_default
from normlab.layer import FLOAT32_MAX

MAX_ETAS = 64
# seeds: all of a preset's seeds are one program, and each holds its probes' copies of the model (a landscape is
# one per step size) and the validation set's activations: 100 is ~10 GB at the defaults, not a typo's 1,000.
# precise_batches: as many as the training set holds are used (``diagnose.run``), so the bound only stops typos.
LIMITS = {"seeds": 100, "every": 10_000_000, "unit": 1 << 20, "precise_batches": 1 << 26}


def _int(name: str, value) -> int:
    low = 0 if name == "unit" else 1
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= LIMITS[name]:
        raise ConfigError(f"{name} must be an int in {low}..{LIMITS[name]:,}, got {shown(value)}")
    return value


def _etas(value) -> tuple[float, ...]:
    good = isinstance(value, (list, tuple)) and 1 <= len(value) <= MAX_ETAS and all(
        type(v) in (int, float) and 0 < v <= FLOAT32_MAX  # NaN and inf fail it, a huge int compares exactly
        for v in value)
    if not good:
        raise ConfigError(f"etas must be a list of 1..{MAX_ETAS} step sizes, each a number > 0 within float32, "
                          f"got {shown(value)}")
    return tuple(sorted({float(v) for v in value}))


def _presets(value) -> tuple[str, ...]:
    names = (value,) if isinstance(value, str) else tuple(value) if isinstance(value, (list, tuple)) else ()
    if not names or not all(isinstance(n, str) for n in names) or len(set(names)) < len(names):
        raise ConfigError(f"presets must be a non-empty list of distinct model names, got {shown(value)}")
    return names


CHECKS = {"presets": _presets, "etas": _etas, **{name: (lambda v, n=name: _int(n, v)) for name in LIMITS}}


@dataclass(frozen=True)
class DiagnoseConfig:
    presets: tuple[str, ...] = tuple(diagnose_default("presets"))
    seeds: int = diagnose_default("seeds")
    every: int = diagnose_default("every")          # measure before global steps 0, every, 2 * every, ...
    etas: tuple[float, ...] = tuple(diagnose_default("etas"))
    unit: int = diagnose_default("unit")            # of the last hidden nonlinearity (Ioffe & Szegedy, Fig. 1)
    precise_batches: int = diagnose_default("precise_batches")

    def __post_init__(self):
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, CHECKS[f.name](getattr(self, f.name)))

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "presets": list(self.presets), "etas": list(self.etas)}


def with_options(config: DiagnoseConfig, overrides: dict, where: str) -> DiagnoseConfig:
    """``config`` with ``overrides`` (a ``[diagnose]`` table or options), an error prefixed with ``where``."""
    fields = [f.name for f in dataclasses.fields(DiagnoseConfig)]
    for key in overrides:
        if key not in fields:
            raise ConfigError(f"{where}: unknown diagnose key {shown(key)}; {did_you_mean(str(key), fields)}"
                              f"known: {', '.join(fields)}")
    try:
        return dataclasses.replace(config, **overrides)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
