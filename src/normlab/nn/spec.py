"""Model specs: a model is a list of layer tables, ``[{kind = "dense", units = 300, activation = "relu"}, ...]``.

``check`` turns whatever a TOML file (or a JSON job, or Python) holds into a spec of plain values with every
option filled in, or one ConfigError line: unknown kinds and keys get a "did you mean", values their allowed
range. Option names and defaults are Keras' (``units``, ``use_bias``, ``momentum``, ...), read from the layer
builders' signatures, so a layer kind states them once.
"""

import inspect
import typing

from normlab.errors import ConfigError, did_you_mean, shown
from normlab.layer import Layer, Option
from normlab.nn import residual
from normlab.nn.registry import KINDS

MAX_LAYERS = 100  # per list: a model's, a block's branch or shortcut
MAX_NODES = 2000  # layers in all, blocks unrolled: a ResNet-110 has 334
MAX_DEPTH = 8  # blocks within blocks


def options(kind: str) -> dict[str, tuple[Option, object]]:
    """``name -> (check, default)`` for every option of ``kind``: the builder's parameters typed ``Annotated``."""
    found = {}
    for name, parameter in inspect.signature(KINDS[kind].build).parameters.items():
        hints = typing.get_args(parameter.annotation)
        if len(hints) == 2 and isinstance(hints[1], Option):
            found[name] = (hints[1], parameter.default)
    return found


def _is_float(kind: str, name: str) -> bool:
    return typing.get_args(inspect.signature(KINDS[kind].build).parameters[name].annotation)[0] is float


def check_layer(table, where: str, defaults: dict | None = None, depth: int = 0) -> dict:
    """One layer table as ``{"kind": ..., option: value, ...}`` with every option present, defaults filled in.

    ``defaults`` (kind -> options) come between the builder's defaults and the table's own values: the study-wide
    ``bn_momentum``/``bn_epsilon`` for a ``batch_norm`` that does not set its own. A kind with conventions
    (``CONVENTIONS`` beside its builder, e.g. batch norm's Keras and PyTorch) takes them in its default
    convention only, and an option left unset takes the convention's value. A block (``nn.residual``) is checked
    with its lists, ``depth`` blocks deep.
    """
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table like {{kind = \"dense\", units = 100}}, got {shown(table)}")
    kind = table.get("kind")
    if kind == residual.KIND:
        if depth >= MAX_DEPTH:
            raise ConfigError(f"{where}: blocks nest at most {MAX_DEPTH} deep")
        return residual.check(table, where, lambda tables, at, allow_empty: _check_list(
            tables, at, defaults, depth + 1, allow_empty))
    known_kinds = [*KINDS, residual.KIND]
    if not isinstance(kind, str) or kind not in KINDS:
        raise ConfigError(f"{where}: unknown layer kind {shown(kind)}; "
                          f"{did_you_mean(kind, known_kinds) if isinstance(kind, str) else ''}known: "
                          f"{', '.join(known_kinds)}")
    known = options(kind)
    spec = {"kind": kind, **{name: default for name, (_, default) in known.items()}}
    for name, value in table.items():
        if name == "kind":
            continue
        if name not in known:
            listed = f"{kind} takes {', '.join(known)}" if known else f"{kind} takes no options"
            raise ConfigError(f"{where} ({kind}): unknown option {shown(name)}; "
                              f"{did_you_mean(str(name), known)}{listed}")
        option = known[name][0]
        if not option.accepts(value):
            raise ConfigError(f"{where} ({kind}): {name} must be {option.expected}, got {shown(value)}")
        spec[name] = float(value) if _is_float(kind, name) and type(value) is int else value
    study_wide = (defaults or {}).get(kind, {})
    conventions = KINDS[kind].conventions
    if conventions is not None:
        if spec["convention"] != known["convention"][1]:
            study_wide = {}
        study_wide = conventions[spec["convention"]] | study_wide
    spec |= {name: value for name, value in study_wide.items() if name not in table}
    if missing := [name for name, value in spec.items() if value is inspect.Parameter.empty]:
        raise ConfigError(f"{where} ({kind}): needs {', '.join(missing)}")
    if build_layer(spec).merges:
        raise ConfigError(f"{where}: {kind} joins a block's branches; write the block as {residual.EXAMPLE}")
    return spec


def _check_list(layers, where: str, defaults: dict | None, depth: int, allow_empty: bool = False) -> list[dict]:
    fewest = 0 if allow_empty else 1
    if not isinstance(layers, (list, tuple)) or not fewest <= len(layers) <= MAX_LAYERS:
        raise ConfigError(f"{where}: layers must be a list of {fewest} to {MAX_LAYERS} layer tables, got "
                          f"{shown(layers)}")
    return [check_layer(table, f"{where} layer {i + 1}", defaults, depth) for i, table in enumerate(layers)]


def leaves(spec) -> int:
    """The layers a spec's lists hold, blocks unrolled (a block adds its merge and activation)."""
    return sum(leaves(table["layers"]) + leaves(table["shortcut"]) + 2 if table["kind"] == residual.KIND else 1
               for table in spec)


def _tables(layers, depth: int = 0, budget: int = MAX_NODES + 1) -> int:
    """The tables ``layers`` holds, blocks' included, counted up to ``budget`` only: lists a Python caller repeats
    (``[block] * 100``, 8 deep) are refused before any is checked, not after 100**8 checks."""
    count = 0
    for table in layers if isinstance(layers, (list, tuple)) else ():
        count += 1
        if isinstance(table, dict) and table.get("kind") == residual.KIND and depth < MAX_DEPTH:
            for part in ("layers", "shortcut"):
                count += _tables(table.get(part), depth + 1, budget - count)
        if count >= budget:
            break
    return count


def check_size(layers, where: str) -> None:
    if _tables(layers) > MAX_NODES:
        raise ConfigError(f"{where}: more than {MAX_NODES:,} layers (blocks unrolled)")


def check(layers, where: str, defaults: dict | None = None) -> tuple[dict, ...]:
    check_size(layers, where)
    spec = tuple(_check_list(layers, where, defaults, 0))
    if (count := leaves(spec)) > MAX_NODES:
        raise ConfigError(f"{where}: {count:,} layers (blocks unrolled), more than {MAX_NODES:,}")
    return spec


def build_layer(spec: dict) -> Layer:
    return KINDS[spec["kind"]].build(**{k: v for k, v in spec.items() if k != "kind"})
