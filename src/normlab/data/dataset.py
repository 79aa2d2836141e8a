"""A dataset as the rest of normlab sees it: images, labels, class names and where they came from.

Every source (a built-in download, an ``.npz``, a folder of images, arrays from Python) ends as one ``Dataset``;
shapes and the class count downstream (the model's input, the loss, the evaluation, exports) come from here,
never from a constant. Images are uint8 (scaled by 1/255 inside the compiled step) or float32 (taken as they are),
``(N, H, W)`` for one channel as Keras' datasets give them, ``(N, H, W, C)`` otherwise.
"""

import hashlib
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np


class Shape(NamedTuple):
    """What a model needs to know of its data before any pixel is read: an image's shape and the class count."""

    image: tuple[int, ...]
    classes: int


@dataclass(frozen=True, eq=False)
class Dataset:
    """The split a run uses; validation is the first ``len(y_val)`` training images unless the source has its own."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    name: str                 # a registry name ("fashion-mnist") or what the user gave ("own.npz", "arrays")
    source: str               # the folder, file or URL it was read from
    digest: str | None = None  # SHA-256 of the content as read (decompressed), None where not computed
    verified: bool = False     # the digest matched a published one

    @property
    def shape(self) -> Shape:
        return Shape(tuple(int(n) for n in self.x_train.shape[1:]), len(self.class_names))

    @property
    def splits(self) -> dict[str, int]:
        return {"train": len(self.y_train), "validation": len(self.y_val), "test": len(self.y_test)}

    def provenance(self) -> dict:
        """What results.json records of the data: enough to tell two runs' data apart and to find it again."""
        return {"name": self.name, "source": self.source, "sha256": self.digest, "verified": self.verified,
                "image_shape": list(self.shape.image), "classes": self.shape.classes,
                "class_names": list(self.class_names), "dtype": str(self.x_train.dtype), "splits": self.splits}


def with_validation(dataset: Dataset, count: int) -> Dataset:
    """``dataset`` with its first ``count`` training images (its validation images first, as they came before the
    training ones in the source) as validation: the study's convention, generalized."""
    from normlab.errors import DataError
    x = np.concatenate([dataset.x_val, dataset.x_train])
    y = np.concatenate([dataset.y_val, dataset.y_train])
    if not 0 < count < len(y):
        raise DataError(f"val_split {count:,} must leave training images: {dataset.name} has {len(y):,} for "
                        f"training and validation together")
    arrays = (x[count:], y[count:], x[:count], y[:count], dataset.x_test, dataset.y_test)
    return replace(dataset, x_train=arrays[0], y_train=arrays[1], x_val=arrays[2], y_val=arrays[3],
                   digest=content_digest(*arrays))


def content_digest(*arrays: np.ndarray) -> str:
    """SHA-256 over each array's dtype, shape and bytes: equal exactly when the data are, whatever file held them
    (an ``.npz`` repack of a built-in dataset has the built-in's digest)."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()
