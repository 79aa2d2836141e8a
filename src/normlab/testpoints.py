"""Named moments of a run that the signal and crash tests synchronize on; inert unless the environment asks.

``NORMLAB_TEST_STAGES=FILE`` makes every ``reached(stage)`` append the stage's name and the pid to FILE, so a
test can wait for "compile" (observable state, not a sleep) and then send its signal. ``NORMLAB_TEST_PAUSE_AT=
STAGE`` also waits at that stage until a signal has arrived, so the signal lands exactly there — inside a
``signals.held()`` block as well. ``NORMLAB_FAULT_WRITE_DELAY_S`` pauses atomic writes between the fsynced temp
file and the rename, widening the window a SIGKILL can land in; ``NORMLAB_FAULT_DELAY_AT=STAGE:SECONDS`` makes a
process that slow at a stage (one of several processes far slower to compile than the others). Malformed values switch a test point off; they
never stop a run. The stages are ``signals.safe_point``s: see there.
"""

import math
import os
import time
from typing import Callable


def reached(stage: str, waiting: Callable[[], bool]) -> None:
    """Log ``stage``; if it is the pause stage, sleep while ``waiting()`` (no signal yet)."""
    path = os.environ.get("NORMLAB_TEST_STAGES")
    if not path:
        return
    try:
        with open(path, "a", encoding="utf-8") as log:
            log.write(f"{stage} {os.getpid()}\n")
    except OSError:
        return
    if os.environ.get("NORMLAB_TEST_PAUSE_AT") == stage:
        while waiting():
            time.sleep(0.01)
    at, _, seconds = os.environ.get("NORMLAB_FAULT_DELAY_AT", "").partition(":")
    if at == stage:
        time.sleep(_seconds(seconds))


def write_delay_s() -> float:
    return _seconds(os.environ.get("NORMLAB_FAULT_WRITE_DELAY_S", "0"))


def _seconds(text: str) -> float:
    try:
        delay = float(text)
    except ValueError:
        return 0.0
    return delay if math.isfinite(delay) and 0 < delay <= 60 else 0.0
