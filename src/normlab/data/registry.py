"""Every dataset ``--data`` can name, one line each, and how a ``--data`` value becomes a ``Dataset``.

A name is looked up here; anything else is a path (an ``.npz`` file, a folder of images); from Python, a
``Dataset`` or arrays too. Every source but a built-in ends in ``arrays.from_arrays``, so all are checked alike.
``shape`` answers without reading a pixel where it can (built-ins), so a model can be checked before its data are
fetched.
"""

import os
from pathlib import Path
from typing import Callable, NamedTuple

from normlab.data import fashion_mnist, image_folder, npz
from normlab.data.arrays import from_arrays
from normlab.data.dataset import Dataset, Shape
from normlab.errors import DataError, did_you_mean, shown
from normlab.files import one_line

DEFAULT = "fashion-mnist"


class Builtin(NamedTuple):
    load: Callable[..., Dataset]  # (data_dir, download, verify) -> Dataset
    shape: Shape
    description: str


BUILTIN = {
    "fashion-mnist": Builtin(fashion_mnist.load, fashion_mnist.SHAPE, "Zalando's 28x28 clothing, 10 classes"),
}


def is_path(data: str) -> bool:
    """A value that is not a registry name is a path: it has a separator or a file suffix."""
    return data not in BUILTIN and ("/" in data or Path(data).suffix != "" or Path(data).exists())


def check(data) -> str:
    """``data`` as a study setting: a built-in name or a path (whose content is read when the run loads it)."""
    if not isinstance(data, str) or not data or "\0" in data or len(data) > 4096:
        raise DataError(f"data must be a dataset name ({', '.join(BUILTIN)}) or the path of an .npz file or an "
                        f"image folder, got {shown(data)}")
    if data not in BUILTIN and not is_path(data):
        raise DataError(f"unknown dataset {data!r}: {did_you_mean(data, BUILTIN)}choose from {', '.join(BUILTIN)}, "
                        f"or give the path of an .npz file or an image folder")
    return data


def shape(data) -> Shape:
    """The image shape and class count of ``data``; a path (or arrays) is read and checked to learn them."""
    if isinstance(data, str) and data in BUILTIN:
        return BUILTIN[data].shape
    return load(data, download=False, verify=False).shape


def load(data=DEFAULT, data_dir: str | Path | None = None, download: bool = True, verify: bool = True,
         val_split: int | None = None) -> Dataset:
    """The dataset ``data`` names, found (or fetched), checked and split.

    ``data``: a built-in's name; the path of an ``.npz`` file (``data.npz``) or an image folder
    (``data.image_folder``); a ``Dataset`` (returned as it is); or arrays, ``(x_train, y_train, x_test, y_test)``
    or ``keras.datasets``' ``((x_train, y_train), (x_test, y_test))`` (``data.arrays.from_arrays``). ``val_split``:
    how many of the first training images a file, folder or arrays hold out for validation (default: a tenth, at
    most 5,000); a built-in holds out its own. ``data_dir`` is where a built-in's files are; ``download`` and
    ``verify`` are about a built-in's published files too.
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
        return from_arrays(*arrays, val_split=val_split)
    data = check(os.fspath(data) if isinstance(data, os.PathLike) else data)
    if data in BUILTIN:
        if val_split is not None:
            raise DataError(f"val_split: {data} holds out its own validation images; val_split applies to an .npz "
                            f"file, an image folder or arrays")
        return BUILTIN[data].load(data_dir, download=download, verify=verify)
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
