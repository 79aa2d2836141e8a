"""Fuzzing study files and StudyConfig: whatever the input, a valid study or one ConfigError, nothing else."""

import dataclasses
import functools
import json
import math
import os
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from normlab.errors import ConfigError
from normlab.experiments import study as studies
from normlab.experiments.config import FLOAT32_MAX, FLOATS, INTS, StudyConfig
from normlab.nn.models import presets
from normlab.nn.registry import KINDS
from normlab.nn.spec import options
from normlab.train.loop import OPTIMIZERS

FUZZ_EXAMPLES = int(os.environ.get("NORMLAB_FUZZ_EXAMPLES", "1000"))
FIELDS = studies.FIELDS


def mostly(usual, other):
    """``usual`` four times in five, else ``other``: documents mostly well-formed, so the checks are reached deep."""
    return st.integers(0, 4).flatmap(lambda i: usual if i else other)


HOSTILE_KEYS = st.sampled_from([*studies.SECTIONS, "random", "samples", "seed", "uniform", "choice", "learning_rat", ""]
                               ) | st.text(max_size=6)
KEYS = mostly(st.sampled_from(FIELDS), HOSTILE_KEYS)
EDGES = [0, 1, 2, 3, 16, -1, 999, 1000, 1001, 1024, 1025, 55_000, 55_001, 100_000, 2**32 - 1, 2**32, 2**63 - 1,
         -2**63, 0.0, -0.0, 1e-3, 0.1, 0.5, 0.9, 0.99, 1.0, 1e-50, 1e-45, 1e39, FLOAT32_MAX, 1.7e308, math.inf,
         -math.inf, math.nan, "baseline", "bn-after", "bn-before", "sgd", "momentum", "adam", "../../etc", ".x", "a b"]
SCALARS = mostly(st.sampled_from(EDGES), st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats()
                 | st.text(max_size=12))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=3),
                      max_leaves=12)
LISTS = mostly(st.lists(SCALARS, min_size=1, max_size=4), VALUES)
PLAUSIBLE = {  # values in and at the edges of each field's range, so that many documents get past the checks
    **{name: mostly(st.integers(low, low + 9), st.sampled_from([low - 1, high, high + 1]))
       for name, (low, high, _) in INTS.items()},
    "learning_rate": st.floats(1e-6, 10.0), "bn_epsilon": st.floats(1e-9, 1.0),
    "bn_momentum": st.floats(0.0, 0.9999), "optimizer_momentum": st.floats(0.0, 0.9999),
    "presets": st.lists(st.sampled_from([*presets(), "m", "wide-bn"]), min_size=1, max_size=3, unique=True)
    | st.sampled_from([*presets(), "m"]),
    "optimizer": st.sampled_from(sorted(OPTIMIZERS)),
    "shuffle": st.booleans(), "bn_sync": st.booleans(),
    "normalize": st.sampled_from(["none", "per_channel", "per-channel"]),
    "augment": st.lists(st.sampled_from(["crop4", "flip", "crop"]), max_size=3),
    "init_from": st.sampled_from(["model.keras", "runs/x/export/bn-after-seed0.safetensors", ""]),
    "data": st.sampled_from(["fashion-mnist", "mnist", "cifar10", "cifar-10", "", "missing.npz", "a/b"]),
}


def table(value_of, max_size: int, min_size: int = 0):
    """Mostly a table of real field names, each value drawn by ``value_of(name)``; else anything. The strategy of
    each set of names is built once (``functools.cache``), not at every draw."""
    value_of = functools.cache(value_of)
    fields_of = functools.cache(lambda keys: st.fixed_dictionaries({key: value_of(key) for key in keys}))
    fields = st.lists(st.sampled_from(FIELDS), unique=True, min_size=min_size, max_size=max_size).flatmap(
        lambda keys: fields_of(tuple(keys)))
    return mostly(fields, st.dictionaries(KEYS, VALUES, max_size=2) | VALUES)


def spec(name: str):
    pair = st.lists(PLAUSIBLE[name], min_size=2, max_size=2).map(sorted if name in FLOATS else list)
    usual = st.sampled_from(["uniform", "log_uniform", "choice"]).flatmap(
        lambda kind: st.fixed_dictionaries({kind: mostly(st.lists(PLAUSIBLE[name], min_size=1, max_size=3), LISTS)
                                            if kind == "choice" else mostly(pair, LISTS)}))
    return mostly(usual, st.dictionaries(HOSTILE_KEYS | st.sampled_from(["uniform", "choice"]), VALUES, max_size=2)
                  | VALUES)


RANDOM = st.builds(lambda head, keys: {**head, **keys} if isinstance(keys, dict) else keys,
                   st.fixed_dictionaries({"samples": mostly(st.integers(1, 6), SCALARS)},
                                         optional={"seed": mostly(st.integers(), VALUES)}),
                   table(spec, 2, min_size=1))
SWEEP = st.builds(lambda grid, random: {**grid, **random} if isinstance(grid, dict) else grid,
                  table(lambda name: mostly(st.lists(PLAUSIBLE[name], min_size=1, max_size=3), LISTS), 2),
                  st.fixed_dictionaries({}, optional={"random": RANDOM}))
OPTION_VALUES = st.sampled_from([1, 10, 300, 0, -1, 2**20, 2**20 + 1, 0.5, 0.99, 1.0, 1e-3, 0.0, math.inf, math.nan,
                                 True, False, "relu", "softmax", "he_normal", "linear", "x", 3.4e38, 1e39])
LAYER = mostly(st.sampled_from(sorted(KINDS)).flatmap(functools.cache(lambda kind: st.fixed_dictionaries(
    {"kind": st.just(kind)}, optional={name: mostly(OPTION_VALUES, VALUES) for name in options(kind)}))),
    st.dictionaries(st.sampled_from(["kind", "units", "unit"]) | HOSTILE_KEYS, VALUES, max_size=3))
LAYERS = mostly(st.lists(LAYER, max_size=5).map(  # mostly shaped like a classifier, so the shape checks are reached
    lambda body: [{"kind": "flatten"}, *body, {"kind": "dense", "units": 10, "activation": "softmax"}]), VALUES)
MODELS = mostly(st.dictionaries(st.sampled_from(["m", "wide-bn", "baseline", "../x", "", ".m"]) | st.text(max_size=4),
                                mostly(st.fixed_dictionaries({"layers": LAYERS}), VALUES), max_size=2), VALUES)
STUDY = mostly(st.fixed_dictionaries({}, optional={
    "models": MODELS,
    "name": mostly(st.from_regex(studies.NAME, fullmatch=True), SCALARS),
    "description": mostly(st.text(max_size=20), VALUES),
    "config": table(lambda name: mostly(PLAUSIBLE[name], VALUES), 3),
    "sweep": SWEEP,
}), st.dictionaries(KEYS | HOSTILE_KEYS, VALUES, max_size=3))
TOMLISH = st.text(alphabet='[]{}=,."\'#\n\t -+_.0123456789eEinfatrulsbdmp', max_size=200)
EXAMPLE = ('name = "x"\n[config]\npresets = ["bn-after"]\nseeds = 2\n[sweep]\nbatch_size = [16, 32]\n'
           '[sweep.random]\nsamples = 3\nlearning_rate = { log_uniform = [1e-4, 1.0] }\n')
SPLICED = st.builds(lambda text, at, cut, insert: text[:at] + insert + text[at + cut:],
                    st.sampled_from([EXAMPLE, *(studies.builtin(name).source for name in studies.builtin_studies())]),
                    st.integers(0, 700), st.integers(0, 8), TOMLISH.map(lambda t: t[:12]))


def toml(value) -> str:
    """A TOML value: every table inline, so one function writes any document (tomli_w is not installed)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # as TOML writes floats, inf, -inf and nan too
    if isinstance(value, (int, str)):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return f"[{', '.join(map(toml, value))}]"
    return f"{{{', '.join(f'{toml(k)} = {toml(v)}' for k, v in value.items())}}}"


def document(fields: dict) -> str:
    return "".join(f"{toml(k)} = {toml(v)}\n" for k, v in fields.items())


def parses_or_refuses(text: str) -> None:
    try:
        study = studies.parse(text, "fuzz.toml")
    except ConfigError as error:
        message = str(error)
        assert message.startswith("fuzz.toml") and "\n" not in message and len(message) < 400, message
        return
    assert studies.NAME.fullmatch(study.name) and isinstance(study.description, str)
    ids = []
    for index, overrides in enumerate(studies.expand(study.sweep)):
        config = studies.make_config(study.base, overrides, "fuzz")
        assert StudyConfig(**dataclasses.asdict(config)) == config  # valid, and already normalized
        ids.append(studies.trial_id(index, overrides))
    assert len(set(ids)) == len(ids) and all(len(tid) <= studies.MAX_TRIAL_ID for tid in ids)


@pytest.mark.fuzz
@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(fields=STUDY)
def test_fuzz_structured_study_files(fields):
    parses_or_refuses(document(fields))


@pytest.mark.fuzz
@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(text=st.one_of(st.text(max_size=200), TOMLISH, SPLICED))
def test_fuzz_raw_study_text(text):
    parses_or_refuses(text)


HOSTILE = (VALUES | st.integers() | st.none() | st.sampled_from([10**5000, -10**400, Fraction(1, 3), 1j, object()])
           | st.builds(np.int64, st.integers(-2**63, 2**63 - 1)) | st.builds(np.float32, st.floats(width=32))
           | st.builds(np.float64, st.floats()) | st.builds(np.bool_, st.booleans())
           | st.lists(st.sampled_from(["baseline", "bn-after", "bn-before"]), max_size=4).map(tuple))


@pytest.mark.fuzz
@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(fields=st.dictionaries(st.sampled_from(FIELDS), HOSTILE, max_size=6))
def test_fuzz_study_config_fields(fields):
    try:
        config = StudyConfig(**fields)
    except ConfigError as error:
        assert "\n" not in str(error) and len(str(error)) < 400, str(error)
        return
    for name, (low, high, _) in INTS.items():
        value = getattr(config, name)
        assert value is None or (type(value) is int and low <= value <= high)
    for name in FLOATS:
        value = getattr(config, name)
        assert type(value) is float and math.isfinite(float(np.float32(value)))
    assert 0 < config.learning_rate and 0 < config.bn_epsilon and config.first_seed + config.seeds <= 2**32
    assert type(config.presets) is tuple and len(set(config.presets)) == len(config.presets) >= 1
