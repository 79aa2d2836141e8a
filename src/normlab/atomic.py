"""All-or-nothing file writes that neither follow a planted link nor overwrite what they did not create.

Every file normlab writes is first written under a random name beside its target (``.NAME.<16 hex>.tmp``), opened
with ``O_CREAT | O_EXCL | O_NOFOLLOW``: a symlink or file planted at that name (in a shared folder, for a normlab
run as root) fails the open instead of being written through, and the name cannot be guessed in advance. The
temp file is fsynced and renamed over the target, and the folder fsynced. ``rename`` replaces a link at the target
rather than following it, and a crash, a full disk or a signal at any instant leaves either the old file or the
new one, never a torn one; the temp file is removed on any failure.

Writers that only take a path (Keras, matplotlib, a compiler) get one inside a private folder made the same way
(``os.mkdir`` of a random name, mode 0700, where no one else can plant anything) and the finished file is moved
into place from there.
"""

import contextlib
import os
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import BinaryIO, Iterator

from normlab.testpoints import write_delay_s

EXCLUSIVE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
TEMPORARY = re.compile(r"\.(?P<target>.+)\.[0-9a-f]{16}\.tmp")  # what ``_temporary`` names


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")


def _exclusive(path, flags: int) -> int:
    """``open``'s opener: a new file (mode 0644 less the umask), never an existing one or a link, whatever ``open``
    asks for."""
    return os.open(path, EXCLUSIVE, 0o644)


def _fsync(path, flags: int = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _commit(written: Path, path: Path) -> None:
    """``written`` (complete and fsynced) renamed over ``path``, and the rename made durable."""
    if delay := write_delay_s():  # crash tests only: widens the window a SIGKILL can land in
        time.sleep(delay)
    os.replace(written, path)
    _fsync(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


@contextlib.contextmanager
def replacing(path: str | Path) -> Iterator[BinaryIO]:
    """A new file to write ``path``'s content into; when the block ends it replaces ``path``, and if the block
    raises anything (a signal's exception too) it is removed and ``path`` is untouched."""
    path = Path(path)
    temporary = _temporary(path)
    with open(temporary, "wb", opener=_exclusive) as f:
        try:
            yield f
            f.flush()
            os.fsync(f.fileno())
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
    try:
        _commit(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_atomically(path: str | Path, blob: bytes) -> None:
    """Replace ``path`` with ``blob``; on any failure the temp file is removed and the old ``path`` is untouched."""
    with replacing(path) as f:
        f.write(blob)


@contextlib.contextmanager
def replacing_by_name(path: str | Path, name: str) -> Iterator[Path]:
    """``replacing`` for a writer that opens the file itself: a path called ``name`` in a private folder beside
    ``path``; the file written there replaces ``path`` when the block ends. The folder goes in any case."""
    path = Path(path)
    folder = _temporary(path)
    os.mkdir(folder, 0o700)
    try:
        written = folder / name
        yield written
        _fsync(written)
        _commit(written, path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def open_fresh(path: str | Path) -> BinaryIO:
    """A log written as it goes (not atomically): whatever is at ``path`` is unlinked, never followed or truncated,
    and a new file created in its place, exclusively (a link planted in between fails the open)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return open(path, "wb", opener=_exclusive)


def remove_leftovers(folder: Path, targets: re.Pattern) -> None:
    """Remove the temp files that writes of files named like ``targets`` left in ``folder`` when their process was
    killed; anything else stays. Only for a folder one process writes at a time (a claimed run folder): elsewhere
    the temp file could be another process' write in progress."""
    for entry in os.scandir(folder):
        match = TEMPORARY.fullmatch(entry.name)
        if match and targets.fullmatch(match["target"]) and not entry.is_dir(follow_symlinks=False):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
