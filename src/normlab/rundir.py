"""A run folder belongs to one normlab process at a time, and normlab never writes into a folder of the user's.

``claim`` takes an exclusive ``fcntl.flock`` on ``FOLDER/.normlab-lock`` (the kernel releases it when the process
dies, however it dies), so a second run on the same ``--out`` stops with one line naming the holder instead of
silently replacing its checkpoints. The lock file also marks the folder as normlab's: a non-empty folder without
it (or the layout of a run from before it existed) is the user's, and is refused rather than overwritten.
"""

import contextlib
import fcntl
import os
from pathlib import Path

from normlab.errors import ConfigError
from normlab.files import display

LOCK = ".normlab-lock"
# What a run folder written before the lock file existed holds; anything else in a non-empty folder is the user's.
LEGACY_MARKERS = ("checkpoints", "study.toml")


def is_run_folder(folder: Path) -> bool:
    return any((folder / name).exists() for name in (LOCK, *LEGACY_MARKERS))


def enclosing(path: Path) -> Path | None:
    """The run folder ``path`` lies in: ``path`` itself or the nearest folder above it, or None. A legacy marker
    counts here only beside a run's content (``holds``): a home folder with a ``checkpoints`` folder of its own is
    not a run folder."""
    for folder in (path, *path.parents):
        if (folder / LOCK).exists() or (is_run_folder(folder) and holds(folder)):
            return folder
    return None


def holds(folder: Path) -> str | None:
    """What ``folder`` holds already: "sweep" (``normlab run``), "diagnosis" (``normlab diagnose``), "run"
    (train/reproduce/bench) or None.

    A sweep's report gathers every results.json below it, so no two kinds share a folder.
    """
    if (folder / "study.toml").exists():
        return "sweep"
    if (folder / "diagnostics.json").exists() or (folder / "presets").is_dir():
        return "diagnosis"
    if any((folder / name).exists() for name in ("results.json", "bench.json")) or any(
            (folder / "checkpoints").rglob("epoch-*.safetensors")):
        return "run"
    return None


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", errors="replace").strip()
    except OSError:
        text = ""
    return f"process {text}" if text.isdigit() else "another process"


def _missing(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, innermost first: what ``mkdir`` will create."""
    missing = []
    while not os.path.lexists(folder) and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _remove_if_unused(created: list[Path]) -> None:
    """Remove the folders ``claim`` created (innermost first) if its lock file is all they hold: a run that ends
    before writing anything leaves no folder behind. Anything else in them keeps them; so does a folder that was
    there before."""
    if not created:
        return
    try:
        if {entry.name for entry in os.scandir(created[0])} - {LOCK}:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(created[0] / LOCK)
        for folder in created:
            os.rmdir(folder)  # fails, and stops here, once a folder holds something else
    except OSError:
        pass


@contextlib.contextmanager
def claim(folder: Path):
    """Hold ``folder`` (created if need be) for the duration of the block; ConfigError if it is not ours to use.
    A block that fails or is interrupted leaves no folder it created holding only the lock file."""
    folder = Path(folder)
    shown = display(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{shown} exists and is not a folder; choose another run folder")
    if folder.is_dir() and not is_run_folder(folder) and any(folder.iterdir()):
        raise ConfigError(f"{shown} is not empty and is not a normlab run folder; normlab does not write into "
                          f"a folder of yours: choose a new or empty run folder")
    created = _missing(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    except OSError as error:
        _remove_if_unused(created)
        raise ConfigError(f"cannot use {shown} as a run folder: {error.strerror or error}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            created = []  # the holder's, not ours to remove
            raise ConfigError(f"{shown} is in use by normlab {_holder(fd)}; wait for it to finish or choose "
                              f"another run folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield folder
    except BaseException:
        _remove_if_unused(created)  # while the lock is held: no other run can have started in it
        raise
    finally:
        os.close(fd)  # releases the lock; the file stays as the folder's mark
