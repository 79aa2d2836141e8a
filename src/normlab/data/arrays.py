"""Arrays a researcher brings, checked once and split: the one door every source (``.npz``, image folder, Python
arrays) goes through to become a ``Dataset``.

Everything the training program would otherwise meet far from the cause is refused here, in one line naming the
array: images that are not uint8 or float (bool, strings, objects, complex), ragged images, a NaN pixel, labels
that are not integers or name no class, a split with no image, a class the model never sees in training.

The rules, as the data come out:

- images stay uint8, or become float32 (float16/32/64 given; taken as they are, so they must be finite); integer
  images whose every value is 0..255 become uint8. Shape ``(N, H, W)`` or ``(N, H, W, C)``, shared by every split.
- labels become uint8 (up to 256 classes; int32 beyond): Fashion-MNIST's own type, so its arrays repacked in a
  file have the built-in's digest. One per image, 1-D (or ``(N, 1)``, as ``keras.datasets.cifar10`` gives them).
- classes: ``class_names`` if given, else ``"0"``, ``"1"``, ... up to the largest label. Every class needs a
  training image.
- validation: ``x_val``/``y_val`` if given, else the first ``val_split`` training images; by default a tenth of
  them, at least 1 and at most 5,000 (Fashion-MNIST's 60,000 give the study's 5,000). Training reports validation
  metrics every epoch, so validation is never empty.

The arrays are used as given, not copied, where their type is already right.
"""

import math
import operator

import numpy as np

from normlab.errors import DataError, shown

VAL_MAX = 5000        # the default validation set: a tenth of the training images, at most this many
MAX_CHANNELS = 64
MAX_VALUES = 1 << 24  # per image (H * W * C): 4096 x 4096 grey, 2365 x 2365 RGB
MAX_CLASSES = 100_000  # ImageNet-21k has 21,843
MAX_NAME = 200        # characters of a class name


def default_val_split(n_train: int) -> int:
    """A tenth of the training images, at least 1 and at most ``VAL_MAX``."""
    return min(VAL_MAX, max(1, n_train // 10))


def _array(what: str, value) -> np.ndarray:
    try:
        return np.asarray(value)
    except (ValueError, TypeError):  # NumPy >= 1.24 refuses a ragged nested list
        raise DataError(f"{what}: ragged (its items differ in shape); give one array, every image the same "
                        f"shape") from None


def _first(mask: np.ndarray) -> tuple[int, ...]:
    """The index of the first True of ``mask`` (C order), as a tuple."""
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(mask)), mask.shape))


def _index(index: tuple[int, ...]) -> str:
    return f"index {index[0]}" if len(index) == 1 else str(index)


def images(what: str, value) -> np.ndarray:
    """``value`` as a uint8 or float32 image array, ``(N, H, W)`` or ``(N, H, W, C)``; else a one-line DataError."""
    x = _array(what, value)
    if x.dtype.kind == "O":
        raise DataError(f"{what}: an object array (ragged images, or Python objects); images must be one uint8 or "
                        f"float array")
    if x.dtype.kind not in "uif":
        raise DataError(f"{what}: dtype {x.dtype}; images must be uint8 or float (float16/32/64, kept as float32)")
    if x.ndim not in (3, 4):
        raise DataError(f"{what}: shape {x.shape}; images must be (N, H, W) or (N, H, W, C)")
    n, h, w, *c = x.shape
    if h < 1 or w < 1 or not 1 <= (c or [1])[0] <= MAX_CHANNELS:
        raise DataError(f"{what}: shape {x.shape}; an image needs H, W >= 1 and 1 to {MAX_CHANNELS} channels")
    if math.prod(x.shape[1:]) > MAX_VALUES:
        raise DataError(f"{what}: images of shape {x.shape[1:]} hold more than {MAX_VALUES:,} values each")
    if x.dtype.kind in "ui":
        if x.dtype != np.uint8 and x.size:
            outside = (x < 0) | (x > 255)
            if outside.any():
                at = _first(outside)
                raise DataError(f"{what}: pixel {x[at]} at {_index(at)} outside 0..255; integer images must be "
                                f"uint8 (or float, taken as they are)")
        return x.astype(np.uint8, copy=False)
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf: refused below
        x = x.astype(np.float32, copy=False)
    bad = ~np.isfinite(x)
    if bad.any():
        at = _first(bad)
        raise DataError(f"{what}: pixel {at} is {x[at]} (as float32); pixels must be finite")
    return x


def labels(what: str, value, n: int, of: str) -> np.ndarray:
    """``value`` as a 1-D integer array of ``n`` non-negative labels, one per image of ``of``."""
    y = _array(what, value)
    if y.dtype.kind not in "ui":
        raise DataError(f"{what}: dtype {y.dtype}; labels must be integers (class indices 0, 1, ...)")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.reshape(-1)
    if y.ndim != 1:
        raise DataError(f"{what}: shape {y.shape}; labels must be 1-D, one per image")
    if len(y) != n:
        raise DataError(f"{what}: {len(y):,} labels for the {n:,} images of {of}; give one label per image")
    if y.size and (negative := y < 0).any():
        at = _first(negative)
        raise DataError(f"{what}: label {y[at]} at {_index(at)} is negative; labels are class indices 0, 1, ...")
    return y


def check_class_names(value) -> tuple[str, ...]:
    """Distinct, non-empty, printable names (they reach the terminal and results.json), at most ``MAX_CLASSES``."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise DataError(f"class_names: {shown(value)}; give a list of str, one per class")
    names = list(value) if not isinstance(value, np.ndarray) or value.ndim == 1 else None
    if names is None or len(names) > MAX_CLASSES:
        raise DataError(f"class_names: give a list of at most {MAX_CLASSES:,} str, one per class")
    for i, name in enumerate(names):
        if not isinstance(name, str):
            raise DataError(f"class_names[{i}]: {shown(name)} is not a str")
        if not name or len(name) > MAX_NAME or not name.isprintable():
            raise DataError(f"class_names[{i}]: {shown(name)}; a class name is 1 to {MAX_NAME} printable "
                            f"characters (no newline or control character)")
    seen = {}
    for i, name in enumerate(names):
        if name in seen:
            raise DataError(f"class_names[{i}]: {shown(name)} repeats class_names[{seen[name]}]; names must differ")
        seen[name] = i
    return tuple(str(name) for name in names)


def _split(x, y, val_split) -> tuple[np.ndarray, ...]:
    """The first ``val_split`` training images held out: (x_train, y_train, x_val, y_val)."""
    n = len(y)
    if val_split is None:
        k = default_val_split(n)
    else:
        try:
            k = operator.index(val_split)
        except TypeError:
            k = None
        if k is None or isinstance(val_split, bool) or k < 1:
            raise DataError(f"val_split must be a whole number of training images >= 1 (validation is measured "
                            f"every epoch), got {shown(val_split)}")
    if k >= n:
        raise DataError(f"x_train: {n:,} images, too few to hold out {k:,} for validation and still train; give "
                        f"x_val and y_val, a smaller val_split, or more training images")
    return x[k:], y[k:], x[:k], y[:k]


def checked(x_train, y_train, x_test, y_test, x_val, y_val, class_names, val_split,
            every_class: bool = True) -> tuple[tuple, tuple[str, ...]]:
    """The six arrays (x_train, y_train, x_val, y_val, x_test, y_test) and the class names, as the rules in the
    module docstring make them; ``Dataset`` is built from these. ``every_class=False`` (a built-in's published
    split, which has them all, or a part of it someone chose) leaves a class without training images allowed."""
    if (x_val is None) != (y_val is None):
        raise DataError("give x_val and y_val together, or neither (validation is then taken from x_train)")
    if x_val is not None and val_split is not None:
        raise DataError("give x_val and y_val, or val_split, not both")
    given = {"x_train": x_train, "x_test": x_test} | ({"x_val": x_val} if x_val is not None else {})
    xs = {what: images(what, x) for what, x in given.items()}
    first = xs["x_train"]
    for what, x in xs.items():
        if len(x) == 0:
            raise DataError(f"{what}: no images; every split needs at least one")
        if x.shape[1:] != first.shape[1:]:
            raise DataError(f"{what}: images of shape {x.shape[1:]}, but x_train's are {first.shape[1:]}; every "
                            f"split needs the same image shape")
        if x.dtype != first.dtype:
            raise DataError(f"{what}: {x.dtype} images, but x_train's are {first.dtype}; give every split the "
                            f"same type (uint8, or float)")
    ys = {f"y{what[1:]}": labels(f"y{what[1:]}", y, len(xs[what]), what)
          for what, y in zip(given, (y_train, y_test, y_val))}
    if class_names is not None:
        names = check_class_names(class_names)
    else:
        top = max(int(y.max()) for y in ys.values())
        if top >= MAX_CLASSES:
            raise DataError(f"labels up to {top:,} make more than {MAX_CLASSES:,} classes")
        names = tuple(str(c) for c in range(top + 1))
    if len(names) < 2:
        raise DataError(f"{len(names)} class{'' if names else 'es'} {shown(list(names))}; a classifier needs at "
                        f"least 2")
    for what, y in ys.items():
        if (outside := y >= len(names)).any():
            at = _first(outside)
            raise DataError(f"{what}: label {y[at]} at {_index(at)} outside 0..{len(names) - 1} "
                            f"({len(names)} class names)")
    x, y = xs["x_train"], ys["y_train"]
    if x_val is None:
        x, y, xv, yv = _split(x, y, val_split)
    else:
        xv, yv = xs["x_val"], ys["y_val"]
    counts = np.bincount(y, minlength=len(names))
    if every_class and (counts == 0).any():
        c = int(np.argmin(counts))
        held = f" (the first {len(yv):,} training images went to validation)" if x_val is None else ""
        raise DataError(f"class {c} {shown(names[c])} has no training image{held}; every class needs one")
    label_type = np.uint8 if len(names) <= 256 else np.int32
    final = (x, y.astype(label_type, copy=False), xv, yv.astype(label_type, copy=False), xs["x_test"],
             ys["y_test"].astype(label_type, copy=False))
    return final, names
