"""Every dataset ``--data`` can name, one line each, and how a ``--data`` value becomes a ``Dataset``.

A name is looked up here; anything else is a path (an ``.npz`` file, a folder of images); from Python, a
``Dataset`` or arrays too. Every source but a built-in ends in ``Dataset``, so all are checked alike.
``shape`` answers without reading a pixel where it can (built-ins), so a model can be checked before its data are
fetched.
"""

import functools
import os
from pathlib import Path
from typing import Callable, NamedTuple

from normlab.data import cifar, fashion_mnist, idx_dataset, image_folder, kmnist, mnist, npz
from normlab.data.dataset import Dataset, Shape, with_validation
from normlab.errors import DataError, did_you_mean, shown
from normlab.files import one_line

DEFAULT = "fashion-mnist"
MAX_COUNT = 1 << 40  # a recorded size beyond any dataset (``note``)


class Builtin(NamedTuple):
    load: Callable[..., Dataset]  # (data_dir, download, verify) -> Dataset
    spec: "idx_dataset.IdxSpec | cifar.CifarSpec"  # its files, and so its shape and split sizes before any is read
    description: str


BUILTIN = {
    "fashion-mnist": Builtin(fashion_mnist.load, fashion_mnist.SPEC, "Zalando's 28x28 grayscale clothing, 10 classes"),
    "mnist": Builtin(mnist.load, mnist.SPEC, "LeCun's 28x28 grayscale handwritten digits, 10 classes"),
    "kmnist": Builtin(kmnist.load, kmnist.SPEC, "Kuzushiji-MNIST: 28x28 grayscale cursive hiragana, 10 classes"),
    "cifar10": Builtin(cifar.load_cifar10, cifar.CIFAR10, "32x32 colour photos, 10 classes"),
    "cifar100": Builtin(cifar.load_cifar100, cifar.CIFAR100, "32x32 colour photos, 100 fine classes"),
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


def note(data: str, shape_, splits_) -> None:
    """What a worker process is told of a dataset it gets as arrays (or an export of a run, by its results.json):
    its shape and sizes, without reading it; a value that is not one is a DataError."""
    def count(n, low: int) -> bool:
        return type(n) is int and low <= n <= MAX_COUNT
    image, classes = shape_ if isinstance(shape_, (list, tuple)) and len(shape_) == 2 else (None, None)
    if not (isinstance(image, (list, tuple)) and 1 <= len(image) <= 3 and all(count(n, 1) for n in image)
            and count(classes, 1) and isinstance(splits_, dict) and set(splits_) == {"train", "validation", "test"}
            and all(count(n, 0) for n in splits_.values())):
        raise DataError(f"{one_line(data)}: the recorded shape {shown(shape_)} and splits {shown(splits_)} are "
                        f"not an image shape, a class count and three image counts")
    _NOTED[data] = (Shape(tuple(image), classes), dict(splits_))


def check(data) -> str:
    """``data`` as a study setting: a built-in name or a path (whose content is read when the run loads it)."""
    if not isinstance(data, str) or not data or "\0" in data or len(data) > 4096:
        raise DataError(f"data must be a dataset name ({', '.join(BUILTIN)}) or the path of an .npz file or an "
                        f"image folder, got {shown(data)}")
    if data not in BUILTIN and data not in _HELD and data not in _NOTED and not is_path(data):
        raise DataError(f"unknown dataset {data!r}: {did_you_mean(data, BUILTIN)}choose from {', '.join(BUILTIN)}, "
                        f"or give the path of an .npz file or an image folder")
    return data


def shape(data) -> Shape:
    """The image shape and class count of ``data``; a path (or arrays) is read and checked to learn them."""
    return _described(data)[0]


def splits(data) -> dict[str, int]:
    """Images per split of ``data``: train, validation, test."""
    return _described(data)[1]


def _described(data) -> tuple[Shape, dict[str, int]]:
    if not isinstance(data, str):  # arrays or a Dataset, from Python
        dataset = load(data)
        return dataset.shape, dataset.splits
    if data in BUILTIN:
        return BUILTIN[data].spec.shape, BUILTIN[data].spec.splits
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


def load(data=DEFAULT, data_dir: str | Path | None = None, download: bool = True, verify: bool = True,
         val_split: int | None = None) -> Dataset:
    """The dataset ``data`` names, found (or fetched), checked and split.

    ``data``: a built-in's name; the path of an ``.npz`` file (``data.npz``) or an image folder
    (``data.image_folder``); a ``Dataset`` (returned as it is); or arrays, ``(x_train, y_train, x_test, y_test)``
    or ``keras.datasets``' ``((x_train, y_train), (x_test, y_test))`` (``Dataset``). ``val_split``: how many of
    the first training images a file, folder or arrays hold out for validation (default: a tenth, at most 5,000);
    a built-in holds out its first 5,000 unless ``val_split`` says otherwise. ``data_dir`` is where a built-in's
    files are; ``download`` and ``verify`` are about a built-in's published files too.
    """
    if isinstance(data, Dataset):
        if val_split is not None:
            raise DataError("val_split: a Dataset is split already")
        return data
    if isinstance(data, tuple):
        arrays = data if len(data) == 4 else (*data[0], *data[1]) if _pairs(data) else None
        if arrays is None:
            raise DataError("data as arrays: give (x_train, y_train, x_test, y_test), or keras.datasets' "
                            "((x_train, y_train), (x_test, y_test))")
        return Dataset(*arrays, val_split=val_split)
    data = check(os.fspath(data) if isinstance(data, os.PathLike) else data)
    if data in BUILTIN or data in _HELD:
        dataset = _HELD[data] if data in _HELD else BUILTIN[data].load(data_dir, download=download, verify=verify)
        return dataset if val_split is None else with_validation(dataset, val_split)
    if data_dir is not None:
        raise DataError(f"{one_line(data)} is read from itself; a data folder only says where a built-in dataset's "
                        f"files are ({', '.join(BUILTIN)}): give one or the other")
    path = Path(data).expanduser()
    if path.suffix.lower() == ".npz":
        return npz.load(path, name=data, val_split=val_split)
    if path.is_dir():
        return image_folder.load(path, name=data, val_split=val_split)
    if not os.path.lexists(path):
        raise DataError(f"{one_line(data)}: no such file or folder; give an .npz file, an image folder or a "
                        f"dataset name ({', '.join(BUILTIN)})")
    raise DataError(f"{one_line(data)}: not an .npz file or an image folder")


def _pairs(data: tuple) -> bool:
    return len(data) == 2 and all(isinstance(pair, tuple) and len(pair) == 2 for pair in data)
