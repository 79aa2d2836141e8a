"""Studies as TOML files: a base configuration and an optional sweep, mapped onto typed dataclasses.

    name = "lr-sweep"
    description = "..."
    [config]                      # any StudyConfig field; unknown keys are refused with a "did you mean"
    presets = ["baseline", "bn-after"]
    seeds = 3
    [sweep]                       # a grid: every combination of these values is one trial
    learning_rate = [0.001, 0.01, 0.1, 1.0]
    [sweep.random]                # optional: `samples` random trials on top of the grid
    samples = 4
    seed = 0
    learning_rate = { log_uniform = [1e-4, 1.0] }   # or uniform = [a, b], or choice = [...]
"""

import dataclasses
import itertools
import math
import random
import tomllib
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from normlab.errors import ConfigError, did_you_mean
from normlab.experiments.config import StudyConfig

FIELDS = {f.name: f for f in dataclasses.fields(StudyConfig)}
SAMPLERS = {
    "uniform": lambda rng, a, b: rng.uniform(a, b),
    "log_uniform": lambda rng, a, b: math.exp(rng.uniform(math.log(a), math.log(b))),
}


@dataclass(frozen=True)
class Sweep:
    grid: dict[str, list] = field(default_factory=dict)
    random: dict[str, dict] = field(default_factory=dict)
    samples: int = 0
    seed: int = 0


@dataclass(frozen=True)
class Study:
    name: str
    description: str
    base: StudyConfig
    sweep: Sweep
    source: str


def builtin_studies() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("normlab.studies").iterdir() if p.name.endswith(".toml"))


def _unknown(kind: str, key: str, known, where: str) -> ConfigError:
    return ConfigError(f"{where}: unknown {kind} {key!r}; {did_you_mean(key, known)}known: {', '.join(known)}")


def coerce(name: str, value, where: str):
    """Check one config value against its dataclass type; ints are accepted where floats are expected."""
    if name not in FIELDS:
        raise _unknown("config key", name, FIELDS, where)
    hint = FIELDS[name].type
    if name == "presets":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: presets must be a list of preset names, got {value!r}")
        return tuple(value)
    allowed = typing.get_args(hint) or (hint,)
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, tuple(t for t in allowed if t is not type(None))) or isinstance(value, bool):
        wanted = " or ".join(t.__name__ for t in allowed if t is not type(None))
        raise ConfigError(f"{where}: {name} must be {wanted}, got {value!r} ({type(value).__name__})")
    return value


def make_config(base: StudyConfig, overrides: dict, where: str) -> StudyConfig:
    values = {k: coerce(k, v, where) for k, v in overrides.items()}
    try:
        return dataclasses.replace(base, **values)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None


def parse(text: str, source: str) -> Study:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{source}: not valid TOML ({error})") from None
    for key in raw:
        if key not in ("name", "description", "config", "sweep"):
            raise _unknown("section", key, ("name", "description", "config", "sweep"), source)
    base = make_config(StudyConfig(), raw.get("config", {}), source)
    sweep_raw = dict(raw.get("sweep", {}))
    random_raw = dict(sweep_raw.pop("random", {}))
    grid = {}
    for name, values in sweep_raw.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{source}: sweep.{name} must be a non-empty list of values")
        grid[name] = [coerce(name, v, f"{source}: sweep.{name}") for v in values]
    samples, seed = random_raw.pop("samples", 0), random_raw.pop("seed", 0)
    for name, spec in random_raw.items():
        coerce(name, 1.0, f"{source}: sweep.random")  # the key must exist
        kind = next(iter(spec)) if isinstance(spec, dict) and len(spec) == 1 else None
        if kind not in (*SAMPLERS, "choice"):
            raise ConfigError(f"{source}: sweep.random.{name} must be one of "
                              f"{{ uniform = [a, b] }}, {{ log_uniform = [a, b] }}, {{ choice = [...] }}")
    for trial in expand(Sweep(grid, random_raw, samples, seed)):
        make_config(base, trial, source)  # every trial must be valid before any work starts
    return Study(raw.get("name", Path(source).stem), raw.get("description", ""), base,
                 Sweep(grid, random_raw, samples, seed), text)


def load(name_or_path: str | Path) -> Study:
    """A study file, or the name of a built-in study (``normlab run lr-sweep``)."""
    path = Path(name_or_path)
    if path.is_file():
        return parse(path.read_text(), str(path))
    if str(name_or_path) in builtin_studies():
        return parse(resources.files("normlab.studies").joinpath(f"{name_or_path}.toml").read_text(),
                     f"{name_or_path}.toml")
    raise ConfigError(f"no study file {str(name_or_path)!r}; {did_you_mean(str(name_or_path), builtin_studies())}"
                      f"built-in: {', '.join(builtin_studies())}")


def expand(sweep: Sweep) -> list[dict]:
    """The trials: the grid's cartesian product (one empty trial without a grid), then the random samples."""
    keys = list(sweep.grid)
    trials = [dict(zip(keys, combo)) for combo in itertools.product(*sweep.grid.values())]
    if not keys and not sweep.samples:
        trials = [{}]  # no sweep: the base configuration is the one trial
    rng = random.Random(sweep.seed)
    for _ in range(sweep.samples):
        trials.append({name: rng.choice(args) if kind == "choice" else SAMPLERS[kind](rng, *args)
                       for name, spec in sweep.random.items() for kind, args in spec.items()})
    return trials


def trial_id(index: int, overrides: dict) -> str:
    """A readable, file-system-safe folder name, e.g. ``002-learning_rate=0.1``."""
    parts = [f"{k}={','.join(v) if isinstance(v, tuple) else f'{v:.4g}' if isinstance(v, float) else v}"
             for k, v in overrides.items()]
    return "-".join([f"{index:03d}", *parts]).replace("/", "_")
