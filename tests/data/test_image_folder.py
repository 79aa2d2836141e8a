"""Image folders: both layouts read back as the arrays written, in the documented order (checked against an order
worked out here by hand and by a loop of its own), the same dataset as an ``.npz`` of those arrays in that order;
every broken folder or image is one line naming it."""

import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datafiles import refused_in_one_line
from normlab.data import image_folder, registry
from normlab.data.dataset import Dataset
from normlab.data.image_folder import spread
from normlab.errors import DataError

RNG = np.random.default_rng(2)


def put(path: Path, array: np.ndarray, mode: str | None = None, **options) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    (Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)).save(path, **options)
    return array


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int, rows: bytes = b"") -> bytes:
    """A grey 8-bit PNG written from the spec: signature, IHDR, one IDAT of ``rows`` (filter byte + pixels each)."""
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def expected_order(counts):
    """The documented order by a loop of its own: repeatedly take the image whose (i + 1/2) / n is least."""
    taken, order = [0] * len(counts), []
    while len(order) < sum(counts):
        c = min((c for c in range(len(counts)) if taken[c] < counts[c]),
                key=lambda c: ((2 * taken[c] + 1) * math.prod(counts[:c] + counts[c + 1:]), c))  # same denominator
        order.append((c, taken[c]))
        taken[c] += 1
    return order


def test_the_order_spreads_each_class_evenly():
    # class 0: 1/6, 1/2, 5/6; class 1: 1/2; class 2: 1/4, 3/4; the tie at 1/2 goes to class 0
    assert spread([3, 1, 2]) == [(0, 0), (2, 0), (0, 1), (1, 0), (2, 1), (0, 2)]
    assert spread([2, 2]) == [(0, 0), (1, 0), (0, 1), (1, 1)]
    for counts in ([7, 5, 3], [1, 10], [4, 4, 4, 1], [13, 7, 29]):
        assert spread(counts) == expected_order(counts)


def write_classes(folder: Path, counts: dict[str, int], shape=(6, 5)) -> dict[str, list[np.ndarray]]:
    """Class folders of random images; names that sort otherwise than they were written (z before a) by number."""
    written = {}
    for name, n in counts.items():
        names = sorted(f"{chr(ord('z') - i)}{i}.png" for i in range(n))  # z0, y1, x2, ... sorted: by name
        written[name] = [put(folder / name / file, RNG.integers(0, 256, shape, dtype=np.uint8)) for file in names]
    return written


def arrays_in_order(by_class: dict[str, list[np.ndarray]]):
    names = sorted(by_class)
    order = expected_order([len(by_class[n]) for n in names])
    return (np.stack([by_class[names[c]][i] for c, i in order]), np.array([c for c, _ in order]))


def test_class_folders_split_by_test_split_and_read_in_order(tmp_path):
    written = write_classes(tmp_path / "dir", {"moth": 7, "ant": 5, "bee": 3})
    (tmp_path / "dir" / "README.md").write_text("beside the class folders: left alone")
    (tmp_path / "dir" / "ant" / ".DS_Store").write_bytes(b"\0")
    # per class the last ceil(0.2 n) files by name are the test set: moth 2 of 7, ant 1 of 5, bee 1 of 3
    k = {"moth": 2, "ant": 1, "bee": 1}
    x, y = arrays_in_order({c: files[:-k[c]] for c, files in written.items()})
    x_test, y_test = arrays_in_order({c: files[-k[c]:] for c, files in written.items()})
    d = registry.load(str(tmp_path / "dir"))
    assert d.class_names == ("ant", "bee", "moth") and d.splits == {"train": 10, "validation": 1, "test": 4}
    assert np.array_equal(np.concatenate([d.x_val, d.x_train]), x) and np.array_equal(d.x_test, x_test)
    assert np.array_equal(np.concatenate([d.y_val, d.y_train]), y) and np.array_equal(d.y_test, y_test)
    assert d.digest == Dataset(x, y, x_test, y_test).digest and d.source == str((tmp_path / "dir").resolve())
    np.savez(tmp_path / "same.npz", x_train=x, y_train=y, x_test=x_test, y_test=y_test,
             class_names=np.array(d.class_names))
    again = registry.load(str(tmp_path / "same.npz"))
    assert again.digest == d.digest and again.class_names == d.class_names
    assert image_folder.load(tmp_path / "dir", test_split=0.5).splits["test"] == 4 + 3 + 2


def test_a_test_split_is_exact_in_decimal(tmp_path):
    write_classes(tmp_path, {"a": 30, "b": 10}, shape=(1, 1))
    d = image_folder.load(tmp_path, test_split=0.1)  # 0.1 * 30 is 3.0000000000000004 in binary: 3, not 4
    assert np.bincount(d.y_test).tolist() == [3, 1]


def test_train_val_test_folders_and_rgb(tmp_path):
    def split(name, counts):
        return {c: [put(tmp_path / name / c / f"{i:03d}.png", RNG.integers(0, 256, (4, 3, 3), dtype=np.uint8))
                    for i in range(n)] for c, n in counts.items()}
    train, val, test = split("train", {"x": 4, "y": 6}), split("val", {"x": 1, "y": 2}), split("test", {"x": 2, "y": 1})
    d = registry.load(str(tmp_path), val_split=None)
    for got, want in ((d.x_train, train), (d.x_val, val), (d.x_test, test)):
        assert np.array_equal(got, arrays_in_order(want)[0])
    assert d.shape == ((4, 3, 3), 2) and d.x_train.dtype == np.uint8
    with pytest.raises(DataError, match="has its own val/ folder"):
        registry.load(str(tmp_path), val_split=2)


def test_bilevel_palette_and_jpeg_values(tmp_path):
    """Per class three files, the last (1.*) the test image, 0.* the first training one: bilevel reads as grey
    0/255, palette as its colours, JPEG within its loss, suffixes in any case."""
    for name in ("grey/a", "grey/b"):
        put(tmp_path / name / "0b.png", np.zeros((5, 4), np.uint8))
    for name in ("colour/a", "colour/b"):
        put(tmp_path / name / "0b.png", np.zeros((16, 16, 3), np.uint8))
    bits = RNG.integers(0, 2, (5, 4)).astype(bool)
    put(tmp_path / "grey" / "a" / "0.png", np.zeros((5, 4), np.uint8))
    put(tmp_path / "grey" / "a" / "1.png", bits, "1")
    put(tmp_path / "grey" / "b" / "0.PNG", np.full((5, 4), 7, np.uint8))
    put(tmp_path / "grey" / "b" / "1.png", np.full((5, 4), 9, np.uint8))
    grey = image_folder.load(tmp_path / "grey")
    assert np.array_equal(grey.x_test[0], bits.astype(np.uint8) * 255) and grey.x_test[1].max() == 9
    palette = Image.new("P", (16, 16))
    palette.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    palette.putdata([0, 1] * 128)
    palette.save(tmp_path / "colour" / "a" / "0.png")
    smooth = np.tile(np.linspace(0, 250, 16).astype(np.uint8)[:, None, None], (1, 16, 3))
    put(tmp_path / "colour" / "a" / "1.jpg", smooth, quality=95)
    put(tmp_path / "colour" / "b" / "0.JPEG", smooth[::-1].copy())
    rgb = put(tmp_path / "colour" / "b" / "1.png", RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    colour = image_folder.load(tmp_path / "colour")
    first = np.concatenate([colour.x_val, colour.x_train])[0]  # class a's first training image
    assert np.array_equal(first, np.array([[0, 0, 0], [10, 20, 30]] * 128, np.uint8).reshape(16, 16, 3))
    assert np.abs(colour.x_test[0].astype(int) - smooth).max() <= 8 and np.array_equal(colour.x_test[1], rgb)


# Each broken folder (made in tmp_path/dir, with good class folders 'a' and 'b' of 3 grey 6x5 images each unless the
# maker changes them) and fragments of its one-line error.
def good(folder: Path):
    write_classes(folder, {"a": 3, "b": 3})


def bad(maker, *fragments):
    return maker, fragments


def truncated(folder):
    good(folder)
    whole = png(5, 6, b"".join(b"\0" + RNG.bytes(5) for _ in range(6)))  # random pixels: no shorter when deflated
    (folder / "a" / "zz.png").write_bytes(whole[:len(whole) // 2])  # the header whole, the pixels cut


BAD = {
    "empty_class": bad(lambda f: (good(f), (f / "c").mkdir()), "c: class 'c' has no image"),
    "no_class": bad(lambda f: f.mkdir(parents=True), "no class folder"),
    "not_an_image": bad(lambda f: (good(f), (f / "a" / "labels.csv").write_text("x")),
                        "a/labels.csv: not a .png, .jpg, .jpeg image", "only dot-files are skipped"),
    "nested": bad(lambda f: (good(f), (f / "a" / "more").mkdir()), "a/more: a folder inside a class folder"),
    "outside": bad(lambda f: (good(f), put(f / "loose.png", np.zeros((6, 5), np.uint8))),
                   "loose.png: an image outside a class folder"),
    "size": bad(lambda f: (good(f), put(f / "b" / "zz.png", np.zeros((7, 5), np.uint8))),
                "b/zz.png: shape (7, 5), but", "has (6, 5)"),
    "rgb_among_grey": bad(lambda f: (good(f), put(f / "b" / "zz.png", np.zeros((6, 5, 3), np.uint8))),
                          "b/zz.png: shape (6, 5, 3)"),
    "rgba": bad(lambda f: (good(f), put(f / "b" / "zz.png", np.zeros((6, 5, 4), np.uint8))), "zz.png: mode RGBA"),
    "16_bit": bad(lambda f: (good(f), put(f / "b" / "zz.png", np.zeros((6, 5), np.uint16))), "zz.png: mode I;16"),
    "truncated": bad(truncated, "a/zz.png: not a readable PNG or JPEG image"),
    "garbage": bad(lambda f: (good(f), (f / "a" / "zz.png").write_bytes(os.urandom(300))),
                   "a/zz.png: not a PNG or JPEG image"),
    "bomb": bad(lambda f: (good(f), (f / "a" / "zz.png").write_bytes(png(30000, 30000))),
                "a/zz.png: declares more pixels than an image may hold"),
    "past_the_cap": bad(lambda f: (good(f), (f / "a" / "zz.png").write_bytes(png(5000, 5000))),
                        "a/zz.png: 5000x5000 L pixels, more than the 16,777,216 values"),
    "fifo": bad(lambda f: (good(f), os.mkfifo(f / "a" / "zz.png")), "a/zz.png: not a regular file"),
    "dev_zero": bad(lambda f: (good(f), (f / "a" / "zz.png").symlink_to("/dev/zero")), "zz.png: not a regular file"),
    "one_image": bad(lambda f: (good(f), write_classes(f, {"c": 1})), "class 'c' has 1 image: test_split 0.2"),
    "control_name": bad(lambda f: (good(f), write_classes(f, {"c\x1b[2J": 3})),
                        "class_names[2]: 'c\\x1b[2J'", "printable"),
    "no_test": bad(lambda f: write_classes(f / "train", {"a": 3}), "has train/ but no test/"),
    "odd_split": bad(lambda f: (write_classes(f / "train", {"a": 3, "b": 3}), write_classes(f / "test", {"a": 1}),
                                write_classes(f / "tset", {"a": 1})), "tset: beside train/"),
    "other_classes": bad(lambda f: (write_classes(f / "train", {"a": 3, "b": 3}),
                                    write_classes(f / "test", {"a": 1, "c": 1})),
                         "test: its class folders differ from train/'s", "missing: ['b']", "not in train/: ['c']"),
}


@pytest.mark.parametrize("case", BAD)
def test_every_broken_folder_is_one_line_naming_it(tmp_path, case):
    maker, fragments = BAD[case]
    folder = tmp_path / "dir"
    maker(folder)
    refused_in_one_line(lambda: registry.load(str(folder)), folder, *fragments)


def test_bad_test_splits(tmp_path):
    good(tmp_path / "dir")
    for value in (0, 1, 1.5, -0.1, True, "0.2"):
        with pytest.raises(DataError, match="test_split must be a fraction between 0 and 1"):
            image_folder.load(tmp_path / "dir", test_split=value)
    write_classes(tmp_path / "split" / "train", {"a": 2, "b": 2})
    write_classes(tmp_path / "split" / "test", {"a": 1, "b": 1})
    with pytest.raises(DataError, match="has its own test/ folder"):
        image_folder.load(tmp_path / "split", test_split=0.2)


@pytest.mark.full_data
def test_fashion_mnist_as_png_files_is_the_same_dataset_as_an_npz(real_data, tmp_path):
    """The acceptance: 2,000 training and 500 test images written as DIR/{train,test}/<class>/<index>.png, and the
    same images in an .npz in the documented order: the same arrays, class names and digest."""
    folder, names = tmp_path / "fashion", [f"{c}-{n.replace('/', '+')}" for c, n in enumerate(real_data.class_names)]
    arrays = {}
    for split, x, y in (("train", real_data.x_train[:2000], real_data.y_train[:2000]),
                        ("test", real_data.x_test[:500], real_data.y_test[:500])):
        by_class = {names[c]: [] for c in range(10)}
        for index, (image, label) in enumerate(zip(x, y)):
            by_class[names[label]].append(put(folder / split / names[label] / f"{index:05d}.png", image))
        arrays[split] = arrays_in_order(by_class)
    np.savez(tmp_path / "fashion.npz", x_train=arrays["train"][0], y_train=arrays["train"][1],
             x_test=arrays["test"][0], y_test=arrays["test"][1], class_names=np.array(names))
    from_folder, from_npz = registry.load(str(folder)), registry.load(str(tmp_path / "fashion.npz"))
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        a, b = getattr(from_folder, name), getattr(from_npz, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    assert from_folder.digest == from_npz.digest and from_folder.class_names == tuple(names)
    assert from_folder.splits == {"train": 1800, "validation": 200, "test": 500}
    # validation holds every class in its share of the training images (the point of the order)
    shares = np.bincount(from_folder.y_val, minlength=10) / 200 - np.bincount(arrays["train"][1]) / 2000
    assert np.abs(shares).max() < 0.01
