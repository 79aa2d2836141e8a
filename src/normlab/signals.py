"""SIGINT/SIGTERM as an exception, held back while a checkpoint or a report is being written.

``Interrupted`` is a ``BaseException``, like ``KeyboardInterrupt``: no ``except Exception`` on the way up (a
checkpoint reader that treats any failure as damage, say) can mistake it for an error and carry on. A signal
that lands inside ``held()`` is remembered and raised right after the block, so a Ctrl-C or a job scheduler's
SIGTERM never costs a finished epoch or leaves half a report. Exit codes follow the shell: 128 + signal number.
"""

import contextlib
import signal

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
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


def install() -> dict:
    """Turn SIGINT/SIGTERM into ``Interrupted``; return the previous handlers for ``restore``."""
    return {signum: signal.signal(signum, _handler) for signum in SIGNALS}


def restore(previous: dict) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def ignore() -> None:
    """Once stopping: a second Ctrl-C must not cut the stop message or the exit short."""
    for signum in SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def pending() -> bool:
    """Whether a signal arrived inside ``held()`` and waits to be raised."""
    return bool(_pending)


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
