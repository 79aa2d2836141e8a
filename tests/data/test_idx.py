"""The IDX reader accepts exactly well-formed uint8 files and rejects everything else with a DataError."""

import gzip
import hashlib
import os
import tempfile
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datafiles import idx_bytes
from normlab.data.idx import read_idx, read_idx_file
from normlab.errors import DataError


FUZZ = settings(max_examples=int(os.environ.get("NORMLAB_FUZZ_EXAMPLES", "1000")), deadline=2000, derandomize=True)
ARRAY = np.random.default_rng(0).integers(0, 256, (3, 4, 5), dtype=np.uint8)
VALID = idx_bytes(ARRAY)


@pytest.mark.parametrize("shape", [(7,), (3, 4), (2, 3, 4), (1, 2, 3, 4), (0, 28, 28)])
def test_round_trip(shape):
    a = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    got = read_idx(idx_bytes(a), "x")
    assert got.dtype == np.uint8 and got.shape == shape and np.array_equal(got, a)
    got[...] = 0  # writable: callers may shuffle in place


@pytest.mark.parametrize("raw, problem", [
    (b"", "too short"),
    (b"\x01" + VALID[1:], "bad magic"),
    (VALID[:2] + b"\x0d" + VALID[3:], "element type 0x0d"),
    (b"\x00\x00\x08\x00", "0 dimensions"),
    (b"\x00\x00\x08\x05" + bytes(20), "5 dimensions"),
    (VALID[:9], "truncated header"),
    (VALID[:-1], "truncated"),
    (VALID + b"\x00", "1 trailing bytes"),
])
def test_malformed(raw, problem):
    with pytest.raises(DataError, match=problem) as e:
        read_idx(raw, "some-file")
    assert "some-file" in str(e.value) and "normlab data" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("gz", [False, True])
def test_file_and_hash(tmp_path, gz):
    path = tmp_path / ("a.gz" if gz else "a")
    path.write_bytes(gzip.compress(VALID, mtime=0) if gz else VALID)
    got, sha = read_idx_file(path)
    assert np.array_equal(got, ARRAY) and sha == hashlib.sha256(VALID).hexdigest()


@pytest.mark.parametrize("content", [gzip.compress(VALID, mtime=0)[:-10], VALID, b"",
                                     gzip.compress(VALID, mtime=0) + b"junk"])
def test_bad_gzip(tmp_path, content):
    path = tmp_path / "a.gz"
    path.write_bytes(content)
    with pytest.raises(DataError, match="a.gz"):
        read_idx_file(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="cannot open"):
        read_idx_file(tmp_path / "nope")


def reference(raw: bytes) -> np.ndarray | str:
    """An independent decoder of the layout: the array a well-formed file holds, or the problem the reader must
    name for a malformed one (its checks in the reader's order)."""
    if len(raw) < 4:
        return "too short for an IDX header"
    if raw[:2] != b"\x00\x00":
        return "bad magic"
    if raw[2] != 0x08:
        return f"element type 0x{raw[2]:02x} is not uint8"
    if not 1 <= raw[3] <= 4:
        return f"{raw[3]} dimensions, expected 1 to 4"
    start = 4 + 4 * raw[3]
    if len(raw) < start:
        return "truncated header"
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(raw[3])]
    size = int(np.prod(dims, dtype=object))
    if len(raw) - start < size:
        return f"truncated: {len(raw) - start} of {size} data bytes"
    if len(raw) - start > size:
        return f"{len(raw) - start - size} trailing bytes"
    return np.array(list(raw[start:]), dtype=np.uint8).reshape(dims)


def assert_read_as_reference(read, raw: bytes, name: str) -> None:
    """``read()`` returns exactly the array ``reference(raw)`` decodes, or raises the one-line DataError it names."""
    expected = reference(raw)
    if isinstance(expected, str):
        with pytest.raises(DataError) as caught:
            read()
        message = str(caught.value)
        assert name in message and expected in message and "normlab data" in message and "\n" not in message, message
    else:
        got = read()
        assert got.dtype == np.uint8 and got.shape == expected.shape and np.array_equal(got, expected)


@pytest.mark.fuzz
@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes(raw):
    assert_read_as_reference(lambda: read_idx(raw, "fuzz"), raw, "fuzz")


@pytest.mark.fuzz
@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), max_size=4),
       st.integers(-3, 3))
def test_mutated_valid(edits, resize):
    raw = bytearray(VALID)
    for i, b in edits:
        raw[i] = b
    raw = bytes(raw[:len(raw) + resize] if resize < 0 else raw + bytes(resize))
    assert_read_as_reference(lambda: read_idx(raw, "fuzz"), raw, "fuzz")


GZ = gzip.compress(VALID, mtime=0)


@pytest.mark.fuzz
@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(GZ) - 1), st.integers(0, 255)), max_size=4),
       st.integers(0, len(GZ)))
def test_mutated_gzip_file(edits, keep):
    """Damaged archives through the file reader: what Python's one-shot ``gzip.decompress`` makes of them, read as
    ``reference`` says, and an archive it cannot decompress an "unreadable" DataError (gzip, zlib and EOF errors)."""
    raw = bytearray(GZ)
    for i, b in edits:
        raw[i] = b
    raw = bytes(raw[:keep])
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "fuzz-idx1-ubyte.gz")
        with open(path, "wb") as f:
            f.write(raw)
        read = lambda: read_idx_file(path)[0]
        try:
            content = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error):
            with pytest.raises(DataError, match="fuzz-idx1-ubyte.gz: unreadable"):
                read()
        else:
            assert_read_as_reference(read, content, "fuzz-idx1-ubyte.gz")
