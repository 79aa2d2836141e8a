"""The IDX reader accepts exactly well-formed uint8 files and rejects everything else with a DataError."""

import gzip
import hashlib
import os
import struct
import tempfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from normlab.data.idx import read_idx, read_idx_file
from normlab.errors import DataError


def idx_bytes(a: np.ndarray, type_byte: int = 0x08) -> bytes:
    """An independent writer: magic, type, ndim, big-endian uint32 dims, payload."""
    return struct.pack(f">2xBB{a.ndim}I", type_byte, a.ndim, *a.shape) + a.astype(np.uint8).tobytes()


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


def _fuzz(raw):
    try:
        assert read_idx(raw, "fuzz").dtype == np.uint8
    except DataError:
        pass


@pytest.mark.fuzz
@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes(raw):
    _fuzz(raw)


@pytest.mark.fuzz
@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), max_size=4),
       st.integers(-3, 3))
def test_mutated_valid(edits, resize):
    raw = bytearray(VALID)
    for i, b in edits:
        raw[i] = b
    _fuzz(bytes(raw[:len(raw) + resize] if resize < 0 else raw + bytes(resize)))


GZ = gzip.compress(VALID, mtime=0)


@pytest.mark.fuzz
@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(GZ) - 1), st.integers(0, 255)), max_size=4),
       st.integers(0, len(GZ)))
def test_mutated_gzip_file(edits, keep):
    """Damaged archives through the file reader: only DataError escapes (gzip, zlib and EOF errors included)."""
    raw = bytearray(GZ)
    for i, b in edits:
        raw[i] = b
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "fuzz-idx1-ubyte.gz")
        with open(path, "wb") as f:
            f.write(bytes(raw[:keep]))
        try:
            array, _ = read_idx_file(path)
            assert array.dtype == np.uint8
        except DataError:
            pass
