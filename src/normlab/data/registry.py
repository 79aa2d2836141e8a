"""Every dataset ``--data`` can name, one line each, and how a ``--data`` value becomes a ``Dataset``.

A name is looked up here; anything else is a path (an ``.npz`` file, a folder of images). ``shape`` answers
without reading a pixel where it can (built-ins), so a model can be checked before its data are fetched.
"""

import functools
import os
from pathlib import Path
from typing import Callable, NamedTuple

from normlab.data import fashion_mnist
from normlab.data.dataset import Dataset, Shape, with_validation
from normlab.errors import DataError, did_you_mean, shown

DEFAULT = "fashion-mnist"


class Builtin(NamedTuple):
    load: Callable[..., Dataset]  # (data_dir, download, verify) -> Dataset
    shape: Shape
    splits: dict[str, int]  # images per split: train, validation, test
    description: str


BUILTIN = {
    "fashion-mnist": Builtin(fashion_mnist.load, fashion_mnist.SHAPE, fashion_mnist.SPLITS,
                             "Zalando's 28x28 grayscale clothing, 10 classes"),
}
# Datasets given as arrays in this process (``remember``), and what other processes were told of one (``note``).
_HELD: dict[str, Dataset] = {}
_NOTED: dict[str, tuple[Shape, dict[str, int]]] = {}


def is_path(data: str) -> bool:
    """A value that is not a registry name is a path: it has a separator or a file suffix."""
    return data not in BUILTIN and ("/" in data or Path(data).suffix != "" or os.path.lexists(data))


def remember(dataset: Dataset) -> str:
    """A name for arrays given in Python (``arrays:`` and their digest), by which a study's settings refer to them."""
    name = f"arrays:{dataset.digest[:16]}"
    _HELD[name] = dataset
    return name


def note(data: str, shape_: Shape, splits_: dict[str, int]) -> None:
    """What a worker process is told of a dataset it gets as arrays: its shape and sizes, without reading it."""
    _NOTED[data] = (Shape(tuple(shape_[0]), int(shape_[1])), dict(splits_))


def check(data) -> str:
    """``data`` as a study setting: a built-in name or a path (whose content is read when the run loads it)."""
    if not isinstance(data, str) or not data or "\0" in data or len(data) > 4096:
        raise DataError(f"data must be a dataset name ({', '.join(BUILTIN)}) or the path of an .npz file or an "
                        f"image folder, got {shown(data)}")
    if data not in BUILTIN and data not in _HELD and data not in _NOTED and not is_path(data):
        raise DataError(f"unknown dataset {data!r}: {did_you_mean(data, BUILTIN)}choose from {', '.join(BUILTIN)}, "
                        f"or give the path of an .npz file or an image folder")
    return data


def shape(data: str) -> Shape:
    """The image shape and class count of ``data``; a path is read (and checked) to learn them."""
    return _described(data)[0]


def splits(data: str) -> dict[str, int]:
    """Images per split of ``data``: train, validation, test."""
    return _described(data)[1]


def _described(data: str) -> tuple[Shape, dict[str, int]]:
    if data in BUILTIN:
        return BUILTIN[data].shape, BUILTIN[data].splits
    if data in _NOTED:
        return _NOTED[data]
    if data in _HELD:
        return _HELD[data].shape, _HELD[data].splits
    return _path_described(data, *_stamp(data))


def _stamp(path: str) -> tuple:
    """What tells a changed file or folder from the one read before: its inode, size and modification time."""
    try:
        info = os.stat(path)
    except OSError:
        return (None, None, None)
    return (info.st_ino, info.st_size, info.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _path_described(data: str, *stamp) -> tuple[Shape, dict[str, int]]:
    dataset = load(data, download=False, verify=False)
    return dataset.shape, dataset.splits


def load(data: str = DEFAULT, data_dir: str | Path | None = None, download: bool = True,
         verify: bool = True, val_split: int | None = None) -> Dataset:
    """The dataset ``data`` names, found (or fetched), checked and split: validation is the source's own, else
    its first ``val_split`` training images."""
    data = check(data)
    if data in BUILTIN or data in _HELD:
        dataset = _HELD[data] if data in _HELD else BUILTIN[data].load(data_dir, download=download, verify=verify)
        return dataset if val_split is None else with_validation(dataset, val_split)
    raise DataError(f"{data}: reading datasets from files is not supported yet")
