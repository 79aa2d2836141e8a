"""Error types for user-facing failures.

Each is caught once, in the CLI, and printed as one line with exit code 2: a user who gave us a bad file or
a bad option needs to know what and how to fix it, not a traceback.
"""

import difflib
import reprlib


def closest(name: str, choices) -> str | None:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return close[0] if close else None


def did_you_mean(name: str, choices) -> str:
    """``"did you mean 'x'? "`` for the closest of ``choices``, or ``""``: one wording for every typo we catch."""
    match = closest(name, choices)
    return f"did you mean {match!r}? " if match else ""


class _Short(reprlib.Repr):
    """``repr`` within reprlib's limits, ints included: ``repr`` itself refuses one of more than 4,300 digits."""

    def repr_int(self, x, level):
        return super().repr_int(x, level) if x.bit_length() < 1000 else f"<an int of {x.bit_length()} bits>"


def shown(value) -> str:
    """A value as an error message quotes it: one short line, whatever its size or depth."""
    text = _Short().repr(value)
    return text if len(text) <= 80 else f"{text[:76]}..."


class NormlabError(Exception):
    """Base class of every error that is the user's input or environment, not our bug."""


class DataError(NormlabError):
    """A data file is missing, unreadable, corrupt or not what the study needs."""


class ConfigError(NormlabError):
    """A preset, option or configuration value is unknown or out of range."""


class CheckpointError(NormlabError):
    """A checkpoint cannot be written, or is corrupt, or belongs to another configuration or version."""
