"""Seeds in parallel on a CPU: one training process per core, each pinned to its core.

Measured on the 2-core EPYC (bn-after, batch 32): one process leaves the second core half idle — XLA runs each
32-row matmul on one thread — at 1.3-1.6 s per epoch, while two processes pinned to one core each train two
models at 2.0-2.2 s per epoch each: 1.04 s per model-epoch, 1.45x the throughput. Neither vmap (five models'
weights no longer fit the caches: 2.6 s per model-epoch) nor two XLA devices in one process (one shared thread
pool: 1.66 s) gets there, and unpinned processes fight over both cores (2.7-3.5 s each).

So a study's jobs — (preset, seeds) — go to worker processes that take them one at a time. Jobs, per-epoch
metrics and results travel as JSON lines over the workers' stdin and stdout, the data as .npy files: text and
plain arrays only. A worker checkpoints its job exactly where the in-process path would, so a study resumes
either way. Results agree with one process to float32 rounding, not bit for bit (XLA splits loops by the cores
it sees).
"""

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

import numpy as np

ARRAYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
GRACE_S = 2.0     # after an interrupt, how long workers get to stop on their own before it is passed on
SHUTDOWN_S = 120  # ... and to write their checkpoint and exit
# glibc gives each thread its own malloc arena; two arenas are plenty for a one-core worker and keep about
# 60 MB per worker that compilation frees from staying resident (peak RSS of a 3-preset run: 468 -> 409 MB).
WORKER_ENV = {"MALLOC_ARENA_MAX": "2"}


def usable_cores() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def default_workers() -> int:
    """One per core on a CPU; 1 on an accelerator, which trains all seeds in one program instead."""
    import jax
    return len(usable_cores()) if jax.default_backend() == "cpu" else 1


def run(jobs: list[tuple[str, list[int]]], config, data, out: Path | None, resume: bool, on_epoch=None,
        warn=print) -> list:
    """Train ``jobs`` in ``config.worker_count`` processes; return their ``SeedsResult``s in job order."""
    import jax
    from normlab import signals
    from normlab.errors import NormlabError
    cache = jax.config.jax_compilation_cache_dir is not None  # workers cache compiled code iff we do
    with tempfile.TemporaryDirectory(prefix="normlab-") as folder:
        for name in ARRAYS:
            np.save(Path(folder) / f"{name}.npy", np.ascontiguousarray(getattr(data, name)), allow_pickle=False)
        logs = Path(out) / "logs" if out is not None else Path(folder)
        logs.mkdir(parents=True, exist_ok=True)
        messages: queue.Queue = queue.Queue()
        pool = [_Worker(core, folder, cache, logs / f"worker-{core}.log", messages)
                for core in usable_cores()[:min(config.worker_count, len(jobs))]]
        results: list = [None] * len(jobs)
        pending, idle = list(range(len(jobs))), list(pool)
        try:
            while any(r is None for r in results):
                while idle and pending:
                    index = pending.pop(0)
                    preset, seeds = jobs[index]
                    idle.pop(0).send({"job": index, "preset": preset, "seeds": seeds, "config": config.as_dict(),
                                      "out": None if out is None else str(out), "resume": resume})
                signals.check()  # a Ctrl-C for the study stops it within half a second
                try:
                    worker, message = messages.get(timeout=0.5)
                except queue.Empty:
                    continue
                if message is None:
                    code = worker.wait()
                    _raise_if_interrupted(code)  # a Ctrl-C that reached it first
                    raise NormlabError(f"a training process stopped unexpectedly (exit {code}); see {worker.log}")
                if "error" in message:
                    raise NormlabError(message["error"])
                if "warn" in message:
                    warn(message["warn"])
                elif "epoch" in message and on_epoch is not None:
                    on_epoch(jobs[message["job"]][0], message["epoch"],
                             {k: np.asarray(v, np.float64) for k, v in message["metrics"].items()}, message["seconds"])
                elif "done" in message:
                    results[message["job"]] = _seeds_result(message["done"])
                    idle.append(worker)
        except signals.Interrupted as stop:
            _stop(pool, stop.signum)
            raise
        except BaseException:
            _stop(pool, signal.SIGTERM)
            raise
        for worker in pool:
            _raise_if_interrupted(worker.close())  # finished its jobs, but a signal for the study is not lost
    return results


def _raise_if_interrupted(code: int | None) -> None:
    from normlab import signals
    for signum in signals.SIGNALS:
        if code in (128 + signum, -signum):  # stopped by our handler, or by the signal itself
            raise signals.Interrupted(signum)


class _Worker:
    def __init__(self, core: int, folder: str, cache: bool, log: Path, messages: queue.Queue):
        self.log = log
        argv = [sys.executable, "-m", "normlab.experiments.workers", str(core), folder, *(["--cache"] if cache else [])]
        with open(log, "w") as log_file:
            self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_file,
                                            text=True, bufsize=1, env={**os.environ, **WORKER_ENV})
        threading.Thread(target=self._read, args=(messages,), daemon=True).start()

    def _read(self, messages: queue.Queue) -> None:
        for line in self.process.stdout:
            messages.put((self, json.loads(line)))
        messages.put((self, None))

    def send(self, job: dict) -> None:
        self.process.stdin.write(json.dumps(job) + "\n")
        self.process.stdin.flush()

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


def _result_fields(result) -> dict:
    """A ``SeedsResult`` as JSON fields, all but ``final_state`` (it stays in the worker); see ``_seeds_result``."""
    return {"seeds": result.seeds, "history": {k: v.tolist() for k, v in result.history.items()},
            "test": {k: v.tolist() for k, v in result.test.items()}, "diverged_epoch": result.diverged_epoch,
            "compile_s": result.compile_s, "train_s": result.train_s, "resumed_from": result.resumed_from}


def _seeds_result(fields: dict):
    from normlab.train.loop import SeedsResult
    return SeedsResult(fields["seeds"], {k: np.asarray(v, np.float64) for k, v in fields["history"].items()},
                       {k: np.asarray(v, np.float64) for k, v in fields["test"].items()}, fields["diverged_epoch"],
                       fields["compile_s"], fields["train_s"], None, fields["resumed_from"])


def serve(core: int, folder: str, cache: bool) -> int:
    """A worker: pinned to ``core`` before JAX starts (XLA sizes its thread pool by the cores it may use)."""
    from normlab import signals
    signals.install()
    os.sched_setaffinity(0, {core})
    _die_with_parent()
    protocol, sys.stdout = sys.stdout, sys.stderr  # stray prints go to the log, never into the protocol

    def send(message: dict) -> None:
        protocol.write(json.dumps(message) + "\n")
        protocol.flush()

    try:
        from normlab.data import FashionMNIST
        from normlab.errors import NormlabError
        from normlab.experiments.config import StudyConfig
        from normlab.experiments.reproduce import train_job
        from normlab.runtime import enable_compile_cache
        if cache:
            enable_compile_cache()
        files = [Path(folder) / f"{name}.npy" for name in ARRAYS]  # mapped: the workers share one copy in memory
        data = FashionMNIST(*(np.load(file, mmap_mode="r", allow_pickle=False) for file in files),
                            source=Path(folder))
        while True:
            with signals.interruptible():  # idle between jobs: a signal needs no safe point to stop it here
                line = sys.stdin.readline()
            if not line:
                break
            job = json.loads(line)
            index = job["job"]

            def on_epoch(epoch, metrics, seconds, index=index):
                send({"job": index, "epoch": epoch, "seconds": seconds,
                      "metrics": {k: np.asarray(v).tolist() for k, v in metrics.items()}})

            config = StudyConfig.from_dict(job["config"])
            try:
                result = train_job(data, config, job["preset"], job["seeds"], job["out"], job["resume"], on_epoch,
                                   lambda text: send({"warn": text}))
            except NormlabError as error:
                send({"job": index, "error": str(error)})
                return 2
            send({"job": index, "done": _result_fields(result)})
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
    code = serve(int(sys.argv[1]), sys.argv[2], "--cache" in sys.argv[3:])
    sys.stderr.flush()
    os._exit(code)  # as the CLI does: no interpreter shutdown racing XLA's threads after a signal
