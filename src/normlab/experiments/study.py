"""Studies as TOML files: a base configuration and an optional sweep, mapped onto typed dataclasses.

    name = "lr-sweep"
    description = "..."
    [models.wide-bn]              # optional: models of the study's own, used by name in presets
    layers = [{kind = "flatten"}, {kind = "batch_norm"}, {kind = "dense", units = 10, activation = "softmax"}]
    [config]                      # any StudyConfig field; unknown keys are refused with a "did you mean"
    presets = ["baseline", "bn-after"]
    seeds = 3
    [sweep]                       # a grid: every combination of these values is one trial
    learning_rate = [0.001, 0.01, 0.1, 1.0]
    [sweep.random]                # optional: `samples` random trials on top of the grid
    samples = 4
    seed = 0
    learning_rate = { log_uniform = [1e-4, 1.0] }   # or uniform = [a, b], or choice = [...]

Every value is checked (``config.check``) and every trial's configuration built before any work starts, so a
bad file is one ConfigError naming the file and key, never a traceback or a crash hours into a sweep.
"""

import dataclasses
import itertools
import math
import random
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from normlab.diagnose.config import DiagnoseConfig, with_options
from normlab.errors import ConfigError, did_you_mean, shown
from normlab.experiments.config import FLOATS, StudyConfig, check, check_models
from normlab.files import MAX_DEPTH, MiB, FileProblem, display, nested_deeper, read_text

FIELDS = [f.name for f in dataclasses.fields(StudyConfig) if f.name != "models"]  # models: their own section
SAMPLERS = {
    "uniform": lambda rng, a, b: rng.uniform(a, b),
    "log_uniform": lambda rng, a, b: math.exp(rng.uniform(math.log(a), math.log(b))),
}
SECTIONS = ("name", "description", "models", "config", "sweep", "diagnose")
NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")  # the default --out is runs/<name>: a folder, never a path
MAX_VALUES = 1000     # values of one swept key
MAX_TRIALS = 10_000   # combinations of the grid, and random samples: each trial is a training run
MAX_TRIAL_ID = 200    # characters of a trial's folder name; file systems allow 255 bytes


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
    diagnose: DiagnoseConfig = DiagnoseConfig()  # what `normlab diagnose --study` compares and measures


def builtin_studies() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("normlab.studies").iterdir() if p.name.endswith(".toml"))


ONE_DATASET = ("data", "val_split")  # the sweep's worker pool holds one dataset's arrays for every trial


def _unknown(kind: str, key: str, known, where: str) -> ConfigError:
    return ConfigError(f"{where}: unknown {kind} {shown(key)}; {did_you_mean(key, known)}known: {', '.join(known)}")


def _known(name: str, where: str) -> None:
    if name not in FIELDS:
        raise _unknown("config key", name, FIELDS, where)


def coerce(name: str, value, where: str):
    """One config value checked (``config.check``) and typed; in a file, one preset name means a list of one."""
    _known(name, where)
    try:
        return check(name, [value] if name == "presets" and isinstance(value, str) else value)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None


def make_config(base: StudyConfig, overrides: dict, where: str) -> StudyConfig:
    values = {k: coerce(k, v, where) for k, v in overrides.items()}
    try:
        return dataclasses.replace(base, **values)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None


def _table(raw: dict, key: str, where: str) -> dict:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {key} must be a table ([{key}]), got {shown(value)}")
    return value


def _values(name: str, values, where: str) -> list:
    """The values of a swept key, each checked on its own so that an error names the key, not a trial."""
    if not isinstance(values, list) or not 1 <= len(values) <= MAX_VALUES:
        raise ConfigError(f"{where} must be a non-empty list of at most {MAX_VALUES} values, got {shown(values)}")
    return [coerce(name, value, where) for value in values]


def _sampler(name: str, spec, where: str) -> dict:
    """One ``[sweep.random]`` entry; both ends of a range are valid values, so every draw between them is."""
    kind = next(iter(spec)) if isinstance(spec, dict) and len(spec) == 1 else None
    if kind not in (*SAMPLERS, "choice"):
        raise ConfigError(f"{where} must be one of {{ uniform = [a, b] }}, {{ log_uniform = [a, b] }}, "
                          f"{{ choice = [...] }}, got {shown(spec)}")
    args = spec[kind]
    if kind == "choice":
        return {kind: _values(name, args, f"{where}.choice")}
    if name not in FLOATS:
        raise ConfigError(f"{where}: {kind} draws real numbers but {name} is not one; use {{ choice = [...] }}")
    low = 0 if kind == "log_uniform" else -math.inf
    if (not isinstance(args, list) or len(args) != 2 or not all(type(a) in (int, float) for a in args)
            or not low < args[0] <= args[1] < math.inf):
        raise ConfigError(f"{where}.{kind} must be [a, b], two finite numbers with {'0 < ' * (low == 0)}a <= b, "
                          f"got {shown(args)}")
    return {kind: [coerce(name, a, f"{where}.{kind}") for a in args]}


def _name(raw: dict, source: str) -> str:
    name = raw.get("name", Path(source).stem)
    if not isinstance(name, str) or not NAME.fullmatch(name):
        origin = "" if "name" in raw else ' (taken from the file name; set name = "...")'
        raise ConfigError(f"{source}: name must be a folder name of at most 100 letters, digits, '.', '_', '-', "
                          f"not starting with '.', got {shown(name)}{origin}")
    return name


def _sweep(table: dict, source: str) -> Sweep:
    """``[sweep]`` (the grid) and ``[sweep.random]``, every value checked and the trial count bounded."""
    grid_raw = dict(table)
    random_raw = dict(_table(grid_raw, "random", f"{source} [sweep]"))
    grid_raw.pop("random", None)
    where = f"{source} [sweep.random]"
    samples, seed = random_raw.pop("samples", 0), random_raw.pop("seed", 0)
    for key in grid_raw:
        _known(key, f"{source} [sweep]")
    for key in random_raw:
        _known(key, where)
    for key in (*grid_raw, *random_raw):
        if key in ONE_DATASET:
            raise ConfigError(f"{source}: [sweep] cannot vary {key}: a sweep's trials share one dataset and split; "
                              f"set it in [config], and run one study per dataset")
    grid = {key: _values(key, values, f"{source}: sweep.{key}") for key, values in grid_raw.items()}
    combinations = math.prod(map(len, grid.values()))
    if combinations > MAX_TRIALS:
        raise ConfigError(f"{source}: the sweep grid has {combinations:,} combinations, more than {MAX_TRIALS:,}")
    if isinstance(samples, bool) or not isinstance(samples, int) or not 0 <= samples <= MAX_TRIALS:
        raise ConfigError(f"{where}: samples must be an int in 0..{MAX_TRIALS}, got {shown(samples)}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"{where}: seed must be an int, got {shown(seed)}")
    if bool(samples) != bool(random_raw):  # either would silently do nothing, or the same trial many times
        raise ConfigError(f"{where}: samples = {samples} with {len(random_raw)} key(s) to sample; "
                          f"random trials need both")
    return Sweep(grid, {key: _sampler(key, spec, f"{source}: sweep.random.{key}") for key, spec in random_raw.items()},
                 samples, seed)


def parse(text: str, source: str) -> Study:
    """A study from the text of a study file; anything malformed or out of range is one ConfigError naming it."""
    try:
        text.encode("utf-8")  # the text is saved with the study's runs
        raw = tomllib.loads(text)
    except UnicodeEncodeError as error:
        raise ConfigError(f"{source}: not UTF-8 text (character {error.start})") from None
    except RecursionError:
        raise ConfigError(f"{source}: not valid TOML (too deeply nested)") from None
    except ValueError as error:  # a TOMLDecodeError, or an integer of more than 4,300 digits
        raise ConfigError(f"{source}: not valid TOML ({error})") from None
    if nested_deeper(raw, MAX_DEPTH):  # as every JSON normlab reads (files.parse_json)
        raise ConfigError(f"{source}: nested more than {MAX_DEPTH} levels deep")
    for key in raw:
        if key not in SECTIONS:
            raise _unknown("section", key, SECTIONS, source)
    name, description = _name(raw, source), raw.get("description", "")
    if not isinstance(description, str):
        raise ConfigError(f"{source}: description must be a string, got {shown(description)}")
    models = check_models(_table(raw, "models", source), f"{source} ")
    base = make_config(StudyConfig(models=models), _table(raw, "config", source), f"{source} [config]")
    sweep = _sweep(_table(raw, "sweep", source), source)
    for index, trial in enumerate(expand(sweep)):  # every trial must be valid before any work starts
        make_config(base, trial, f"{source}: trial {trial_id(index, trial)}")
    diagnose = with_options(DiagnoseConfig(), _table(raw, "diagnose", source), f"{source} [diagnose]")
    for preset in diagnose.presets:
        try:
            base.model(preset)
        except ConfigError as error:
            raise ConfigError(f"{source} [diagnose]: {error}") from None
    return Study(name, description, base, sweep, text, diagnose)


def builtin(name: str) -> Study:
    """A study shipped with normlab (``normlab run lr-sweep``; ``seed`` is what ``reproduce`` runs), never a file."""
    if name not in builtin_studies():
        raise ConfigError(f"no built-in study {shown(name)}; {did_you_mean(str(name), builtin_studies())}"
                          f"built-in: {', '.join(builtin_studies())}; a study file is a path: ./NAME or NAME.toml")
    return parse(resources.files("normlab.studies").joinpath(f"{name}.toml").read_text(encoding="utf-8"),
                 f"{name}.toml")


def load(name_or_path: str | Path) -> Study:
    """A study file if the argument looks like a path (has a "/" or ends in ".toml"), else a built-in study.

    Never both: a file that happens to be called ``seed`` in the working directory cannot replace a built-in.
    """
    text = str(name_or_path)
    if "/" not in text and not text.endswith(".toml"):
        return builtin(text)
    try:
        return parse(read_text(text, MiB), display(text))
    except FileProblem as problem:
        raise ConfigError(f"study file {problem}") from None


def expand(sweep: Sweep) -> list[dict]:
    """The trials: the grid's cartesian product (one empty trial without a grid), then the random samples."""
    keys = list(sweep.grid)
    trials = [dict(zip(keys, combo)) for combo in itertools.product(*sweep.grid.values())]
    rng = random.Random(sweep.seed)
    for _ in range(sweep.samples):
        trials.append({name: _draw(rng, kind, args) for name, spec in sweep.random.items()
                       for kind, args in spec.items()})
    return trials


def _draw(rng: random.Random, kind: str, args: list):
    if kind == "choice":
        return rng.choice(args)
    low, high = args
    return min(max(SAMPLERS[kind](rng, low, high), low), high)  # rounding may step just outside [low, high]


def setting(overrides: dict) -> dict:
    """A trial's overrides as results.json records them: scalars only, so a swept list of presets is one text."""
    return {k: ",".join(v) if isinstance(v, tuple) else v for k, v in overrides.items()}


def trial_id(index: int, overrides: dict) -> str:
    """A readable, file-system-safe folder name, e.g. ``002-learning_rate=0.1``; the index keeps it unique when
    a trial that sweeps many keys is cut to ``MAX_TRIAL_ID`` characters."""
    parts = [f"{k}={f'{v:.4g}' if isinstance(v, float) else v}" for k, v in setting(overrides).items()]
    return "-".join([f"{index:03d}", *parts]).replace("/", "_")[:MAX_TRIAL_ID]
