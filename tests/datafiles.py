"""Data files as their formats' specifications write them, independently of normlab's readers: the tests' references."""

import hashlib
import struct

import numpy as np


def idx_bytes(a: np.ndarray, type_byte: int = 0x08) -> bytes:
    """IDX: two zero bytes, the element type, ndim, big-endian uint32 dims, then the bytes."""
    return struct.pack(f">2xBB{a.ndim}I", type_byte, a.ndim, *a.shape) + a.astype(np.uint8).tobytes()


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def refused_in_one_line(load, where, *fragments) -> str:
    """``load()`` raises a one-line DataError that starts with ``where`` (the file or folder) and holds every fragment."""
    import pytest
    from normlab.errors import DataError
    with pytest.raises(DataError) as caught:
        load()
    message = str(caught.value)
    assert len(message.splitlines()) == 1 and message.startswith(str(where)), message
    for fragment in fragments:
        assert fragment in message, message
    return message
