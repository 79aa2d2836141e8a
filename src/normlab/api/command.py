"""Who is calling the API: the CLI (inside ``as_command``) or Python. Errors and stop notes name settings and say
how to carry on in the caller's own terms: ``--epochs`` and "normlab train ... --resume" on the command line,
``epochs`` and ``resume=True`` in a notebook."""

import contextlib
import contextvars
import functools
import inspect
import os
import shlex
import threading
from pathlib import Path

from normlab import signals
from normlab.errors import ConfigError, NormlabError, shown
from normlab.files import display
from normlab.memory import out_of_memory

# While the CLI runs a command: its arguments, and how it names each setting (its flags); None for Python.
COMMAND: contextvars.ContextVar[tuple[list[str], dict] | None] = contextvars.ContextVar("command", default=None)


@contextlib.contextmanager
def as_command(argv: list[str], flags: dict[str, str]):
    """Within it, errors name settings by their flags (``flags``: setting -> flag) and stop notes tell the
    command line to type again: the CLI runs every command in one."""
    token = COMMAND.set((list(argv), flags))
    try:
        yield
    finally:
        COMMAND.reset(token)


def option_name(setting: str, python: str | None = None) -> str:
    """How an error names a setting: the CLI's flag, or the keyword (``python``, if it needs more words)."""
    command = COMMAND.get()
    return (python or setting) if command is None else command[1].get(setting, setting)


def again(call: str, out: Path, out_given: bool, resume: bool = True) -> str:
    """How to carry on from ``out``: the command line again (with --resume), or ``call`` with resume=True."""
    command = COMMAND.get()
    if command is None:
        return f"normlab.{call}(..., out={str(out)!r}{', resume=True' if resume else ''})"
    again = [a for a in command[0] if a != "--resume"] + ([] if out_given else ["--out", display(out)])
    return f"normlab {shlex.join(again)}" + (" --resume" if resume else "")


def path_of(value, name: str, required: bool = False) -> Path | None:
    """``value`` (text or a Path) as a Path, or a one-line ConfigError naming the argument; None stays None
    unless the path is ``required``."""
    text = path_text(value, name, required)
    return None if text is None else Path(text)


def path_text(value, name: str, required: bool = False) -> str | None:
    """``path_of``, as the text given: "./seed" stays a file's path, not the built-in study "seed"."""
    if value is None and not required:
        return None
    text = os.fspath(value) if isinstance(value, (str, os.PathLike)) else None
    if not isinstance(text, str) or not text or "\0" in text or len(text) > 4096:
        raise ConfigError(f"{option_name(name)} must be a path (text or a Path), got {shown(value)}")
    return text


def flag(value, name: str) -> bool:
    """``value`` if it is True or False, else a one-line ConfigError naming the argument: Python would take
    ``resume="no"`` (or 1, or None) as true, or false, without a word."""
    if type(value) is not bool:
        raise ConfigError(f"{option_name(name)} must be True or False, got {shown(value)}")
    return value


def _flags(function):
    """``function`` with every argument its signature declares ``bool`` checked by ``flag`` before it runs."""
    signature = inspect.signature(function)
    names = [name for name, parameter in signature.parameters.items() if parameter.annotation in (bool, "bool")]

    @functools.wraps(function)
    def checked(*args, **kwargs):
        try:
            given = signature.bind(*args, **kwargs).arguments
        except TypeError:  # a wrong call: Python's own error, from the call itself
            return function(*args, **kwargs)
        for name in names:
            if name in given:
                flag(given[name], name)
        return function(*args, **kwargs)
    return checked


_depth = 0  # public calls under way in this process: only the outermost handles signals and errors


def public(function):
    """A public function as a Python caller meets it. Its ``bool`` arguments are checked (``flag``). A user's
    mistake is raised from here, not from deep inside (a notebook shows a two-frame traceback and the one-line
    message), and SIGINT/SIGTERM (a notebook's interrupt) are acted on at the safe points, as in the CLI: the call
    ends with a KeyboardInterrupt that says what was kept and how to resume. The CLI does both itself, and so does
    a caller outside the main thread."""
    function = _flags(function)

    @functools.wraps(function)
    def call(*args, **kwargs):
        global _depth
        if _depth or COMMAND.get() is not None or threading.current_thread() is not threading.main_thread():
            return function(*args, **kwargs)
        previous, _depth = signals.install(), 1
        signals.clear()
        signals.set_note(signals.NOTHING_WRITTEN)
        try:
            return function(*args, **kwargs)
        except NormlabError as error:
            raise error.with_traceback(None) from None
        except BaseException as error:
            if (stop := signals.interruption(error)) is None:
                if (short := out_of_memory(error)) is not None:  # a MemoryError, or XLA's RESOURCE_EXHAUSTED
                    raise short.with_traceback(None) from None
                raise
            signals.clear()
            raise KeyboardInterrupt(f"interrupted by {stop}; {signals.note()}") from None
        finally:
            _depth = 0
            signals.restore(previous)
    return call
