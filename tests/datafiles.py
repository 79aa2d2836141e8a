"""Data files as their formats' specifications write them, independently of normlab's readers: the tests' references."""

import hashlib
import struct

import numpy as np


def idx_bytes(a: np.ndarray, type_byte: int = 0x08) -> bytes:
    """IDX: two zero bytes, the element type, ndim, big-endian uint32 dims, then the bytes."""
    return struct.pack(f">2xBB{a.ndim}I", type_byte, a.ndim, *a.shape) + a.astype(np.uint8).tobytes()


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()
