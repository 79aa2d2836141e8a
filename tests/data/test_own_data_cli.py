"""``normlab data --data PATH``: your own data checked and described; every bad file one line and exit 2, in
bounded memory and without waiting on a FIFO."""

import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from clitools import normlab, one_line_error

RNG = np.random.default_rng(3)
X = RNG.integers(0, 256, (30, 6, 5), dtype=np.uint8)
Y = np.arange(30) % 3
X_TEST = RNG.integers(0, 256, (8, 6, 5), dtype=np.uint8)
Y_TEST = np.arange(8) % 3
GOOD = {"x_train": X, "y_train": Y, "x_test": X_TEST, "y_test": Y_TEST}
LIMIT_MB = 600  # the CLI reading a small file needs far less; an unbounded read or allocation does not fit


def image_folder(folder, counts=(4, 4)):
    for c, n in enumerate(counts):
        (folder / f"class-{c}").mkdir(parents=True)
        for i in range(n):
            Image.fromarray(RNG.integers(0, 256, (6, 5), dtype=np.uint8)).save(folder / f"class-{c}" / f"{i}.png")
    return folder


def png_bomb() -> bytes:
    """A 60-byte PNG whose header declares 30000 x 30000 grey pixels (900 MB decoded)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def test_an_npz_and_an_image_folder_are_described(tmp_path):
    np.savez(tmp_path / "own.npz", **GOOD, class_names=np.array(["ant", "bee", "cicada"]))
    code, out, err = normlab("data", "--data", tmp_path / "own.npz")
    assert code == 0, err
    assert f"read {tmp_path / 'own.npz'} from {tmp_path / 'own.npz'}" in out and "not verified" in out
    assert "train 27 / validation 3 / test 8, 6x5 uint8, 3 classes: ant, bee, cicada" in out
    code, out, err = normlab("data", "--data", image_folder(tmp_path / "images", (5, 10)))
    assert code == 0, err
    assert "train 11 / validation 1 / test 3, 6x5 uint8, 2 classes: class-0, class-1" in out


def npz(path, **change):
    np.savez(path, **{k: v for k, v in (GOOD | change).items() if v is not None})


def folder_with(path, name, content):
    """A good image folder, and in class-0 a file ``name`` holding ``content`` (an array: a PNG of it; None: a
    FIFO)."""
    image_folder(path)
    if content is None:
        os.mkfifo(path / "class-0" / name)
    elif isinstance(content, np.ndarray):
        Image.fromarray(content).save(path / "class-0" / name)
    else:
        (path / "class-0" / name).write_bytes(content)


def with_empty_class(path):
    image_folder(path)
    (path / "class-2").mkdir()


# name -> (the path's name, make it, fragments of the one-line error)
CASES = {
    "bool_images": ("x.npz", lambda p: npz(p, x_train=X > 100), ["x_train", "dtype bool"]),
    "object_array": ("x.npz", lambda p: npz(p, x_train=np.array([X[0], "a"], dtype=object)),
                     ["x_train", "Python objects"]),
    "labels_outside": ("x.npz", lambda p: npz(p, class_names=np.array(["a", "b"])), ["y_train", "outside 0..1"]),
    "nan_pixels": ("x.npz", lambda p: npz(p, x_train=np.where(X == X[2, 3, 4], np.nan, X / 255), x_test=X_TEST / 255),
                   ["x_train", "is nan"]),
    "no_test_image": ("x.npz", lambda p: npz(p, x_test=X_TEST[:0], y_test=Y_TEST[:0]), ["x_test: no images"]),
    "corrupt": ("x.npz", lambda p: p.write_bytes(b"PK\x03\x04" + bytes(200)), ["not a readable .npz"]),
    "typo": ("x.npz", lambda p: npz(p, x_test=None, x_tset=X_TEST), ["unknown member 'x_tset.npy'", "did you mean"]),
    "fifo": ("x.npz", os.mkfifo, ["x.npz: not a regular file"]),
    "sizes_differ": ("images", lambda p: folder_with(p, "big.png", np.zeros((9, 9), np.uint8)),
                     ["big.png: shape (9, 9), but"]),
    "class_without_image": ("images", with_empty_class, ["class 'class-2' has no image"]),
    "unreadable_image": ("images", lambda p: folder_with(p, "bad.png", b"\x89PNG\r\n\x1a\n" + bytes(40)),
                         ["bad.png: not a"]),
    "png_bomb": ("images", lambda p: folder_with(p, "bomb.png", png_bomb()), ["bomb.png: declares more pixels"]),
    "fifo_image": ("images", lambda p: folder_with(p, "pipe.png", None), ["pipe.png: not a regular file"]),
    "neither": ("notes.txt", lambda p: p.write_text("x"), ["notes.txt: not an .npz file or an image folder"]),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_data_is_one_line_and_exit_2(tmp_path, case):
    name, make, fragments = CASES[case]
    make(tmp_path / name)
    code, _, err = normlab("data", "--data", tmp_path / name, limit_mb=LIMIT_MB, timeout=120)
    one_line_error(code, err, *fragments)
