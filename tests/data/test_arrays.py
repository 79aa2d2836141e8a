"""``Dataset``, the one door of every source: the split, types and digest against arrays and a SHA-256 written
here, the built-in Fashion-MNIST reproduced exactly, and every bad array refused in one line naming it."""

import hashlib

import numpy as np
import pytest

from normlab.data import registry
from normlab.data.arrays import default_val_split
from normlab.data.dataset import Dataset
from normlab.errors import DataError

RNG = np.random.default_rng(0)
X = RNG.integers(0, 256, (40, 5, 4), dtype=np.uint8)
Y = np.arange(40) % 3
X_TEST = RNG.integers(0, 256, (9, 5, 4), dtype=np.uint8)
Y_TEST = np.arange(9) % 3


def digest(*arrays) -> str:
    """An independent content digest: dtype string, shape tuple, C-order bytes, in order."""
    h = hashlib.sha256()
    for a in arrays:
        h.update((a.dtype.str + str(a.shape)).encode() + a.tobytes())
    return h.hexdigest()


def test_the_first_val_split_training_images_are_validation_and_the_digest_is_of_the_six_arrays():
    d = Dataset(X, Y, X_TEST, Y_TEST, val_split=7, class_names=["a", "b", "c"], name="mine", source="here")
    want = (X[7:], Y[7:].astype(np.uint8), X[:7], Y[:7].astype(np.uint8), X_TEST, Y_TEST.astype(np.uint8))
    got = (d.x_train, d.y_train, d.x_val, d.y_val, d.x_test, d.y_test)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and np.array_equal(g, w)
    assert d.digest == digest(*want) and not d.verified
    assert (d.class_names, d.name, d.source, d.splits) == (("a", "b", "c"), "mine", "here",
                                                           {"train": 33, "validation": 7, "test": 9})
    assert d.shape == ((5, 4), 3)


@pytest.mark.parametrize("n,k", [(60000, 5000), (50001, 5000), (49999, 4999), (100, 10), (19, 1), (3, 1)])
def test_the_default_validation_is_a_tenth_at_least_one_at_most_5000(n, k):
    assert default_val_split(n) == k
    x, y = np.zeros((n, 1, 1), np.uint8), np.arange(n) % 2
    assert len(Dataset(x, y, x[:1], y[:1]).y_val) == k


def test_types_become_uint8_or_float32_and_labels_uint8():
    floats = X.astype(np.float64) / 255
    d = Dataset(floats, Y.astype(np.int64)[:, None], X_TEST.astype(np.float16), Y_TEST.astype(np.int8))
    assert d.x_train.dtype == d.x_test.dtype == np.float32 and d.y_train.dtype == d.y_test.dtype == np.uint8
    assert np.array_equal(d.x_train, floats[4:].astype(np.float32))  # the default: a tenth of 40
    assert np.array_equal(d.y_train, Y[4:])  # (N, 1) labels, as keras.datasets.cifar10's, taken as 1-D
    ints = Dataset(X.astype(np.int64), Y, X_TEST.astype(np.uint16), Y_TEST)
    assert ints.x_train.dtype == np.uint8 and np.array_equal(ints.x_train, X[4:])
    assert ints.class_names == ("0", "1", "2")
    many = Dataset(np.zeros((300, 2, 2, 3), np.uint8), np.arange(300), np.zeros((1, 2, 2, 3), np.uint8), [0],
                       x_val=np.zeros((1, 2, 2, 3), np.uint8), y_val=[299])
    assert many.y_train.dtype == np.int32 and many.shape == ((2, 2, 3), 300) and many.splits["train"] == 300


def test_own_validation_arrays_and_python_lists():
    d = Dataset(X.tolist(), Y.tolist(), X_TEST, Y_TEST, X[:2], Y[:2])
    assert np.array_equal(d.x_train, X) and np.array_equal(d.x_val, X[:2]) and d.splits["validation"] == 2
    assert d.digest == digest(X, Y.astype(np.uint8), X[:2], Y[:2].astype(np.uint8), X_TEST, Y_TEST.astype(np.uint8))


def test_tuples_and_datasets_through_the_registry():
    d = registry.load((X, Y, X_TEST, Y_TEST))
    assert registry.load(((X, Y), (X_TEST, Y_TEST))).digest == d.digest  # keras.datasets' load_data() layout
    assert registry.load(d) is d and registry.shape((X, Y, X_TEST, Y_TEST)) == ((5, 4), 3)
    assert registry.load((X, Y, X_TEST, Y_TEST), val_split=3).splits["validation"] == 3
    with pytest.raises(DataError, match="a Dataset is split already"):
        registry.load(d, val_split=3)
    with pytest.raises(DataError, match="give .x_train, y_train, x_test, y_test."):
        registry.load((X, Y, X_TEST))


@pytest.mark.full_data
def test_fashion_mnist_as_arrays_is_the_built_in_exactly(real_data):
    x = np.concatenate([real_data.x_val, real_data.x_train])  # the 60,000 training images as published
    y = np.concatenate([real_data.y_val, real_data.y_train]).astype(np.int64)  # as a user's file may type them
    d = Dataset(x, y, real_data.x_test, real_data.y_test, class_names=real_data.class_names)
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        a, b = getattr(d, name), getattr(real_data, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    assert d.digest == real_data.digest


def with_nan(x):
    x = x.astype(np.float32)
    x[3, 2, 1] = np.nan
    return x


def with_256(x):
    x = x.astype(np.int64)
    x[3, 1, 2] = 256
    return x


def ragged():
    return [np.zeros((5, 4)), np.zeros((4, 4))]


# (keyword arguments replacing the good ones, fragments of the one-line error)
BAD = [
    ({"x_train": X.astype(bool)}, ["x_train", "dtype bool", "uint8 or float"]),
    ({"x_train": X.astype(object)}, ["x_train", "object array"]),
    ({"x_test": X_TEST.astype(complex)}, ["x_test", "complex128"]),
    ({"x_train": X.astype(str)}, ["x_train", "dtype <U"]),
    ({"x_train": ragged(), "y_train": [0, 1]}, ["x_train", "ragged"]),
    ({"x_train": X[0]}, ["x_train", "shape (5, 4)", "(N, H, W)"]),
    ({"x_train": np.zeros((40, 2, 2, 65), np.uint8)}, ["x_train", "1 to 64 channels"]),
    ({"x_train": np.zeros((40, 0, 4), np.uint8)}, ["x_train", "H, W >= 1"]),
    ({"x_train": np.zeros((2, 4097, 4097), np.uint8), "y_train": [0, 1]}, ["more than 16,777,216 values"]),
    ({"x_train": with_256(X)}, ["x_train", "pixel 256 at (3, 1, 2) outside 0..255"]),
    ({"x_train": with_nan(X), "x_test": X_TEST.astype(np.float32)}, ["x_train", "pixel (3, 2, 1) is nan"]),
    ({"x_test": X_TEST.astype(np.float64) * 1e300}, ["x_test", "is inf (as float32)"]),
    ({"x_test": X_TEST.astype(np.float32)}, ["x_test", "float32 images, but x_train's are uint8"]),
    ({"x_test": X_TEST[:, :, :3]}, ["x_test", "(5, 3), but x_train's are (5, 4)"]),
    ({"x_train": X[:0], "y_train": Y[:0]}, ["x_train: no images"]),
    ({"x_test": X_TEST[:0], "y_test": Y_TEST[:0]}, ["x_test: no images"]),
    ({"y_train": Y.astype(np.float32)}, ["y_train", "labels must be integers"]),
    ({"y_train": Y.astype(bool)}, ["y_train", "labels must be integers"]),
    ({"y_train": np.stack([Y, Y], 1)}, ["y_train", "shape (40, 2)", "1-D"]),
    ({"y_test": Y_TEST[:5]}, ["y_test", "5 labels for the 9 images of x_test"]),
    ({"y_test": Y_TEST - 1}, ["y_test", "label -1 at index 0 is negative"]),
    ({"class_names": ["a", "b"]}, ["y_train", "label 2 at index 2 outside 0..1"]),
    ({"y_test": Y_TEST * 4}, ["class 3 '3' has no training image"]),  # no names: labels up to 8 make 9 classes
    ({"y_train": Y * 0, "y_test": Y_TEST * 0}, ["1 class ['0']", "at least 2"]),
    ({"y_train": np.where(Y == 1, 0, Y)}, ["class 1 '1' has no training image"]),
    ({"y_train": np.sort(Y), "val_split": 14}, ["class 0 '0' has no training image", "first 14", "validation"]),
    ({"y_train": Y + 10**6}, ["more than 100,000 classes"]),
    ({"class_names": ["a", "b\n\x1b[31m", "c"]}, ["class_names[1]", "printable"]),
    ({"class_names": ["a", "", "c"]}, ["class_names[1]", "printable"]),
    ({"class_names": ["a", "b", "a"]}, ["class_names[2]", "repeats class_names[0]"]),
    ({"class_names": "abc"}, ["class_names", "a list of str"]),
    ({"class_names": ["a", 2, "c"]}, ["class_names[1]", "not a str"]),
    ({"val_split": 0}, ["val_split", ">= 1", "got 0"]),
    ({"val_split": 2.0}, ["val_split", "got 2.0"]),
    ({"val_split": True}, ["val_split", "got True"]),
    ({"val_split": 40}, ["x_train: 40 images, too few to hold out 40"]),
    ({"x_val": X[:2]}, ["x_val and y_val together"]),
    ({"x_val": X[:2], "y_val": Y[:2], "val_split": 2}, ["or val_split, not both"]),
    ({"x_val": X[:0], "y_val": Y[:0]}, ["x_val: no images"]),
    ({"x_val": X[:2, :1], "y_val": Y[:2]}, ["x_val", "(1, 4), but x_train's are (5, 4)"]),
]


@pytest.mark.parametrize("change,fragments", BAD, ids=[f[-1][:40] for _, f in BAD])
def test_every_bad_array_is_one_line_naming_it(change, fragments):
    args = {"x_train": X, "y_train": Y, "x_test": X_TEST, "y_test": Y_TEST} | change
    with pytest.raises(DataError) as caught:
        Dataset(**args)
    message = str(caught.value)
    assert len(message.splitlines()) == 1 and len(message) < 300, message
    for fragment in fragments:
        assert fragment in message, message
