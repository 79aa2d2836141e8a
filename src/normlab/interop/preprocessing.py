"""What turns stored pixels into a model's input, carried by every exported model so that it takes the pixels as a
user has them: ``keras_model.predict(x_test_uint8)`` scores what the run recorded, without the caller knowing /255.

A preprocessing is the dict ``train.preprocess.preprocessing`` makes, ``{"scale", "mean", "std"}``: per channel,
:math:`x \\mapsto (x \\cdot \\text{scale} - \\text{mean}) / \\text{std}`, with ``mean`` and ``std`` None for no
normalization (grayscale images are one channel). A run's is recorded in its results.json as ``preprocessing``;
a run or a file that predates it took uint8 pixels / 255 (``UINT8``).
"""

import math
from pathlib import Path

import numpy as np

from normlab.errors import ConfigError, shown
from normlab.files import one_line

UINT8 = {"scale": 1 / 255, "mean": None, "std": None}  # every run and file before preprocessing was recorded
NONE = {"scale": 1.0, "mean": None, "std": None}        # the model's input as it is


def _number(value) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def checked(value, where: str, channels: int | None = None) -> dict:
    """``value`` as a preprocessing (floats, lists of ``channels`` floats), or a one-line ConfigError."""
    if not isinstance(value, dict) or set(value) - {"scale", "mean", "std"} or "scale" not in value:
        raise ConfigError(f"{where}: the preprocessing must be a dict of scale, mean and std, got {shown(value)}")
    scale, mean, std = value["scale"], value.get("mean"), value.get("std")
    if not _number(scale) or scale == 0:
        raise ConfigError(f"{where}: the preprocessing's scale must be a finite number other than 0, got "
                          f"{shown(scale)}")
    if mean is None and std is None:
        return {"scale": float(scale), "mean": None, "std": None}
    if not all(isinstance(v, list) and v and len(v) == len(mean) and all(map(_number, v)) for v in (mean, std)) \
            or not all(s > 0 for s in std) or len(mean) != (channels or len(mean)):
        raise ConfigError(f"{where}: the preprocessing's mean and std must be lists of {channels or 'as many'} "
                          f"finite numbers, std's positive, got {shown(mean)} and {shown(std)}")
    return {"scale": float(scale), "mean": [float(v) for v in mean], "std": [float(v) for v in std]}


def of_run(run_dir: Path) -> dict:
    """The preprocessing the run folder's results.json records, or ``UINT8`` if it records none."""
    from normlab.report.results_json import load_results
    path = Path(run_dir) / "results.json"
    results = load_results(path)
    return checked(results["preprocessing"], one_line(path)) if "preprocessing" in results else dict(UINT8)


def channels(image: tuple) -> int:
    """Of an image shape: (H, W, C) has C channels, a grayscale (H, W) one."""
    return image[-1] if len(image) == 3 else 1


def applied(x, preprocessing: dict) -> np.ndarray:
    """``preprocessing`` on ``x`` in float32, in the order the exports compute it (multiply, subtract, divide)."""
    x = np.asarray(x, np.float32) * np.float32(preprocessing["scale"])
    if preprocessing["mean"] is None:
        return x
    return (x - np.asarray(preprocessing["mean"], np.float32)) / np.asarray(preprocessing["std"], np.float32)


def relative(preprocessing: dict, scale: float) -> dict:
    """The same map on pixels already multiplied by ``scale`` (normlab's step scales uint8 by 1/255 first):
    (x s - m) / d is (y - m r) / (d r) for y = x ``scale`` and r = ``scale`` / s; no mean or std if it is y itself."""
    ratio = scale / preprocessing["scale"]
    mean, std = preprocessing["mean"], preprocessing["std"]
    if mean is None and math.isclose(ratio, 1.0, rel_tol=1e-6):
        return {"scale": scale, "mean": None, "std": None}
    mean, std = (0.0,) if mean is None else mean, (1.0,) if std is None else std
    return {"scale": scale, "mean": [m * ratio for m in mean], "std": [s * ratio for s in std]}
