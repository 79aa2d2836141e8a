"""``results.json``: the machine-readable record of a study, and the one place that knows its schema.

Other tools read its key names, so they never change; the report reads runs only as typed `Run` records, whose
defaults stand for keys that older files lack. Writing is ours and atomic. Reading takes any file a user points
at, so ``load_results`` checks every field the report later uses and turns anything else into one ConfigError
line: after it, no writer meets a value it cannot handle. Numbers must be finite and within float32's range
(training is float32, so nothing real is larger, and means over seeds cannot overflow); accuracies lie in [0, 1].

The data a study trained on are two top-level keys (``data_problem`` checks them; ``report.dataset`` reads them):
``data``, the dataset's ``provenance()`` as the runs used it (``splits`` and ``sha256`` those of the arrays
trained and evaluated on, ``subset`` the training images kept, or null), and ``preprocessing``, what became of a
pixel before the first layer: ``{"scale": 1/255}`` for uint8 images, ``{"scale": 1.0}`` for float32 ones (taken as
given); per-channel normalization adds ``mean`` and ``std``, one number per channel, applied after the scale.
A file from before them has neither: its runs were the study's Fashion-MNIST (``report.dataset.legacy``).
"""

import json
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from normlab.errors import ConfigError
from normlab import files
from normlab.files import MiB, FileProblem, one_line, write_text

HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")
OK, DIVERGED = "ok", "diverged"  # a run's status: DIVERGED when training met a non-finite loss
# A results.json holds a few kB per run; 64 MiB is far beyond any study and still parses in seconds.
MAX_BYTES = 64 * MiB
FLOAT32_MAX = float(np.finfo(np.float32).max)
_SURROGATE = re.compile("[\ud800-\udfff]")
# Bounds of the data record: a name or path of Linux's PATH_MAX, more classes than any dataset has (ImageNet-21k:
# 21,841), image ranks 1 (a vector) to 3 (height, width, channels), and more channels than any image has.
MAX_TEXT, MAX_CLASSES, MAX_CHANNELS = 4096, 100_000, 64
_SHA256 = re.compile("[0-9a-f]{64}")
_DTYPE = re.compile("[a-z][a-z0-9]{0,15}")
SPLITS = ("train", "validation", "test")
PREPROCESSING_KEYS = ("scale", "mean", "std")


@dataclass(frozen=True)
class Run:
    """One run (a preset and a seed) of results.json, as the report reads it.

    Built from a record that training wrote or `load_results` checked. A key that is null, or missing (results
    from before it existed), takes its default: the run completed, and has no setting, time or params.
    """
    preset: str
    seed: int
    history: dict[str, list[float]]
    test: dict[str, float] | None = None
    status: str = OK
    diverged_epoch: int | None = None
    time: dict[str, float] = field(default_factory=dict)
    params: dict[str, int] | None = None
    setting: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, run: dict) -> "Run":
        return cls(**{f.name: run[f.name] for f in fields(cls) if run.get(f.name) is not None})

    @property
    def diverged(self) -> bool:
        """The one rule for what every writer leaves out of its statistics: training met a non-finite loss."""
        return self.status == DIVERGED

    @property
    def final_val_accuracy(self) -> float:
        return self.history["val_accuracy"][-1]


def runs(results: dict) -> list[Run]:
    """Every run of a study, in file order."""
    return [Run.from_dict(run) for run in results["runs"]]


def write_results(results: dict, path: Path) -> Path:
    """Written atomically, so a crash or a full disk never leaves a half-written results.json."""
    return write_text(path, json.dumps(results, indent=1, allow_nan=False))


def _number(v, low: float = -FLOAT32_MAX, high: float = FLOAT32_MAX) -> bool:
    """A real number (not a bool) in [low, high]; NaN fails every comparison, and ints compare exactly."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and low <= v <= high


def _integer(v, low: float, high: float) -> bool:
    return isinstance(v, int) and _number(v, low, high)


def _text(v) -> bool:
    """A str every encoder takes: a JSON "\\ud800" escape gives a lone surrogate that no font or file can hold."""
    return isinstance(v, str) and not _SURROGATE.search(v)


def _optional(v, kind: type) -> bool:
    return v is None or isinstance(v, kind)


def _history_problem(history) -> str | None:
    if not isinstance(history, dict) or not all(isinstance(history.get(k), list) for k in HISTORY_KEYS):
        return f"needs 'history' with lists {', '.join(HISTORY_KEYS)}"
    if len({len(history[k]) for k in HISTORY_KEYS}) > 1:
        return "has history lists of different lengths"
    for key in HISTORY_KEYS:
        accuracy = key.endswith("accuracy")
        if not all(_number(v, 0, 1) if accuracy else _number(v) for v in history[key]):
            return f"has a history '{key}' value that is not a finite number" + (" in [0, 1]" if accuracy else "")
    return None


def _test_problem(test, required: bool) -> str | None:
    if test is None and not required:
        return None
    if not (isinstance(test, dict) and _number(test.get("loss")) and _number(test.get("accuracy"), 0, 1)):
        return "needs 'test' with a finite loss and an accuracy in [0, 1]"
    return None


def _problem(run) -> str | None:
    """What makes a run record unusable, or None."""
    if not isinstance(run, dict):
        return "is not an object"
    if not (_text(run.get("preset")) and run["preset"]) or not _integer(run.get("seed"), -2**63, 2**63 - 1):
        return "needs 'preset' (text) and 'seed' (a 64-bit integer)"
    status = run.get("status", OK)  # results from before statuses existed: every run completed
    if status not in (OK, DIVERGED):
        return "has a 'status' other than ok/diverged"
    epoch = run.get("diverged_epoch")
    if epoch is not None and not _integer(epoch, 1, FLOAT32_MAX):
        return "has a 'diverged_epoch' that is not an epoch number (1 or more)"
    if problem := _history_problem(run.get("history")) or _test_problem(run.get("test"), status == OK):
        return problem
    if status == OK and not run["history"]["val_accuracy"]:
        return "completed but has no epoch in its history"
    setting = run.get("setting")
    if not _optional(setting, dict) or not all(
            _text(k) and (_text(v) or isinstance(v, bool) or _number(v)) for k, v in (setting or {}).items()):
        return "has a 'setting' that is not an object of text, finite numbers and booleans"
    time = run.get("time")
    if not _optional(time, dict) or not all(_number(v) for k, v in (time or {}).items() if k.endswith("_s")):
        return "has a 'time' that is not an object of finite seconds"
    if not _optional(run.get("params"), dict):
        return "has 'params' that are not an object"
    return None


def _name(v) -> bool:
    """Text a report can show: not empty, at most MAX_TEXT characters (control characters are shown escaped)."""
    return _text(v) and 0 < len(v) <= MAX_TEXT


def _splits_problem(data: dict) -> str | None:
    splits, subset = data.get("splits"), data.get("subset")
    if not (isinstance(splits, dict) and set(splits) == set(SPLITS)
            and all(_integer(n, 0, 2**53) for n in splits.values())):
        return f"'splits' that are not image counts {', '.join(SPLITS)}"
    if not (subset is None or _integer(subset, 1, 2**53)) or (subset is not None and splits["train"] > subset):
        return "a 'subset' that is neither null nor the count of training images kept (at least 'splits' train)"
    return None


def _channels(data: dict) -> int:
    """Channels of the data's images: the last axis of (H, W, C), else 1 ((H, W) and vectors are one channel)."""
    return data["image_shape"][-1] if len(data["image_shape"]) == 3 else 1


def _preprocessing_problem(preprocessing, channels: int) -> str | None:
    if not isinstance(preprocessing, dict) or not set(preprocessing) <= set(PREPROCESSING_KEYS):
        return f"has a 'preprocessing' that is not an object of {', '.join(PREPROCESSING_KEYS)}"
    if not (_number(preprocessing.get("scale")) and preprocessing["scale"] > 0):
        return "has a 'preprocessing' without a positive 'scale'"
    if (preprocessing.get("mean") is None) != (preprocessing.get("std") is None):
        return "has a 'preprocessing' with only one of 'mean' and 'std'"
    for key, low in (("mean", -FLOAT32_MAX), ("std", 0)):
        values = preprocessing.get(key)
        if values is not None and not (isinstance(values, list) and len(values) == channels and all(_number(v, low) for v in values)
                and (key == "mean" or all(v > 0 for v in values))):
            return f"has a 'preprocessing' '{key}' that is not {channels} finite number(s), one per channel"
    return None


def data_problem(record: dict) -> str | None:
    """What is wrong with the ``data`` and ``preprocessing`` of ``record`` (a results.json, a diagnostics.json), or
    None; a record without either is from before them. Keys of ``data`` not named here are left alone (a newer
    ``Dataset.provenance()`` may add some): the report shows only what is checked."""
    data, preprocessing = record.get("data"), record.get("preprocessing")
    if data is None and preprocessing is None:
        return None
    if not isinstance(data, dict):
        return "has a 'preprocessing' but no 'data' object" if data is None else "has a 'data' that is not an object"
    problem = None
    if not (_name(data.get("name")) and _text(data.get("source")) and len(data["source"]) <= MAX_TEXT):
        problem = f"a 'name' and a 'source' that are not text of 1 to {MAX_TEXT:,} characters"
    elif not (isinstance(data.get("sha256"), str) and _SHA256.fullmatch(data["sha256"])):
        problem = "a 'sha256' that is not 64 lowercase hexadecimal digits"
    elif not isinstance(data.get("verified"), bool):
        problem = "a 'verified' that is not true or false"
    elif not (isinstance(data.get("image_shape"), list) and 1 <= len(data["image_shape"]) <= 3
              and all(_integer(n, 1, 2**31) for n in data["image_shape"])
              and (len(data["image_shape"]) < 3 or data["image_shape"][-1] <= MAX_CHANNELS)):
        problem = f"an 'image_shape' that is not 1 to 3 sizes (at most {MAX_CHANNELS} channels)"
    elif not (_integer(data.get("classes"), 1, MAX_CLASSES) and isinstance(data.get("class_names"), list)
              and len(data["class_names"]) == data["classes"] and all(map(_name, data["class_names"]))):
        problem = f"'classes' (1 to {MAX_CLASSES:,}) without as many 'class_names' (text)"
    elif not (isinstance(data.get("dtype"), str) and _DTYPE.fullmatch(data["dtype"])):
        problem = "a 'dtype' that is not a NumPy type name"
    else:
        problem = _splits_problem(data)
    if problem:
        return f"has a 'data' with {problem}"
    if preprocessing is None:
        return "has a 'data' but no 'preprocessing'"
    return _preprocessing_problem(preprocessing, _channels(data))


def _legacy_problem(results: dict) -> str | None:
    """A file from before ``data``: its config's ``data``, ``subset`` and ``val_split``, from which the report
    tells what it trained on (``report.dataset.legacy``), must be a name and counts, or absent."""
    config = results.get("config")
    if results.get("data") is not None or not isinstance(config, dict):
        return None
    for key in ("subset", "val_split"):
        if not (config.get(key) is None or _integer(config[key], 1, 2**53)):
            return f"has no 'data' and a config '{key}' that is not a count of images"
    if not (config.get("data") is None or _name(config["data"])):
        return f"has no 'data' and a config 'data' that is not a dataset name of 1 to {MAX_TEXT:,} characters"
    return None


def _study_problem(results: dict) -> str | None:
    study = results.get("study") or {}
    if not isinstance(study, dict) or not _text(study.get("trial", "run")):
        return "has a 'study' that is not an object with a text 'trial'"
    if not _optional(results.get("provenance"), dict):
        return "has a 'provenance' that is not an object"
    return data_problem(results) or _legacy_problem(results)


def read_json(path: Path, max_bytes: int):
    """``files.read_json``, a problem with it one ConfigError line."""
    try:
        return files.read_json(path, max_bytes)
    except FileProblem as error:
        raise ConfigError(f"cannot read {error}") from None


def load_results(path: Path) -> dict:
    """Read and check one results.json; ConfigError (one line) when it is unreadable or not a study's results."""
    where = one_line(path)
    results = read_json(path, MAX_BYTES)
    if not isinstance(results, dict) or not isinstance(results.get("runs"), list) or not results["runs"]:
        raise ConfigError(f"{where}: no 'runs' list; is it a results.json of normlab reproduce?")
    if problem := _study_problem(results):
        raise ConfigError(f"{where}: {problem}")
    for i, run in enumerate(results["runs"]):
        if problem := _problem(run):
            raise ConfigError(f"{where}: run {i} {problem}")
    return results


def find_results(run_dir: Path) -> list[Path]:
    """RUN_DIR/results.json, or for a sweep directory every regular results.json below it (trial folders).

    The walk does not follow symbolic links to folders (a link loop would never end) and skips a results.json that
    is not a regular file (a FIFO would block); RUN_DIR/results.json itself is always taken, so load_results says
    what is wrong with it.
    """
    found = find_files(run_dir, "results.json")
    if not found:
        raise ConfigError(f"no results.json in {one_line(run_dir)} or below it")
    return found


def find_files(run_dir: Path, name: str) -> list[Path]:
    """RUN_DIR/NAME if it exists (whatever it is), else every regular file NAME below RUN_DIR, sorted."""
    run_dir = Path(run_dir)
    if os.path.lexists(run_dir / name):
        return [run_dir / name]
    return sorted(Path(folder) / name for folder, _, names in os.walk(run_dir)
                  if name in names and os.path.isfile(Path(folder) / name))
