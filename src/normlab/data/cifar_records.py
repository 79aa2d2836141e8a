"""Strict readers for the binary version of CIFAR: fixed-size records, and the .tar.gz that holds them.

A record (cs.toronto.edu/~kriz/cifar.html) is one label byte per labelling (CIFAR-10: the class; CIFAR-100: the
coarse then the fine class) followed by 3,072 pixel bytes, channel-major: 1,024 red, 1,024 green, 1,024 blue,
each a row-major 32x32. A file is a whole number of records and nothing else.

The archive is read as a stream, members straight into memory, nothing extracted to disk: every member must be
a regular file inside the archive's one folder (a link, a device or ``../x`` is refused, not skipped), the ones
needed of exactly their size, all of them together within a bound. A header claiming terabytes is refused from
the header, before a byte of its data is read.
"""

import tarfile
import zlib
from typing import BinaryIO

import numpy as np

from normlab.errors import DataError
from normlab.files import one_line

SIDE, CHANNELS = 32, 3
PIXELS = SIDE * SIDE * CHANNELS
NAMES_MAX = 16 << 10  # a class-name file: 10 or 100 short lines
SLACK = 1 << 20  # members read past unread (CIFAR-10's readme.html, CIFAR-100's coarse names): a few hundred bytes
KINDS = {tarfile.SYMTYPE: "a symbolic link", tarfile.LNKTYPE: "a hard link", tarfile.DIRTYPE: "a folder",
         tarfile.CHRTYPE: "a device", tarfile.BLKTYPE: "a device", tarfile.FIFOTYPE: "a FIFO"}


def read_records(raw: bytes, classes: tuple[int, ...], where: str, fix: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 32, 32, 3) uint8 and the last label byte of each record; ``classes`` bounds each label byte."""
    size = len(classes) + PIXELS
    if len(raw) % size:
        raise DataError(f"{where}: {len(raw):,} bytes is not a whole number of {size:,}-byte records; {fix}")
    records = np.frombuffer(raw, np.uint8).reshape(-1, size)
    for i, n in enumerate(classes):
        if (over := np.flatnonzero(records[:, i] >= n)).size:
            raise DataError(f"{where}: record {over[0]}: label {records[over[0], i]} outside 0..{n - 1}; {fix}")
    images = records[:, len(classes):].reshape(-1, CHANNELS, SIDE, SIDE).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), records[:, len(classes) - 1].copy()


def class_names(blob: bytes, classes: int, where: str, fix: str) -> tuple[str, ...]:
    """The non-empty lines of a names file (batches.meta.txt, fine_label_names.txt): exactly ``classes`` of them."""
    try:
        names = tuple(line.strip() for line in blob.decode("utf-8").splitlines() if line.strip())
    except UnicodeDecodeError as error:
        raise DataError(f"{where}: not UTF-8 text (byte {error.start}); {fix}") from None
    if len(names) != classes or not all(n.isprintable() and len(n) <= 100 for n in names):
        raise DataError(f"{where}: {len(names)} class names (one short line each), expected {classes}; {fix}")
    return names


def read_archive(fileobj: BinaryIO, folder: str, sizes: dict[str, int], names_file: str, where: str,
                 fix: str) -> dict[str, bytes]:
    """The members ``folder/NAME`` of a .tar.gz stream: each of ``sizes`` exactly that long, and ``names_file``."""
    cap = sum(sizes.values()) + NAMES_MAX + SLACK
    found, total = {}, 0

    def bad(problem: str) -> DataError:
        return DataError(f"{where}: {problem}; {fix}")

    try:
        with tarfile.open(fileobj=fileobj, mode="r|gz") as tar:
            for member in tar:
                name = one_line(member.name)
                top, _, base = member.name.removeprefix("./").rstrip("/").partition("/")
                if top == folder and not base and member.isdir():
                    continue  # the folder's own entry
                if top != folder or not base or "/" in base or base in (".", ".."):
                    raise bad(f"member {name!r} is not a file in the folder {folder}/")
                if not member.isreg() or member.issparse():
                    raise bad(f"member {name} is {KINDS.get(member.type, 'not a regular file')}")
                exact, limit = base in sizes, sizes.get(base, NAMES_MAX)
                wanted = exact or base == names_file
                if wanted and (member.size > limit or exact and member.size != limit):
                    raise bad(f"member {name} is {member.size:,} bytes, expected {'' if exact else 'at most '}"
                              f"{limit:,}")
                total += member.size
                if total > cap:
                    raise bad(f"members hold more than the {cap:,} bytes the data set has")
                if not wanted:
                    continue  # read past, unread: the readme, the coarse names
                if base in found:
                    raise bad(f"member {name} appears twice")
                found[base] = tar.extractfile(member).read(member.size)
                if len(found[base]) != member.size:
                    raise bad(f"member {name} is truncated")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        raise bad(f"not a readable .tar.gz ({one_line(str(error)) or type(error).__name__})") from None
    if missing := [n for n in (*sizes, names_file) if n not in found]:
        raise bad(f"the archive lacks {', '.join(f'{folder}/{n}' for n in missing)}")
    return found
