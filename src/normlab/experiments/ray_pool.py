"""The pool's jobs as Ray tasks (``normlab run STUDY --engine ray``), for sweeps that outgrow one machine.

Same contract as ``workers.run``: a job is JSON for a ``module:function`` target, called in a Ray worker as
``function(job, arrays, send)``; what it sends reaches ``on_message`` as it happens (through a Ray queue), then its
result or its user error. The data go to the object store once and every task maps them. Tasks write their run
folders themselves, so on a cluster the sweep's folder must be on a file system every node shares. Without an
``address`` a local Ray instance is started for the sweep and shut down after it (``ray_guard`` stops it when the
sweep is killed); with one (``auto``, or ``HOST:PORT`` of a running cluster's head) the sweep joins that cluster
and leaves it running.
"""

import contextlib
import logging
import signal
import socket
import threading
import warnings
from typing import Callable

import numpy as np

from normlab import signals
from normlab.errors import ConfigError, NormlabError, shown
from normlab.experiments import ray_guard
from normlab.files import one_line
from normlab.net import host_port

POLL_S = 0.5  # how often the driver looks for a signal while it waits for messages
CONNECT_S = 5  # how long a cluster's head may take to accept a connection, and to answer HTTP/2's preface (a GCS: ms)
JOIN_S = 30  # how long joining a cluster may take once its head has answered (Ray itself: minutes)
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS = bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # an empty SETTINGS frame: length 0, type 4, no flags, stream 0


def pool(address: str | None = None) -> Callable:
    """A ``workers.run``-like function that runs the jobs on Ray (``address`` as ``ray.init`` takes it)."""

    def run(target: str, jobs: list[dict], arrays: dict[str, np.ndarray], workers: int,
            on_message: Callable[[int, dict], None], logs=None) -> None:
        _run(address, target, jobs, arrays, on_message)

    return run


def _task(target: str, index: int, job: dict, arrays: dict, inbox) -> None:
    """In a Ray worker: the engine set up as a pool worker's (before JAX starts there), then the job."""
    from normlab import runtime
    from normlab.experiments import workers
    runtime.configure(compile_cache=True)
    inbox.put((index, workers.call(workers.load(target), job, arrays, lambda message: inbox.put((index, message)))))


def _run(address, target, jobs, arrays, on_message) -> None:
    try:
        import ray
        from ray.util.queue import Empty, Queue
    except ImportError:
        raise ConfigError("--engine ray needs Ray: pip install 'normlab[ray]'") from None
    tasks = {}
    with contextlib.ExitStack() as ours:
        if not ray.is_initialized():
            if address is None:
                ours.enter_context(ray_guard.guarded())  # its processes end with the sweep, even a killed one
            _check_reachable(address)
            _connect(ray, address)
            ours.callback(ray.shutdown)
        try:
            inbox, shared = Queue(), ray.put(arrays)
            # a fresh worker process per job, as the local pool's: its engine and devices are set before JAX starts
            remote = ray.remote(num_cpus=1, max_retries=0, max_calls=1)(_task)
            tasks = {remote.remote(target, index, job, shared, inbox): index for index, job in enumerate(jobs)}
            finished = set()
            while len(finished) < len(jobs):
                signals.check()
                try:
                    index, message = inbox.get(timeout=POLL_S)
                except Empty:
                    _raise_if_a_task_died(ray, tasks, finished)
                    continue
                if "done" in message or "error" in message:
                    finished.add(index)
                on_message(index, message)
        except BaseException:
            for ref in tasks:
                ray.cancel(ref, force=True)
            raise


def _connect(ray, address: str | None) -> None:
    """``ray.init``, then normlab's signal handlers again: Ray's init sets a SIGTERM handler that calls
    ``sys.exit`` wherever the program is, and its core worker a C++ one that aborts (exit 134, a stack trace).
    A local instance starts in this (the main) thread, whose life its processes share. A cluster is joined in a
    thread of its own, given up after JOIN_S, or at once on a signal: Ray retries a head that does not answer for
    minutes, deaf to Ctrl-C."""
    options = {"address": address, "include_dashboard": False, "logging_level": logging.ERROR,
               "log_to_driver": False}
    try:
        with warnings.catch_warnings():  # Ray's fork is followed by exec at once: JAX's threads do not matter
            warnings.filterwarnings("ignore", "os.fork", RuntimeWarning)
            if address is None:
                with signals.interruptible():
                    ray.init(**options)
            else:
                _abandonable(lambda: ray.init(**options), address)
    except SystemExit:  # Ray's SIGTERM handler, while its init ran
        raise signals.Interrupted(signal.SIGTERM) from None
    except (ConnectionError, ValueError, RuntimeError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ConfigError(f"Ray: cannot start or reach {address or 'a local instance'}: {one_line(first)}") from None
    finally:
        if threading.current_thread() is threading.main_thread():  # where normlab's handlers were in force
            signals.install()


def _abandonable(call: Callable[[], object], address: str) -> None:
    """``call()`` in a daemon thread, waited for JOIN_S at most, and left behind at once on SIGINT/SIGTERM."""
    outcome = {}

    def run():
        try:
            call()
        except BaseException as error:  # noqa: BLE001 - raised in the waiting thread
            outcome["error"] = error

    thread = threading.Thread(target=run, name="normlab-ray-join", daemon=True)
    thread.start()
    with signals.interruptible():
        thread.join(JOIN_S)
    if thread.is_alive():
        raise ConfigError(f"Ray: the head at {one_line(address)} did not let this sweep join within {JOIN_S} s")
    if "error" in outcome:
        raise outcome["error"]


def _check_reachable(address: str | None) -> None:
    """A head at ``HOST:PORT`` that does not answer, or answers but not as Ray's (gRPC), is one line within
    seconds, and a signal stops the wait at once: Ray itself would retry for minutes. A Ray head's GCS is a gRPC
    server: to HTTP/2's client preface it answers with a SETTINGS frame; a plain TCP or HTTP/1 server does not."""
    if address is None or address == "auto" or "://" in address:
        return
    if (where := host_port(address)) is None:
        raise ConfigError(f"--address must be auto or a Ray head's HOST:PORT, the port 1..65535 in ASCII digits, "
                          f"got {shown(address)}")
    with signals.interruptible():
        try:
            with socket.create_connection(where, timeout=CONNECT_S) as head:
                head.sendall(HTTP2_PREFACE + SETTINGS)
                head.settimeout(CONNECT_S)
                answer = b""
                while len(answer) < 9 and (chunk := head.recv(9 - len(answer))):
                    answer += chunk
        except TimeoutError:
            raise ConfigError(f"Ray: {one_line(address)} does not answer as a Ray head within {CONNECT_S} s (no "
                              f"gRPC there); start one with `ray start --head`, or leave out --address for a "
                              f"local instance") from None
        except OSError as error:
            raise ConfigError(f"Ray: no head answers at {one_line(address)} ({error.strerror or error}); start one "
                              f"with `ray start --head`, or leave out --address for a local instance") from None
    if len(answer) < 9 or answer[3] != SETTINGS[3]:
        raise ConfigError(f"Ray: what answers at {one_line(address)} is not a Ray head (it does not speak gRPC); "
                          f"give the head's GCS address (`ray start --head` prints it)")


def _raise_if_a_task_died(ray, tasks: dict, finished: set) -> None:
    """A task that ended without its last message (its worker killed, out of memory) stops the sweep."""
    ready, _ = ray.wait(list(tasks), num_returns=len(tasks), timeout=0)
    for ref in ready:
        if tasks[ref] not in finished:
            try:
                ray.get(ref)
            except Exception as error:  # noqa: BLE001 - Ray's task errors: the sweep stops with a line
                raise NormlabError(f"a Ray task stopped unexpectedly: "
                                   f"{(str(error).strip().splitlines() or [type(error).__name__])[-1]}") from None
