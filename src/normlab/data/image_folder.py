"""A folder of images as a dataset, laid out like torchvision's ``ImageFolder``: one sub-folder per class.

Two layouts:

- ``DIR/train/<class>/*``, ``DIR/test/<class>/*`` and optionally ``DIR/val/<class>/*`` (a folder named ``train``
  makes this the layout); every split has the same class folders.
- ``DIR/<class>/*`` only: per class, in file-name order, the last ``ceil(test_split * n)`` of its ``n`` images are
  the test set (``test_split`` 0.2 unless given).

Classes are the class folders' names, sorted (label 0 is the first). Images are ``.png``, ``.jpg`` or ``.jpeg``
(any case); dot-files are skipped, anything else in a class folder is an error, and so is an image outside one;
other files beside the class folders (a README) are left alone.

The order of a split's images: each class's images, taken in file-name order, are spread evenly through the split:
image ``i`` (from 0) of a class of ``n`` stands at ``(i + 1/2) / n``; sorted by that, a tie going to the lower
class. So every stretch of a split (the first ``val_split`` training images that become validation, the first N
that ``--subset`` trains on) holds the classes in their proportions, whatever the files are named. The same arrays
in an ``.npz`` (``np.savez``, that order, validation first in ``x_train``) give the same ``Dataset`` and digest.

Pixels: 8-bit grey (``L``) is read as ``(H, W)`` uint8, ``RGB`` as ``(H, W, 3)``; bilevel (``1``) as grey
(0 or 255) and palette (``P``) as RGB; other modes (RGBA, 16-bit, CMYK) are refused rather than guessed at. Every
image of a dataset must have the first one's size and mode. Each file is read through ``files.read_bytes`` (a
regular file, at most ``MAX_FILE_BYTES``) and its declared size checked before it is decoded.
"""

import io
import math
import numbers
import os
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np

from normlab.data.arrays import MAX_CLASSES, MAX_VALUES
from normlab.data.dataset import Dataset
from normlab.errors import DataError, shown
from normlab.files import FileProblem, display, one_line, read_bytes

SUFFIXES = (".png", ".jpg", ".jpeg")
SPLITS = ("train", "val", "test")
TEST_SPLIT = 0.2
MAX_FILE_BYTES = 64 << 20
MAX_IMAGES = 2_000_000
MAX_BYTES = 8 << 30   # the decoded images together
MODES = {"L": "L", "1": "L", "RGB": "RGB", "P": "RGB"}  # mode read -> mode kept


def _entries(folder: Path) -> list[os.DirEntry]:
    """The folder's entries but dot-files, sorted by name; at most ``MAX_IMAGES``."""
    try:
        with os.scandir(folder) as listing:
            entries = []
            for entry in listing:
                if not entry.name.startswith("."):
                    entries.append(entry)
                    if len(entries) > MAX_IMAGES:
                        raise DataError(f"{one_line(folder)}: more than {MAX_IMAGES:,} entries")
    except OSError as error:
        raise DataError(f"{one_line(folder)}: cannot list ({error.strerror or error})") from None
    return sorted(entries, key=lambda e: e.name)


def _is_image(name: str) -> bool:
    return name.lower().endswith(SUFFIXES)


def _classes(folder: Path) -> dict[str, list[Path]]:
    """Class name -> its image files in name order, for the class folders of ``folder``."""
    classes = {}
    for entry in _entries(folder):
        if entry.is_dir():
            classes[entry.name] = []
            if len(classes) > MAX_CLASSES:
                raise DataError(f"{one_line(folder)}: more than {MAX_CLASSES:,} class folders")
        elif _is_image(entry.name):
            raise DataError(f"{one_line(entry.path)}: an image outside a class folder; put each image in the "
                            f"folder of its class")
    if not classes:
        raise DataError(f"{one_line(folder)}: no class folder; put each class's images in a folder of its own")
    count = 0
    for name in classes:
        for entry in _entries(folder / name):
            if entry.is_dir():
                raise DataError(f"{one_line(entry.path)}: a folder inside a class folder; classes are one level "
                                f"deep (DIR/<class>/*.png, or DIR/train/<class>/*.png with DIR/test/<class>/)")
            if not _is_image(entry.name):
                raise DataError(f"{one_line(entry.path)}: not a {', '.join(SUFFIXES)} image (only dot-files are "
                                f"skipped); move it out of the class folder")
            classes[name].append(Path(entry.path))
        if not classes[name]:
            raise DataError(f"{one_line(folder / name)}: class {shown(name)} has no image")
        count += len(classes[name])
        if count > MAX_IMAGES:
            raise DataError(f"{one_line(folder)}: more than {MAX_IMAGES:,} images")
    return classes


def spread(counts: list[int]) -> list[tuple[int, int]]:
    """``(class, i)`` for every image of classes of ``counts`` images, in the module's order: by ``(i + 1/2) / n``,
    a tie going to the lower class. Exact fractions: no rounding decides a place."""
    return sorted(((c, i) for c, n in enumerate(counts) for i in range(n)),
                  key=lambda ci: (Fraction(2 * ci[1] + 1, 2 * counts[ci[0]]), ci[0]))


def _split_last(classes: dict[str, list[Path]], test_split, folder: Path) -> tuple[dict, dict]:
    """Per class, the last ``ceil(test_split * n)`` files as test, the others as train."""
    if isinstance(test_split, bool) or not isinstance(test_split, numbers.Real) or not 0 < test_split < 1:
        raise DataError(f"test_split must be a fraction between 0 and 1 (exclusive), got {shown(test_split)}")
    fraction = Fraction(repr(float(test_split)))  # 0.1 as 1/10, not 0.1000000000000000055...: 30 images give 3
    train, test = {}, {}
    for name, files in classes.items():
        k = math.ceil(fraction * len(files))
        if k == len(files):
            raise DataError(f"{one_line(folder / name)}: class {shown(name)} has {len(files)} image"
                            f"{'s' * (len(files) > 1)}: test_split {test_split} leaves none to train on")
        train[name], test[name] = files[:-k], files[-k:]
    return train, test


def _layout(folder: Path, test_split) -> dict[str, dict[str, list[Path]]]:
    """Split name -> class name -> files."""
    if not (folder / "train").is_dir():
        train, test = _split_last(_classes(folder), TEST_SPLIT if test_split is None else test_split, folder)
        return {"train": train, "test": test}
    if test_split is not None:
        raise DataError(f"{one_line(folder)}: has its own test/ folder; test_split applies to a folder of class "
                        f"folders only")
    for entry in _entries(folder):
        if entry.is_dir() and entry.name not in SPLITS:
            raise DataError(f"{one_line(entry.path)}: beside train/, a folder holds only test/ and val/ "
                            f"(a folder named train/ makes it a split layout)")
    if not (folder / "test").is_dir():
        raise DataError(f"{one_line(folder)}: has train/ but no test/ folder; add DIR/test/<class>/ images")
    splits = {split: _classes(folder / split) for split in SPLITS if (folder / split).is_dir()}
    for split, classes in splits.items():
        if set(classes) != set(splits["train"]):
            missing = sorted(set(splits["train"]) - set(classes))
            extra = sorted(set(classes) - set(splits["train"]))
            raise DataError(f"{one_line(folder / split)}: its class folders differ from train/'s ("
                            + "; ".join(f"{what}: {shown(names[:3])}{'...' * (len(names) > 3)}"
                                        for what, names in (("missing", missing), ("not in train/", extra)) if names)
                            + "); every split needs the same classes")
    return splits


def decode(path: Path) -> np.ndarray:
    """One image file as uint8 ``(H, W)`` or ``(H, W, 3)`` (module docstring), or a one-line DataError."""
    from PIL import Image, UnidentifiedImageError  # here: every run imports normlab.data, few read images
    try:
        blob = read_bytes(path, MAX_FILE_BYTES)
    except FileProblem as error:
        raise DataError(str(error)) from None
    where = one_line(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(blob), formats=("PNG", "JPEG")) as image:
                if image.mode not in MODES:
                    raise DataError(f"{where}: mode {image.mode}; images are read as 8-bit grey (L) or RGB: "
                                    f"convert it (drop an alpha channel, scale 16-bit to 8)")
                width, height = image.size  # from the header: nothing is decoded yet
                if width * height * len(MODES[image.mode]) > MAX_VALUES:
                    raise DataError(f"{where}: {width}x{height} {MODES[image.mode]} pixels, more than the "
                                    f"{MAX_VALUES:,} values an image may hold")
                kept = image.convert(MODES[image.mode]) if image.mode != MODES[image.mode] else image
                return np.array(kept, np.uint8)
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError(f"{where}: declares more pixels than an image may hold (a decompression bomb, to "
                        f"Pillow)") from None
    except UnidentifiedImageError:
        raise DataError(f"{where}: not a PNG or JPEG image (its content is neither)") from None
    except Exception as error:  # noqa: BLE001 Pillow's decoders say "corrupt" with many types (OSError, SyntaxError,
        # ValueError, struct.error, ...): each is this one file's fault, said in one line
        raise DataError(f"{where}: not a readable PNG or JPEG image ({type(error).__name__}: "
                        f"{one_line(' '.join(str(error).split()))[:120]})") from None


def _read(classes: dict[str, list[Path]], names: list[str], total: int, like: tuple | None) -> tuple:
    """A split's images (in the module's order) and labels, and ``like``: the first image's shape and file, which
    every image must match."""
    files = [classes[name] for name in names]
    order = spread([len(f) for f in files])
    x = None
    for row, (c, i) in enumerate(order):
        image = decode(files[c][i])
        if like is None:
            like = (image.shape, files[c][i])
            if total * image.size > MAX_BYTES:
                raise DataError(f"{one_line(files[c][i])}: {total:,} images of its shape {image.shape} make more "
                                f"than the {MAX_BYTES:,} bytes read")
        if image.shape != like[0]:
            raise DataError(f"{one_line(files[c][i])}: shape {image.shape}, but {one_line(like[1])} has "
                            f"{like[0]}; every image needs the same size and mode (grey or RGB)")
        if x is None:
            x = np.empty((len(order), *image.shape), np.uint8)
        x[row] = image
    return x, np.array([c for c, _ in order], np.int64), like


def load(folder: str | Path, *, name: str | None = None, val_split: int | None = None,
         test_split: float | None = None) -> Dataset:
    """The dataset in the image folder ``folder`` (module docstring), checked and split by ``Dataset``."""
    folder = Path(folder)
    where = one_line(folder)
    splits = _layout(folder, test_split)
    names = sorted(splits["train"])
    if "val" in splits and val_split is not None:
        raise DataError(f"{where}: has its own val/ folder; give val_split only for a folder without one")
    total = sum(len(files) for classes in splits.values() for files in classes.values())
    arrays, like = {}, None
    for split in SPLITS:
        if split in splits:
            arrays[f"x_{split}"], arrays[f"y_{split}"], like = _read(splits[split], names, total, like)
    try:
        return Dataset(**arrays, class_names=names, name=display(folder) if name is None else name,
                           source=display(folder.resolve()), val_split=val_split)
    except DataError as error:
        raise DataError(f"{where}: {error}") from None
