"""diagnostics.json, what `normlab diagnose` writes and `normlab report` reads: its schema and its checks.

The file is user input: `load_diagnostics` checks every field the report reads, and bounds every list, so a bad
file is one ConfigError line, never a traceback or a figure too large to draw.
"""

from collections.abc import Iterator
from pathlib import Path

from normlab.errors import ConfigError, shown
from normlab.files import MiB, one_line
from normlab.report.results_json import _integer, _number, _optional, _text, data_problem, find_files, read_json

SCHEMA = "normlab.diagnostics/1"
NAME = "diagnostics.json"
# A few kB per preset and seed at the default every; 64 MiB still parses and checks in seconds.
MAX_BYTES = 64 * MiB
# What the figures draw in seconds, not minutes: 16 presets, each with a style of its own (8 colours × 2 line
# styles), 8 layers (16 ICS panels), 100,000 points a line. Seeds are averaged away and etas only listed.
MAX_PRESETS, MAX_LAYERS, MAX_STEPS, MAX_EPOCHS, MAX_SEEDS, MAX_ETAS = 16, 8, 100_000, 10_000, 1_000, 64
ICS_KEYS = ("l2", "cosine")
# Each measurement of a preset: its [seed][step] series (None: the value is one) and the axis they follow.
MEASUREMENTS = {
    "val_accuracy": (None, "steps"),
    "percentiles": (("p15", "p50", "p85"), "steps"),
    "landscape": (("loss_min", "loss_max"), "steps"),
    "gradient_predictiveness": (("min", "max"), "steps"),
    "beta_smoothness": (None, "steps"),
    "train_eval_gap": (("batch_stats", "moving", "precise"), "epochs"),
}


def _grid(value, seeds: int, length: int) -> bool:
    """[seed][step] numbers or nulls, exactly seeds × length: ragged or mistyped series never reach numpy."""
    return isinstance(value, list) and len(value) == seeds and all(
        isinstance(row, list) and len(row) == length and all(v is None or _number(v) for v in row) for row in value)


def _increasing(values, low: int, most: int) -> bool:
    return (isinstance(values, list) and 0 < len(values) <= most and all(_integer(v, low, 2**53) for v in values)
            and all(a < b for a, b in zip(values, values[1:])))


def _series(preset: dict) -> Iterator[tuple[str, object, str]]:
    """(name, value, axis) of every series a preset holds; a measurement that is null or missing holds none."""
    for key, (parts, axis) in MEASUREMENTS.items():
        value = preset.get(key)
        if value is not None:
            yield from ([(key, value, axis)] if parts is None else
                        ((f"{key}.{p}", value.get(p) if isinstance(value, dict) else None, axis) for p in parts))
    for layer, ics in (preset.get("ics") or {}).items():
        yield from ((f"ics.{layer}.{p}", ics.get(p) if isinstance(ics, dict) else None, "steps")
                    for p in ICS_KEYS)


def preset_problem(preset) -> str | None:
    """What makes a preset's record unusable, or None: for a report, and for a diagnosis that keeps it on resume."""
    if not isinstance(preset, dict):
        return "is not an object"
    seeds = preset.get("seeds")
    if not (isinstance(seeds, list) and 0 < len(seeds) <= MAX_SEEDS
            and all(_integer(s, -2**63, 2**63 - 1) for s in seeds)):
        return f"needs 'seeds': 1 to {MAX_SEEDS:,} integers"
    for axis, low, most in (("steps", 0, MAX_STEPS), ("epochs", 1, MAX_EPOCHS)):
        if not _increasing(preset.get(axis), low, most):
            return f"needs '{axis}': 1 to {most:,} increasing whole numbers from {low}"
    ics, watched = preset.get("ics"), preset.get("percentiles")
    if not _optional(ics, dict) or len(ics or {}) > MAX_LAYERS or not all(map(_text, ics or {})):
        return f"has an 'ics' that is not an object of at most {MAX_LAYERS} layers"
    if watched is not None and not (isinstance(watched, dict) and _text(watched.get("layer"))
                                    and _integer(watched.get("unit"), 0, 2**53)):
        return "has 'percentiles' without a text 'layer' and a 'unit' number"
    for name, value, axis in _series(preset):
        if not _grid(value, len(seeds), len(preset[axis])):
            return (f"has a {shown(name)} that is not {len(seeds)} seeds × {len(preset[axis])} {axis} of numbers "
                    "or nulls")
    return None


def _problem(diagnostics) -> str | None:
    """What makes a parsed file unusable, or None."""
    if not isinstance(diagnostics, dict) or diagnostics.get("schema") != SCHEMA:
        return f'no "schema": "{SCHEMA}"; is it a {NAME} of normlab diagnose?'
    config, presets = diagnostics.get("config"), diagnostics.get("presets")
    etas = config.get("etas") if isinstance(config, dict) else None
    if not (isinstance(config, dict) and _integer(config.get("every"), 1, 2**53) and _text(config.get("probe"))
            and _integer(config.get("precise_batches"), 0, 2**53) and isinstance(etas, list)
            and 0 < len(etas) <= MAX_ETAS and all(_number(eta) and eta > 0 for eta in etas)):
        return (f"needs a 'config' with 'every' (steps, 1 or more), 'etas' (1 to {MAX_ETAS} positive numbers), "
                "'probe' (text) and 'precise_batches' (a count)")
    if not _optional(diagnostics.get("provenance"), dict):
        return "has a 'provenance' that is not an object"
    if problem := data_problem(diagnostics):  # as results.json's; a diagnosis from before them has neither
        return problem
    if not (isinstance(presets, dict) and 0 < len(presets) <= MAX_PRESETS):
        return f"needs 'presets': an object of 1 to {MAX_PRESETS} presets"
    for name, preset in presets.items():
        if not (name and _text(name)):
            return "has a preset without a name, or one no file can hold"
        if problem := preset_problem(preset):
            return f"preset {shown(name)} {problem}"
    return None


def load_diagnostics(path: Path) -> dict:
    """Read and check one diagnostics.json; ConfigError (one line) when it is unreadable or not one of ours."""
    diagnostics = read_json(path, MAX_BYTES)
    if problem := _problem(diagnostics):
        raise ConfigError(f"{one_line(path)}: {problem}")
    return diagnostics


def find_diagnostics(run_dirs: list[Path]) -> Path | None:
    """The first diagnostics.json of the folders given, searched as `results_json.find_results` searches: RUN_DIR's
    own, else the first regular one below it in sorted order, links to folders not followed; None if there is none."""
    return next((found[0] for run_dir in run_dirs if (found := find_files(run_dir, NAME))), None)
