"""An ``.npz`` file as a dataset: ``keras.datasets``' names, ``np.savez(path, x_train=..., y_train=..., x_test=...,
y_test=...)``, optionally ``x_val``, ``y_val`` and ``class_names`` (a 1-D str array).

Read without trusting the file: it must be a regular file of at most ``MAX_BYTES``; each member's size is taken
from the zip directory and its ``.npy`` header, and both are checked before a byte of data is read (a few KB that
declare gigabytes are refused, not allocated); no Python objects (an object array is refused); an unknown member is an
error, so a typo (``x_trian``) cannot quietly leave an array out. The arrays then go through ``Dataset``.
"""

import io
import math
import zipfile
import zlib
from pathlib import Path

import numpy as np

from normlab.data.dataset import Dataset
from normlab.errors import DataError, did_you_mean, shown
from normlab.files import FileProblem, display, one_line, open_regular

REQUIRED = ("x_train", "y_train", "x_test", "y_test")
OPTIONAL = ("x_val", "y_val", "class_names")
MAX_BYTES = 8 << 30    # the file, and its members decompressed together (ImageNet at 64x64 is 15 GB: not here)
HEADER_BYTES = 1 << 16  # an .npy header is a short dict; NumPy itself stops at 10,000 characters
CHUNK = 16 << 20
LAYOUT = f"an .npz holds {', '.join(REQUIRED)} and optionally {', '.join(OPTIONAL)}"


def _header(member, info: zipfile.ZipInfo) -> tuple[np.dtype, tuple[int, ...], bool, int, bytes]:
    """The member's dtype, shape and order from its ``.npy`` header, the header's length, and the bytes read."""
    head = member.read(min(info.file_size, HEADER_BYTES))
    f = io.BytesIO(head)
    version = np.lib.format.read_magic(f)
    if version not in ((1, 0), (2, 0)):  # 3.0 only differs for structured types' non-Latin-1 field names
        raise ValueError(f".npy format version {version[0]}.{version[1]} is not read here")
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(f)
    return dtype, shape, fortran, f.tell(), head


def _member(z: zipfile.ZipFile, info: zipfile.ZipInfo, key: str) -> np.ndarray:
    with z.open(info) as member:
        dtype, shape, fortran, start, head = _header(member, info)
        if dtype.hasobject:
            raise DataError(f"{key}: an array of Python objects, which loading could run code from; normlab reads "
                            f"plain numeric (and str) arrays only")
        count = math.prod(shape)
        declared, held = count * dtype.itemsize, info.file_size - start
        if declared != held:
            raise DataError(f"{key}: its .npy header declares {shown(shape)} {dtype} ({declared:,} bytes) but "
                            f"it holds {held:,}; re-save the file")
        data = head[start:]
        array = np.empty(count, dtype)
        raw = array.view(np.uint8) if dtype.itemsize else np.empty(0, np.uint8)
        raw[:len(data)] = np.frombuffer(data, np.uint8)
        at = len(data)
        while at < declared:  # into place chunk by chunk: no second copy of a large array
            chunk = member.read(min(CHUNK, declared - at))
            if not chunk:
                raise EOFError(f"{key}.npy ends after {at:,} of {declared:,} data bytes")
            raw[at:at + len(chunk)] = np.frombuffer(chunk, np.uint8)
            at += len(chunk)
        member.read(1)  # at the end: zipfile checks the CRC-32
    return array.reshape(shape, order="F" if fortran else "C")


def read(path: str | Path, max_bytes: int = MAX_BYTES) -> dict[str, np.ndarray]:
    """The arrays of the ``.npz`` at ``path`` by name (``.npy`` dropped), each checked as the module says."""
    where = one_line(path)
    try:
        with open_regular(path, max_bytes) as f, zipfile.ZipFile(f) as z:
            members = {}
            for info in z.infolist():
                key = info.filename.removesuffix(".npy")
                if not info.filename.endswith(".npy") or key not in REQUIRED + OPTIONAL:
                    raise DataError(f"{where}: unknown member {shown(info.filename)}; "
                                    f"{did_you_mean(key, REQUIRED + OPTIONAL)}{LAYOUT}")
                if key in members:
                    raise DataError(f"{where}: member {info.filename} appears twice")
                members[key] = info
            if missing := [k for k in REQUIRED if k not in members]:
                raise DataError(f"{where}: lacks {', '.join(missing)}; {LAYOUT}")
            total = sum(info.file_size for info in members.values())
            if total > max_bytes:
                big = max(members.values(), key=lambda info: info.file_size)
                raise DataError(f"{where}: its members expand to {total:,} bytes ({big.filename}: "
                                f"{big.file_size:,}), more than the {max_bytes:,} read")
            arrays = {}
            for key, info in members.items():
                try:
                    arrays[key] = _member(z, info, key)
                except DataError as error:
                    raise DataError(f"{where}: {error}") from None
            return arrays
    except FileProblem as error:
        raise DataError(f"{error}; give an .npz file (np.savez)") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, zlib.error, ValueError, RuntimeError,
            NotImplementedError, SyntaxError) as error:  # zipfile's and NumPy's header parser's ways to say "corrupt"
        raise DataError(f"{where}: not a readable .npz ({one_line(' '.join(str(error).split()))[:160]}); "
                        f"re-save it with np.savez") from None


def load(path: str | Path, *, name: str | None = None, val_split: int | None = None) -> Dataset:
    """The dataset in the ``.npz`` at ``path``, checked and split by ``Dataset``; ``class_names`` if it has one."""
    arrays = read(path)
    names = arrays.pop("class_names", None)
    if names is not None:
        if names.dtype.kind != "U" or names.ndim != 1:
            raise DataError(f"{one_line(path)}: class_names is {names.dtype} of shape {names.shape}; give a 1-D str "
                            f"array, one name per class")
        names = names.tolist()
    try:
        return Dataset(**arrays, class_names=names, name=display(path) if name is None else name,
                           source=display(Path(path).resolve()), val_split=val_split)
    except DataError as error:
        raise DataError(f"{one_line(path)}: {error}") from None
