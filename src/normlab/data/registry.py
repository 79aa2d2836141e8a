"""Every dataset ``--data`` can name, one line each, and how a ``--data`` value becomes a ``Dataset``.

A name is looked up here; anything else is a path (an ``.npz`` file, a folder of images). ``shape`` answers
without reading a pixel where it can (built-ins), so a model can be checked before its data are fetched.
"""

from pathlib import Path
from typing import Callable, NamedTuple

from normlab.data import cifar, fashion_mnist, kmnist, mnist
from normlab.data.dataset import Dataset, Shape
from normlab.errors import DataError, did_you_mean, shown

DEFAULT = "fashion-mnist"


class Builtin(NamedTuple):
    load: Callable[..., Dataset]  # (data_dir, download, verify) -> Dataset
    shape: Shape
    description: str


BUILTIN = {
    "fashion-mnist": Builtin(fashion_mnist.load, fashion_mnist.SPEC.shape, "Zalando's 28x28 clothing, 10 classes"),
    "mnist": Builtin(mnist.load, mnist.SPEC.shape, "LeCun's 28x28 handwritten digits, 10 classes"),
    "kmnist": Builtin(kmnist.load, kmnist.SPEC.shape, "Kuzushiji-MNIST: 28x28 cursive hiragana, 10 classes"),
    "cifar10": Builtin(cifar.load_cifar10, cifar.CIFAR10.shape, "32x32 colour photos, 10 classes"),
    "cifar100": Builtin(cifar.load_cifar100, cifar.CIFAR100.shape, "32x32 colour photos, 100 fine classes"),
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


def shape(data: str) -> Shape:
    """The image shape and class count of ``data``; a path is read (and checked) to learn them."""
    if data in BUILTIN:
        return BUILTIN[data].shape
    return load(data, download=False, verify=False).shape


def load(data: str = DEFAULT, data_dir: str | Path | None = None, download: bool = True,
         verify: bool = True) -> Dataset:
    """The dataset ``data`` names, found (or fetched), checked and split."""
    data = check(data)
    if data in BUILTIN:
        return BUILTIN[data].load(data_dir, download=download, verify=verify)
    raise DataError(f"{data}: reading datasets from files is not supported yet")
