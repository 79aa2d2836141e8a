"""Error types for user-facing failures.

Each is caught once, in the CLI, and printed as one line with exit code 2: a user who gave us a bad file or
a bad option needs to know what and how to fix it, not a traceback.
"""


class NormlabError(Exception):
    """Base class of every error that is the user's input or environment, not our bug."""


class DataError(NormlabError):
    """A data file is missing, unreadable, corrupt or not what the study needs."""


class ConfigError(NormlabError):
    """A preset, option or configuration value is unknown or out of range."""


class CheckpointError(NormlabError):
    """A checkpoint cannot be written, or is corrupt, or belongs to another configuration or version."""
