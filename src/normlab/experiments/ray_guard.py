"""The guardian of a sweep's local Ray instance: when the sweep ends, however (SIGKILL too), so does its Ray.

Ray ties its head processes to the thread that started them (PR_SET_PDEATHSIG), but not the agents the raylet
starts: DashboardAgent and RuntimeEnvAgent outlived a SIGKILLed sweep, ignoring SIGTERM, adopted by init. So the
sweep starts this guardian before ``ray.init``, in a session of its own (a Ctrl-C at the terminal is not for it),
with a pipe. While the pipe is open the guardian takes note of every descendant of the sweep's process (every
POLL_S: the instance's processes are its children and theirs), each by a pidfd, which names that process and
no later one with its pid. Once the pipe closes (the sweep ended, or died) it stops those still there: SIGTERM,
then SIGKILL after GRACE_S. Those only: never a cluster joined with --address (no guardian there), nor anyone
else's processes. (Marking them through their environment does not work: Ray's agents and workers overwrite
theirs with their process titles.)
"""

import contextlib
import os
import select
import signal
import subprocess
import sys
import time

POLL_S = 0.2  # how often the guardian looks for the sweep's new descendants
GRACE_S = 3  # how long they get to end on SIGTERM


@contextlib.contextmanager
def guarded():
    """The block starts a Ray instance whose processes are stopped once it ends, or this process dies."""
    guardian = subprocess.Popen([sys.executable, "-m", "normlab.experiments.ray_guard", str(os.getpid())],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        yield
    finally:
        guardian.stdin.close()  # the guardian stops what is left of the instance, and leaves


def guard(sweep: int, pipe: int) -> None:
    """Note ``sweep``'s descendants until ``pipe`` closes; then stop them."""
    seen: dict[int, int] = {}  # pid -> pidfd
    while True:
        _note_descendants(sweep, seen)
        if select.select([pipe], [], [], POLL_S)[0] and not os.read(pipe, 4096):
            break  # closed: nothing is ever written to it
    stop(list(seen.values()))


def stop(pidfds: list[int]) -> None:
    """SIGTERM to the processes of ``pidfds``, then SIGKILL to those still there after GRACE_S."""
    for pidfd in pidfds:
        _signal(pidfd, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    while pidfds and (left := deadline - time.monotonic()) > 0:
        ended, _, _ = select.select(pidfds, [], [], left)  # a pidfd reads ready once its process has ended
        pidfds = [pidfd for pidfd in pidfds if pidfd not in ended]
    for pidfd in pidfds:
        _signal(pidfd, signal.SIGKILL)


def _note_descendants(root: int, seen: dict[int, int]) -> None:
    stats = {pid: stat for pid in _pids() if (stat := _stat(pid)) is not None}
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in stats.items():
        children.setdefault(parent, []).append(pid)
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        if pid in seen or pid == os.getpid():
            continue
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:  # ended already: nothing to stop
            continue
        if (_stat(pid) or (0, None))[1] == stats[pid][1]:  # the same start: the process seen, not a newcomer
            seen[pid] = pidfd
        else:
            os.close(pidfd)


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isascii() and name.isdigit()]


def _stat(pid: int) -> tuple[int, int] | None:
    """Its parent's pid and its start time (clock ticks after boot), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rpartition(b")")[2].split()  # after "pid (comm)": state is fields[0]
        return int(fields[1]), int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def _signal(pidfd: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        signal.pidfd_send_signal(pidfd, signum)


if __name__ == "__main__":
    guard(int(sys.argv[1]), sys.stdin.fileno())
