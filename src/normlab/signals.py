"""SIGINT/SIGTERM as exceptions, held back while a checkpoint is being written.

A signal that lands mid-write is remembered and raised right after the write, so a Ctrl-C or a job
scheduler's SIGTERM never costs a finished epoch. The exit codes follow the shell's 128 + signal number.
"""

import contextlib
import signal


class Interrupted(Exception):
    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + signum


_held = 0
_pending: list[int] = []


def _handler(signum, frame):
    if _held:
        _pending.append(signum)
    else:
        raise Interrupted(signum)


def install() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _handler)


@contextlib.contextmanager
def held():
    """Defer SIGINT/SIGTERM (when `install`ed) until the block is done, then raise the first one."""
    global _held
    _held += 1
    try:
        yield
    finally:
        _held -= 1
    if not _held and _pending:
        signum = _pending[0]
        _pending.clear()
        raise Interrupted(signum)
