"""SIGINT/SIGTERM, recorded when they arrive and acted on at safe points, where stopping leaves nothing half-done.

Python runs a signal handler between any two bytecodes of the main thread — inside a garbage-collector callback,
a ``__del__``, or a callback that C++ (XLA, nanobind) made into Python. An exception raised there is dropped
("Exception ignored in _xla_gc_callback"), turned into an ImportError by an extension module's initializer, or
ends the process in ``std::terminate`` (exit 134). So the handler only records the signal, and the code raises
``Interrupted`` itself at *safe points* (``safe_point``: data loading, each checkpoint read, compilation, each
epoch, …) and after ``held()`` blocks (a checkpoint or report write, which thus always completes). Blocking waits
in plain Python (a worker waiting for its next job, a download, a child process) run ``interruptible()``: there
the handler raises at once, since nothing but CPython itself is on the stack.

``Interrupted`` is a ``BaseException``, like ``KeyboardInterrupt``, so no ``except Exception`` on the way up
mistakes it for an error. Exit codes follow the shell: 128 + signal number.
"""

import contextlib
import signal

from normlab import testpoints

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + signum


_held = 0
_interruptible = 0
_received: list[int] = []
NOTHING_WRITTEN = "nothing was written"
_note: object = NOTHING_WRITTEN


def _handler(signum, frame):
    _received.append(signum)
    if _interruptible and not _held:
        raise Interrupted(signum)


def install() -> dict:
    """Record SIGINT/SIGTERM from now on; return the previous handlers for ``restore``."""
    return {signum: signal.signal(signum, _handler) for signum in SIGNALS}


def restore(previous: dict) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def ignore() -> None:
    """Once stopping: a second Ctrl-C must not cut the stop message or the exit short."""
    for signum in SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def interruption(error: BaseException) -> Interrupted | None:
    """Why a command that ended with ``error`` was interrupted, if it was: the first signal it received, whatever
    exception that became on the way up (an extension module's initializer makes it an ImportError), or the
    ``Interrupted`` itself (a worker process's signal, passed on)."""
    if _received:
        return Interrupted(_received[0])
    return error if isinstance(error, Interrupted) else None


def set_note(note) -> None:
    """What an interruption from now on keeps, and how to carry on: text, or a function that says it then."""
    global _note
    _note = note


def note() -> str:
    """The stop note the command prints when it is interrupted."""
    return _note() if callable(_note) else _note


def clear() -> None:
    """Forget received signals, once the command has stopped for them."""
    _received.clear()


def check() -> None:
    """Raise ``Interrupted`` for a received signal, unless inside ``held()``."""
    if _received and not _held:
        raise Interrupted(_received[0])


def safe_point(stage: str) -> None:
    """A moment where stopping is safe: a received signal is raised here. Tests synchronize on these moments
    (``testpoints``), and may hold the process here until their signal arrives."""
    testpoints.reached(stage, waiting=lambda: not _received)
    check()


@contextlib.contextmanager
def held():
    """Complete the block whatever arrives (a checkpoint, a report), then act on a signal received meanwhile."""
    global _held
    _held += 1
    try:
        yield
    finally:
        _held -= 1
    check()


@contextlib.contextmanager
def interruptible():
    """A blocking wait in plain Python: a signal interrupts it at once instead of at the next safe point."""
    global _interruptible
    check()
    _interruptible += 1
    try:
        yield
    finally:
        _interruptible -= 1
