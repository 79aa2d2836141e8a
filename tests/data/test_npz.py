"""``.npz`` datasets: what ``np.savez`` writes reads back as the arrays given (C and Fortran order, either byte
order, compressed or not); every broken or hostile file is one line, and none is read past what it declares."""

import io
import os
import struct
import zipfile
import zlib

import numpy as np
import pytest

from datafiles import refused_in_one_line
from normlab.data import npz, registry
from normlab.data.dataset import Dataset
from normlab.errors import DataError

RNG = np.random.default_rng(1)
X = RNG.integers(0, 256, (30, 6, 5), dtype=np.uint8)
Y = np.arange(30) % 3
X_TEST = RNG.integers(0, 256, (8, 6, 5), dtype=np.uint8)
Y_TEST = np.arange(8) % 3
GOOD = {"x_train": X, "y_train": Y, "x_test": X_TEST, "y_test": Y_TEST}


def npy(array: np.ndarray) -> bytes:
    """An ``.npy`` file in memory (NumPy's own writer: the format is NumPy's)."""
    f = io.BytesIO()
    np.save(f, array, allow_pickle=True)
    return f.getvalue()


def header(shape, descr="|u1") -> bytes:
    """An ``.npy`` 1.0 header written from the format's description: magic, version, length, padded dict."""
    text = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}".encode()
    text += b" " * (-(10 + len(text) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text


def stored_zip(members: dict[str, tuple[bytes, int]]) -> bytes:
    """A zip of stored members, each ``name: (data, declared size)``, sizes in ZIP64 extra fields (APPNOTE 4.5.3),
    so a member can declare any size whatever it holds."""
    local, central = b"", b""
    for name, (data, size) in members.items():
        crc, offset, raw = zlib.crc32(data), len(local), name.encode()
        local += (struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, 0, 0, 0x21, crc, 0xFFFFFFFF, 0xFFFFFFFF, len(raw), 20)
                  + raw + struct.pack("<HHQQ", 1, 16, size, len(data)) + data)
        central += (struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, 0, 0, 0x21, crc, 0xFFFFFFFF,
                                0xFFFFFFFF, len(raw), 28, 0, 0, 0, 0, 0xFFFFFFFF)
                    + raw + struct.pack("<HHQQQ", 1, 24, size, len(data), offset))
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central), len(local), 0)
    return local + central + end


def test_the_independent_zip_writer_is_a_zip_numpy_reads(tmp_path):
    path = tmp_path / "own.npz"
    path.write_bytes(stored_zip({f"{k}.npy": (npy(v), len(npy(v))) for k, v in GOOD.items()}))
    with np.load(path) as f:
        assert all(np.array_equal(f[k], v) for k, v in GOOD.items())
    assert registry.load(str(path)).digest == Dataset(*GOOD.values()).digest


@pytest.mark.parametrize("compressed", [False, True])
def test_what_savez_writes_reads_back_as_given(tmp_path, compressed):
    path = tmp_path / "own.npz"
    (np.savez_compressed if compressed else np.savez)(
        path, x_train=np.asfortranarray(X.astype(">f8") / 255), y_train=Y.astype(">i2"), x_test=X_TEST / 255,
        y_test=Y_TEST, class_names=np.array(["ant", "bee", "cicada"]))
    d = npz.load(path, val_split=5)
    assert d.x_train.dtype == np.float32 and np.array_equal(d.x_train, (X[5:] / 255).astype(np.float32))
    assert np.array_equal(d.x_val, (X[:5] / 255).astype(np.float32)) and np.array_equal(d.y_train, Y[5:])
    assert d.class_names == ("ant", "bee", "cicada") and d.name == str(path) and d.source == str(path.resolve())
    assert d.digest == Dataset(X / 255, Y, X_TEST / 255, Y_TEST, val_split=5).digest


def test_own_validation_arrays_and_default_names(tmp_path):
    path = tmp_path / "own.npz"
    np.savez(path, **GOOD, x_val=X[:4], y_val=Y[:4])
    d = registry.load(str(path))
    assert np.array_equal(d.x_train, X) and np.array_equal(d.x_val, X[:4]) and d.class_names == ("0", "1", "2")
    assert registry.shape(str(path)) == ((6, 5), 3)


@pytest.mark.full_data
def test_fashion_mnist_repacked_is_the_built_in_exactly(real_data, tmp_path):
    """keras.datasets' layout: the 60,000 training images in their published order, validation not split off."""
    path = tmp_path / "fashion.npz"
    np.savez(path, x_train=np.concatenate([real_data.x_val, real_data.x_train]),
             y_train=np.concatenate([real_data.y_val, real_data.y_train]), x_test=real_data.x_test,
             y_test=real_data.y_test)
    d = registry.load(str(path))
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        a, b = getattr(d, name), getattr(real_data, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    assert d.digest == real_data.digest and d.splits == real_data.splits


def members(**change) -> dict[str, tuple[bytes, int]]:
    files = {f"{k}.npy": npy(v) for k, v in (GOOD | change).items() if v is not None}
    return {name: (data, len(data)) for name, data in files.items()}


def bad_files(tmp_path) -> dict[str, tuple[bytes, list[str]]]:
    """Each broken file's content and fragments of its one-line error."""
    good = stored_zip(members())
    objects = stored_zip(members(x_train=np.array([np.zeros(3), "a", None], dtype=object)))
    lie = header((10**6, 10**6)) + bytes(100)  # a terabyte declared, 100 bytes held: refused, not allocated
    lying_npy = stored_zip(members() | {"x_train.npy": (lie, len(lie))})
    declared_bomb = stored_zip(members() | {"x_train.npy": (npy(X), 9 << 30)})
    crc = bytearray(good)
    crc[250] ^= 0xFF  # a byte of x_train's pixels (after 61 bytes of zip header, 128 of .npy header): CRC-32 fails
    return {
        "garbage": (b"not a zip at all" * 10, ["not a readable .npz", "not a zip file"]),
        "truncated": (good[: len(good) // 2], ["not a readable .npz"]),
        "crc": (bytes(crc), ["not a readable .npz", "CRC"]),
        "typo": (stored_zip(members(x_train=None) | {"x_trian.npy": members()["x_train.npy"]}),
                 ["unknown member 'x_trian.npy'", "did you mean 'x_train'?", "optionally x_val"]),
        "missing": (stored_zip(members(y_test=None)), ["lacks y_test"]),
        "objects": (objects, ["x_train", "Python objects", "plain numeric (and str) arrays only"]),
        "lying_npy": (lying_npy, ["x_train", "declares (1000000, 1000000) uint8", "holds 100"]),
        "declared_bomb": (declared_bomb, ["expand to", "x_train.npy: 9,663,676,416", "more than the 8,589,934,592"]),
        "bad_names": (stored_zip(members(class_names=np.array([1, 2, 3]))), ["class_names is int64", "1-D str"]),
        "bad_labels": (stored_zip(members(y_test=Y_TEST.astype(np.float32))), ["y_test", "labels must be integers"]),
        "nan": (stored_zip(members(x_train=np.full((30, 6, 5), np.nan))), ["x_train", "is nan"]),
    }


BAD = ["garbage", "truncated", "crc", "typo", "missing", "objects", "lying_npy", "declared_bomb", "bad_names",
       "bad_labels", "nan"]


@pytest.mark.parametrize("case", BAD)
def test_every_broken_file_is_one_line_naming_it(tmp_path, case):
    content, fragments = bad_files(tmp_path)[case]
    path = tmp_path / "own.npz"
    path.write_bytes(content)
    refused_in_one_line(lambda: registry.load(str(path)), path, *fragments)


def test_a_member_expanding_past_the_cap_is_refused_from_the_directory(tmp_path):
    """A real deflate bomb (1 MB of zeros in ~1 KB): refused on its declared size, before any of it is read."""
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, **GOOD | {"x_train": np.zeros((1 << 20, 1, 1), np.uint8),
                                        "y_train": np.zeros(1 << 20, int)})
    assert path.stat().st_size < 100_000
    with pytest.raises(DataError, match="expand to .* more than the 500,000 read"):
        npz.read(path, max_bytes=500_000)


def test_a_directory_that_understates_a_member_is_caught_by_its_crc(tmp_path):
    """A member holding more than it declares (directory and .npy header agree on 10 bytes; 900 follow): zipfile
    stops at the declared size, and the CRC-32 of the whole member fails."""
    head = header((10,))
    path = tmp_path / "liar.npz"
    path.write_bytes(stored_zip(members() | {"x_train.npy": (head + X.tobytes(), len(head) + 10)}))
    with pytest.raises(DataError, match="not a readable .npz .Bad CRC-32"):
        npz.read(path)


@pytest.mark.parametrize("kind", ["fifo", "dev_zero", "folder"])
def test_a_path_that_is_not_a_regular_file_is_refused_at_once(tmp_path, kind):
    path = tmp_path / "x.npz"
    if kind == "fifo":
        os.mkfifo(path)  # opening it to read would wait forever for a writer
    elif kind == "dev_zero":
        path.symlink_to("/dev/zero")
    else:
        path.mkdir()
    with pytest.raises(DataError, match="x.npz: not a regular file"):
        registry.load(str(path))


def test_paths_that_are_neither(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="notes.txt: not an .npz file or an image folder"):
        registry.load(str(tmp_path / "notes.txt"))
    with pytest.raises(DataError, match="gone.npz: cannot open"):
        registry.load(str(tmp_path / "gone.npz"))
    with pytest.raises(DataError, match="gone: no such file or folder"):
        registry.load(str(tmp_path / "gone"))
    np.savez(tmp_path / "own.npz", **GOOD)
    with pytest.raises(DataError, match="a data folder only says where a built-in"):
        registry.load(str(tmp_path / "own.npz"), data_dir=tmp_path)


def test_a_zip_with_a_duplicate_member(tmp_path):
    path = tmp_path / "twice.npz"
    with zipfile.ZipFile(path, "w") as z, pytest.warns(UserWarning, match="Duplicate name"):
        for name, (data, _) in [*members().items(), ("y_test.npy", members()["y_test.npy"])]:
            z.writestr(name, data)
    with pytest.raises(DataError, match="y_test.npy appears twice"):
        npz.read(path)
