"""Reading and writing user-visible files safely: regular files only, sizes capped, text always UTF-8.

Every file normlab reads goes through ``read_bytes``/``read_text``: a FIFO named like a checkpoint would block
``open`` forever and a symlink to ``/dev/zero`` would eat memory, so the file is opened non-blocking, must be a
regular file, and may not exceed the size the caller expects. JSON, a whole file (``read_json``) or a header or
field inside one (``parse_json``), is strict and nests at most ``MAX_DEPTH`` deep: deeper, ``json.loads`` raises
RecursionError, or returns values that the recursive code after it (``json.dumps``, a digest, a spec check)
cannot walk. Every file normlab writes goes through ``write_bytes``/``write_text`` (``normlab.atomic``): whole or
not at all.
"""

import contextlib
import json
import math
import os
import stat
from pathlib import Path
from typing import BinaryIO, Iterator

from normlab.atomic import write_atomically
from normlab.errors import NormlabError

MiB = 1 << 20
# Ours nest at most 6 deep (results.json: config, models, a model's layers, a layer, its kernel size); the bound
# keeps every recursive walk of a value read (json.dumps, repr, ``==``) far from Python's recursion limit.
MAX_DEPTH = 32


class FileProblem(NormlabError):
    """A path that is not a readable regular file of an acceptable size, or JSON that ``parse_json`` refuses;
    callers re-raise it as their own type."""


@contextlib.contextmanager
def open_regular(path: str | Path, max_bytes: int) -> Iterator[BinaryIO]:
    """``path`` opened for reading if it is a regular file of at most ``max_bytes``; else ``FileProblem``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        raise FileProblem(f"{one_line(path)}: cannot open ({error.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileProblem(f"{one_line(path)}: not a regular file")
        if info.st_size > max_bytes:
            raise FileProblem(f"{one_line(path)}: {info.st_size:,} bytes, more than the {max_bytes:,} expected")
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as f:
        yield f


def read_bytes(path: str | Path, max_bytes: int) -> bytes:
    """The whole content of the regular file ``path``, at most ``max_bytes`` long; else ``FileProblem``."""
    try:
        with open_regular(path, max_bytes) as f:
            blob = f.read(max_bytes + 1)  # the file may have grown since it was checked
    except OSError as error:
        raise FileProblem(f"{one_line(path)}: unreadable ({error.strerror or error})") from None
    if len(blob) > max_bytes:
        raise FileProblem(f"{one_line(path)}: more than the {max_bytes:,} bytes expected")
    return blob


def read_text(path: str | Path, max_bytes: int) -> str:
    """``read_bytes`` decoded as UTF-8, whatever the locale says."""
    blob = read_bytes(path, max_bytes)
    try:
        return blob.decode("utf-8")
    except UnicodeDecodeError as error:
        raise FileProblem(f"{one_line(path)}: not UTF-8 text (byte {error.start})") from None


def read_json(path: str | Path, max_bytes: int, allow_nan: bool = False):
    """``parse_json`` of the regular file ``path`` of at most ``max_bytes``, as UTF-8 text."""
    return parse_json(read_text(path, max_bytes), one_line(path), allow_nan)


def parse_json(text: str | bytes, where: str, allow_nan: bool = False):
    """The JSON value in ``text`` (named ``where`` in messages): strict (NaN, Infinity and numbers beyond float64,
    which parse as inf, only if ``allow_nan``: checkpoint records hold a diverged run's history) and nested at most
    ``MAX_DEPTH`` deep; else FileProblem."""
    strict = {} if allow_nan else {"parse_constant": _no_constant, "parse_float": _finite}
    too_deep = FileProblem(f"{where}: nested more than {MAX_DEPTH} levels deep")
    try:
        value = json.loads(text, **strict)
    except (TypeError, ValueError) as error:  # not text; JSONDecodeError, NaN, an int of over 4,300 digits
        raise FileProblem(f"{where}: not valid JSON ({' '.join(str(error).split())[:200]})") from None
    except RecursionError:  # json.loads gives up near Python's recursion limit, far deeper than MAX_DEPTH
        raise too_deep from None
    if nested_deeper(value, MAX_DEPTH):
        raise too_deep
    return value


def _no_constant(name: str):
    raise ValueError(f"{name} is not a finite number; JSON has no NaN or Infinity")


def _finite(text: str) -> float:
    if math.isinf(value := float(text)):
        raise ValueError(f"{text[:30]} is beyond a float's range")
    return value


def nested_deeper(value, limit: int) -> bool:
    """Whether lists, tuples and dicts nest more than ``limit`` deep; iterative, so no depth can exhaust the stack."""
    stack = [(value, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list, tuple)):
            if depth > limit:
                return True
            stack += [(v, depth + 1) for v in (value.values() if isinstance(value, dict) else value)]
    return False


def write_bytes(path: str | Path, blob: bytes) -> Path:
    """Atomically replace ``path`` (creating its folder): a crash, a full disk or a signal leaves no torn file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, blob)
    return path


def write_text(path: str | Path, text: str) -> Path:
    """``write_bytes`` of UTF-8 text; characters that cannot be UTF-8 (stray surrogates) become "?"."""
    return write_bytes(path, text.encode("utf-8", errors="replace"))


def display(path: str | Path) -> str:
    """A path as printable text: bytes of a non-UTF-8 file name show as U+FFFD instead of breaking the output."""
    return os.fsencode(path).decode("utf-8", errors="replace")


def one_line(text: str | Path) -> str:
    """Text or a path for a one-line message: ``display``, and control characters (a newline in a file name, a
    terminal escape) written as escapes, so the message stays one line and shows what was there."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in display(text))


def cache_root() -> Path:
    """normlab's cache folder: ``$XDG_CACHE_HOME/normlab``, else ``~/.cache/normlab``.

    XDG says a relative ``$XDG_CACHE_HOME`` is to be ignored; and with ``HOME`` unset or empty (cron jobs, some CI
    runners) ``Path.home()`` is "" and the cache would silently land in whatever folder the command ran from, so
    the home folder then comes from the password database.
    """
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(xdg):
        return Path(xdg) / "normlab"
    home = os.environ.get("HOME", "")
    if not os.path.isabs(home):
        import pwd
        home = pwd.getpwuid(os.getuid()).pw_dir
    return Path(home) / ".cache" / "normlab"
