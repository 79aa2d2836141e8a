"""A dataset as the rest of normlab sees it: images, labels, class names and where they came from.

Every source (a built-in download, an ``.npz``, a folder of images, arrays from Python) ends as one ``Dataset``;
shapes and the class count downstream (the model's input, the loss, the evaluation, exports) come from here,
never from a constant. Images are uint8 (scaled by 1/255 inside the compiled step) or float32 (taken as they are),
``(N, H, W)`` for one channel as Keras' datasets give them, ``(N, H, W, C)`` otherwise.
"""

import hashlib
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np


class Shape(NamedTuple):
    """What a model needs to know of its data before any pixel is read: an image's shape and the class count."""

    image: tuple[int, ...]
    classes: int


@dataclass(frozen=True, eq=False, init=False)
class Dataset:
    """Images and labels, checked and split: ``normlab.Dataset(x_train, y_train, x_test, y_test)`` from NumPy arrays.

    Validation is ``x_val``/``y_val`` if given, else the first ``val_split`` training images (default: a tenth, at
    most 5,000: Fashion-MNIST's 60,000 give the study's 5,000). Every source (a built-in download, an ``.npz``, an
    image folder, arrays) is made here, so all pass the same checks (``data.arrays``: types, shapes, finite pixels,
    labels naming a class, a training image for every class) and get the same ``digest``.

    >>> import numpy as np
    >>> x, y = np.zeros((100, 8, 8), np.uint8), np.arange(100) % 4
    >>> normlab.Dataset(x, y, x[:10], y[:10], class_names=["a", "b", "c", "d"])
    <normlab.Dataset arrays: 8x8 uint8, 4 classes, train 90 / validation 10 / test 10>
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    name: str      # a registry name ("fashion-mnist") or what the user gave ("own.npz", "arrays")
    source: str    # the folder, file or URL it was read from
    digest: str    # ``content_digest`` of the six arrays: equal exactly when the data are
    verified: bool  # its files matched a published digest, or one recorded when a verified download was kept

    def __init__(self, x_train, y_train, x_test, y_test, x_val=None, y_val=None, *, class_names=None,
                 val_split: int | None = None, name: str = "arrays", source: str = "arrays", verified: bool = False,
                 every_class: bool = True, digest=None):
        from normlab.data.arrays import checked
        arrays, names = checked(x_train, y_train, x_test, y_test, x_val, y_val, class_names, val_split, every_class)
        for field, value in zip(("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"), arrays):
            object.__setattr__(self, field, value)
        for field, value in (("class_names", names), ("name", name), ("source", source),
                             ("digest", content_digest(*arrays)), ("verified", bool(verified))):
            object.__setattr__(self, field, value)  # ``digest`` (from ``dataclasses.replace``) is computed anew

    def __repr__(self) -> str:
        return (f"<normlab.Dataset {self.name}: {'x'.join(map(str, self.shape.image))} {self.x_train.dtype}, "
                f"{self.shape.classes} classes, train {len(self.y_train):,} / validation {len(self.y_val):,} / "
                f"test {len(self.y_test):,}>")

    @property
    def shape(self) -> Shape:
        """An image's shape and the class count: what a model built for these data takes and scores."""
        return Shape(tuple(int(n) for n in self.x_train.shape[1:]), len(self.class_names))

    @property
    def splits(self) -> dict[str, int]:
        """Images per split: train, validation, test."""
        return {"train": len(self.y_train), "validation": len(self.y_val), "test": len(self.y_test)}

    def provenance(self) -> dict:
        """What results.json records of the data: enough to tell two runs' data apart and to find it again."""
        return {"name": self.name, "source": self.source, "sha256": self.digest, "verified": self.verified,
                "image_shape": list(self.shape.image), "classes": self.shape.classes,
                "class_names": list(self.class_names), "dtype": str(self.x_train.dtype), "splits": self.splits}


def with_validation(dataset: Dataset, count: int) -> Dataset:
    """``dataset`` with its first ``count`` training images (its validation images first, as they came before the
    training ones in the source) as validation: the study's convention, generalized."""
    return Dataset(np.concatenate([dataset.x_val, dataset.x_train]), np.concatenate([dataset.y_val, dataset.y_train]),
                   dataset.x_test, dataset.y_test, val_split=count, class_names=dataset.class_names,
                   name=dataset.name, source=dataset.source, verified=dataset.verified, every_class=False)


def content_digest(*arrays: np.ndarray) -> str:
    """SHA-256 over each array's dtype, shape and bytes: equal exactly when the data are, whatever file held them
    (an ``.npz`` repack of a built-in dataset has the built-in's digest)."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()
