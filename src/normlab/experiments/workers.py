"""The one process pool: jobs go to worker processes, each pinned to its own share of the cores.

Measured on the 2-core EPYC (bn-after, batch 32): one process leaves the second core half idle — XLA runs each
32-row matmul on one thread — at 1.3-1.6 s per epoch, while two processes pinned to one core each train two
models at 2.0-2.2 s per epoch each: 1.04 s per model-epoch, 1.45x the throughput. Neither vmap (five models'
weights no longer fit the caches: 2.6 s per model-epoch) nor two XLA devices in one process (one shared thread
pool: 1.66 s) gets there, and unpinned processes fight over both cores (2.7-3.5 s each).

So ``run`` starts one worker per core, or, with fewer jobs than cores, one per job pinned to a disjoint share of
the cores so none stays idle; a single worker would only copy the data for nothing, so then the jobs run here, on
all cores. The pool knows nothing of training: a job is a JSON object for a ``module:function`` target, which a
worker imports and calls as ``function(job, arrays, send)``; what it ``send``s and returns travels back as JSON
lines over a pipe of its own, the shared arrays go to it once as memory-mapped .npy files: text and plain arrays
only. XLA splits loops by the cores it sees, so results depend on the share a job ran on (to float32 rounding).

Never over the worker's stdout: native code writes there behind Python's back (``XLA_FLAGS=--xla_dump_to=-``
dumps every program's HLO, ``MKL_VERBOSE=1`` every call), and one such line in the protocol left the pool waiting
forever. A worker's stdout and stderr are its log; a line on the pipe that is not a message ends the run with one
line naming that log, and so does a worker that dies, with what killed it.
"""

import importlib
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

from normlab import signals
from normlab.atomic import open_fresh
from normlab.errors import NormlabError, shown
from normlab.files import one_line
from normlab.memory import out_of_memory

GRACE_S = 2.0     # after an interrupt, how long workers get to stop on their own before it is passed on
SHUTDOWN_S = 120  # ... and to write their checkpoint and exit
# glibc gives each thread its own malloc arena; two arenas are plenty for a one-core worker and keep about
# 60 MB per worker that compilation frees from staying resident (peak RSS of a 3-preset run: 468 -> 409 MB).
WORKER_ENV = {"MALLOC_ARENA_MAX": "2"}

Target = Callable[[dict, dict, Callable[[dict], None]], dict]


def usable_cores() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def default_workers() -> int:
    """One per core on a CPU; 1 on an accelerator, which trains all seeds in one program instead."""
    import jax
    return len(usable_cores()) if jax.default_backend() == "cpu" else 1


def core_shares(count: int) -> list[list[int]]:
    """The usable cores in ``count`` disjoint, as-even-as-possible shares: 3 cores, 2 workers -> [0, 1] and [2]."""
    cores = usable_cores()
    size, extra = divmod(len(cores), count)
    bounds = [i * size + min(i, extra) for i in range(count + 1)]
    return [cores[a:b] for a, b in zip(bounds, bounds[1:])]


def run(target: str, jobs: list[dict], arrays: dict[str, np.ndarray], workers: int,
        on_message: Callable[[int, dict], None], logs: Path | None = None) -> None:
    """Run every job through ``target`` in up to ``workers`` processes; ``on_message(index, message)`` gets what job
    ``index`` sends, then ``{"done": result}`` or, for a ``NormlabError``, ``{"error": text}``. An exception from
    ``on_message`` stops every worker and propagates, as does a signal or a worker that dies."""
    count = min(workers, len(jobs), len(usable_cores()))
    if count <= 1:
        function = load(target)
        for index, job in enumerate(jobs):
            on_message(index, call(function, job, arrays, lambda message, i=index: on_message(i, message)))
        return
    import jax
    cache = jax.config.jax_compilation_cache_dir is not None  # workers cache compiled code iff we do
    with tempfile.TemporaryDirectory(prefix="normlab-") as folder:
        for name, array in arrays.items():
            np.save(Path(folder) / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)
        logs = Path(logs) if logs is not None else Path(folder)
        logs.mkdir(parents=True, exist_ok=True)
        messages: queue.Queue = queue.Queue()
        pool = [_Worker(cores, folder, target, cache, logs / f"worker-{i}.log", messages)
                for i, cores in enumerate(core_shares(count))]
        pending, idle, running = list(range(len(jobs))), list(pool), 0
        try:
            while pending or running:
                while idle and pending:
                    index = pending.pop(0)
                    idle.pop(0).send([index, jobs[index]])
                    running += 1
                signals.check()  # a Ctrl-C for the study stops it within half a second
                try:
                    worker, message = messages.get(timeout=0.5)
                except queue.Empty:
                    continue
                if message is None:
                    code = worker.wait()
                    _raise_if_interrupted(code)  # a Ctrl-C that reached it first
                    raise NormlabError(_death(code, worker.log))
                if not _well_formed(message, len(jobs)):
                    raise NormlabError(f"a training process sent {shown(message)}, not a message of the pool; "
                                       f"see {one_line(worker.log)}")
                index, payload = message
                if "done" in payload or "error" in payload:
                    idle.append(worker)
                    running -= 1
                on_message(index, payload)
        except signals.Interrupted as stop:
            _stop(pool, stop.signum)
            raise
        except BaseException:
            _stop(pool, signal.SIGTERM)
            raise
        for worker in pool:
            _raise_if_interrupted(worker.close())  # finished its jobs, but a signal for the study is not lost


def load(target: str) -> Target:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def call(function: Target, job: dict, arrays: dict, send: Callable[[dict], None]) -> dict:
    """A job's last message: its result, or the user error that stopped it (the next job may well succeed), running
    out of memory included (``memory.out_of_memory``)."""
    try:
        return {"done": function(job, arrays, send)}
    except NormlabError as error:
        return {"error": str(error)}
    except (MemoryError, RuntimeError) as error:  # XLA's RESOURCE_EXHAUSTED is a RuntimeError
        if (short := out_of_memory(error)) is None:
            raise
        return {"error": str(short)}


def _well_formed(message, jobs: int) -> bool:
    """``[index, payload]``, as ``serve`` sends them: a job's index and a JSON object."""
    return (isinstance(message, list) and len(message) == 2 and type(message[0]) is int
            and 0 <= message[0] < jobs and isinstance(message[1], dict))


def _death(code: int | None, log: Path) -> str:
    """Why a worker ended before its jobs: the signal that killed it (SIGKILL out of the blue is most likely the
    kernel's out-of-memory killer), or its exit code and the last line of its log."""
    if code is not None and code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
        cause = (", most likely by the kernel's out-of-memory killer: ask for fewer workers, fewer seeds per "
                 "program, a smaller batch size or a model with smaller activations" if -code == signal.SIGKILL else "")
        return f"a training process was killed by {name}{cause}; see {one_line(log)}"
    return f"a training process stopped unexpectedly (exit {code}: {_last_line(log)}); see {one_line(log)}"


def _last_line(log: Path, tail: int = 4096) -> str:
    """The log's last non-empty line (of its last ``tail`` bytes: a log may hold megabytes of HLO dumps)."""
    try:
        with open(log, "rb") as file:
            file.seek(max(0, file.seek(0, os.SEEK_END) - tail))
            lines = [line for line in file.read().decode("utf-8", "replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return one_line(lines[-1].strip())[:200] if lines else "nothing in its log"


def _raise_if_interrupted(code: int | None) -> None:
    for signum in signals.SIGNALS:
        if code in (128 + signum, -signum):  # stopped by our handler, or by the signal itself
            raise signals.Interrupted(signum)


class _Worker:
    """A worker process: jobs go to its stdin, messages come back on its own pipe (the fd number is its first
    argument), its stdout and stderr are its log."""

    def __init__(self, cores: list[int], folder: str, target: str, cache: bool, log: Path, messages: queue.Queue):
        self.log = log
        incoming, outgoing = os.pipe()
        argv = [sys.executable, "-m", "normlab.experiments.workers", str(outgoing), ",".join(map(str, cores)), folder,
                target, *(["--cache"] if cache else [])]
        try:
            with open_fresh(log) as log_file:
                self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=log_file, stderr=subprocess.STDOUT,
                                                pass_fds=(outgoing,), text=True, bufsize=1,
                                                env={**os.environ, **WORKER_ENV})
        except BaseException:
            os.close(incoming)
            raise
        finally:
            os.close(outgoing)  # the worker's copy alone: its end is the end of the pipe
        threading.Thread(target=self._read, args=(incoming, messages), daemon=True).start()

    def _read(self, incoming: int, messages: queue.Queue) -> None:
        """Every message, then None once the worker is gone. A line that is not JSON is passed on as text (the
        pool stops on it) and reading goes on, so a worker being stopped never blocks on a full pipe."""
        with open(incoming, encoding="utf-8", errors="replace") as pipe:
            for line in pipe:
                if not line.endswith("\n"):  # cut off by the worker's death, which comes next
                    break
                try:
                    messages.put((self, json.loads(line)))
                except ValueError:
                    messages.put((self, line.strip()))
        messages.put((self, None))

    def send(self, job: list) -> None:
        try:
            self.process.stdin.write(json.dumps(job) + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:  # it died: its reader says so next, with how
            pass

    def close(self) -> int | None:
        self.process.stdin.close()
        return self.wait()

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None


def _stop(pool: list[_Worker], signum: int) -> None:
    """Let every worker finish its checkpoint and exit; a Ctrl-C already reached them through the terminal."""
    deadline = time.monotonic() + GRACE_S
    for worker in pool:
        if worker.wait(max(0.0, deadline - time.monotonic())) is None:
            worker.process.send_signal(signum)
    for worker in pool:
        if worker.wait(SHUTDOWN_S) is None:
            worker.process.kill()


def serve(outgoing: int, cores: list[int], folder: str, target: str, cache: bool) -> int:
    """A worker, sending its messages to the pipe ``outgoing``: pinned to ``cores`` before JAX starts (XLA sizes
    its thread pool by the cores it may use), and only then configured, since the compile cache is kept per core
    count (``runtime.compile_cache_dir``)."""
    signals.install()
    os.sched_setaffinity(0, cores)
    _die_with_parent()
    os.set_inheritable(outgoing, False)  # nothing this worker starts can write into the protocol
    protocol = open(outgoing, "w", encoding="utf-8")
    sys.stdout = sys.stderr  # fd 1 is the log as well: prints join it in order with the warnings

    def send(message) -> None:
        protocol.write(json.dumps(message) + "\n")
        protocol.flush()

    try:
        from normlab import runtime
        runtime.configure(compile_cache=cache)
        function = load(target)
        # mapped: the workers share one copy in memory
        arrays = {path.stem: np.load(path, mmap_mode="r", allow_pickle=False) for path in Path(folder).glob("*.npy")}
        while True:
            with signals.interruptible():  # idle between jobs: a signal needs no safe point to stop it here
                line = sys.stdin.readline()
            if not line:
                break
            index, job = json.loads(line)
            send([index, call(function, job, arrays, lambda message, i=index: send([i, message]))])
    except BrokenPipeError:  # the parent is gone: stop rather than train for nobody
        return 1
    except BaseException as error:
        if (stop := signals.interruption(error)) is not None:
            return stop.exit_code
        raise
    return 0


def _die_with_parent() -> None:
    """Ask Linux for SIGTERM when the parent dies (even by SIGKILL), so no orphan writes checkpoints."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


if __name__ == "__main__":
    code = serve(int(sys.argv[1]), [int(core) for core in sys.argv[2].split(",")], sys.argv[3], sys.argv[4],
                 "--cache" in sys.argv[5:])
    sys.stderr.flush()
    os._exit(code)  # as the CLI does: no interpreter shutdown racing XLA's threads after a signal
