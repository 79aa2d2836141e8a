"""Strict reader for IDX, the format MNIST-style datasets ship in.

Layout: two zero bytes, an element-type byte (0x08 = uint8, the only type Fashion-MNIST uses), a byte ndim,
ndim big-endian uint32 sizes, then exactly prod(sizes) bytes. Nothing looser is accepted: a file off by one
byte is a broken download, and reading it anyway would surface as a shape error far from the cause.
"""

import gzip
import hashlib
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from normlab.errors import DataError
from normlab.files import FileProblem, display, one_line, open_regular

MAX_BYTES = 64 << 20  # Fashion-MNIST's largest file is 47 MB; callers that know the exact size pass it


def archive_cap(size: int) -> int:
    """The most bytes a gzip archive of ``size`` bytes can take: deflate adds at most ~0.03% plus headers."""
    return size + size // 100 + 4096


REFETCH = "replace it with a fresh copy (`normlab data` downloads one)"


def _fail(name: str, problem: str) -> DataError:
    return DataError(f"{name}: {problem}; {REFETCH}")


def read_idx(raw: bytes, name: str) -> np.ndarray:
    """Parse one IDX file held in memory into a writable uint8 array of its declared shape."""
    if len(raw) < 4:
        raise _fail(name, f"{len(raw)} bytes is too short for an IDX header")
    if raw[0] or raw[1]:
        raise _fail(name, f"bad magic 0x{raw[:2].hex()} (IDX starts with 0x0000), not an IDX file")
    if raw[2] != 0x08:
        raise _fail(name, f"element type 0x{raw[2]:02x} is not uint8 (0x08)")
    ndim = raw[3]
    if not 1 <= ndim <= 4:
        raise _fail(name, f"{ndim} dimensions, expected 1 to 4")
    start = 4 + 4 * ndim
    if len(raw) < start:
        raise _fail(name, f"truncated header ({len(raw)} of {start} bytes)")
    dims = struct.unpack(f">{ndim}I", raw[4:start])
    size, payload = math.prod(dims), len(raw) - start
    if payload < size:
        raise _fail(name, f"truncated: {payload} of {size} data bytes for shape {dims}")
    if payload > size:
        raise _fail(name, f"{payload - size} trailing bytes after the data for shape {dims}")
    return np.frombuffer(raw, np.uint8, size, start).reshape(dims).copy()


def read_idx_file(path: str | Path, max_bytes: int = MAX_BYTES) -> tuple[np.ndarray, str]:
    """Read a plain or `.gz` IDX file of at most ``max_bytes`` (decompressed); also return their SHA-256.

    Hashing the decompressed content lets a recompressed copy (Debian's) or an uncompressed one pass the
    same check as the publisher's archive. Decompression streams and stops one byte past ``max_bytes``, so a
    small archive that expands to gigabytes costs no more memory than a good file.
    """
    path = Path(path)
    gz = path.suffix == ".gz"
    try:
        with open_regular(path, archive_cap(max_bytes) if gz else max_bytes) as f:
            raw = (gzip.GzipFile(fileobj=f, mode="rb") if gz else f).read(max_bytes + 1)
    except FileProblem as e:
        raise _fail(display(path), str(e).removeprefix(f"{one_line(path)}: ")) from None
    except (EOFError, OSError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise _fail(display(path), f"unreadable ({e})") from e
    if len(raw) > max_bytes:
        raise _fail(display(path), f"{'expands to' if gz else 'holds'} more than the {max_bytes:,} bytes expected")
    return read_idx(raw, display(path)), hashlib.sha256(raw).hexdigest()
