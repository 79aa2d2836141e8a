"""Who is calling the API: the CLI (inside ``as_command``) or Python. Errors and stop notes name settings and say
how to carry on in the caller's own terms: ``--epochs`` and "normlab train ... --resume" on the command line,
``epochs`` and ``resume=True`` in a notebook."""

import contextlib
import contextvars
import shlex
from pathlib import Path

from normlab.files import display

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
