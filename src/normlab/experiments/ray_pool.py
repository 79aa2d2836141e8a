"""The pool's jobs as Ray tasks (``normlab run STUDY --engine ray``), for sweeps that outgrow one machine.

Same contract as ``workers.run``: a job is JSON for a ``module:function`` target, called in a Ray worker as
``function(job, arrays, send)``; what it sends reaches ``on_message`` as it happens (through a Ray queue), then its
result or its user error. The data go to the object store once and every task maps them. Tasks write their run
folders themselves, so on a cluster the sweep's folder must be on a file system every node shares. Without an
``address`` a local Ray instance is started for the sweep and shut down after it; with one (``auto``, or
``HOST:PORT`` of a running cluster's head) the sweep joins that cluster and leaves it running.
"""

import logging
import socket
import warnings
from typing import Callable

import numpy as np

from normlab import signals
from normlab.errors import ConfigError, NormlabError

POLL_S = 0.5  # how often the driver looks for a signal while it waits for messages
CONNECT_S = 10  # how long a cluster's head may take to accept a connection


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
    ours = not ray.is_initialized()
    if ours:
        _check_reachable(address)
        try:
            with warnings.catch_warnings():  # Ray's fork is followed by exec at once: JAX's threads do not matter
                warnings.filterwarnings("ignore", "os.fork", RuntimeWarning)
                ray.init(address=address, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError) as error:
            raise ConfigError(f"Ray: cannot start or reach {address or 'a local instance'}: "
                              f"{str(error).strip().splitlines()[0] if str(error).strip() else error}") from None
    tasks = {}
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
    finally:
        if ours:
            ray.shutdown()


def _check_reachable(address: str | None) -> None:
    """A head at ``HOST:PORT`` that does not answer is one line now: Ray itself would retry for minutes."""
    if address is None or address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--address must be auto or a Ray head's HOST:PORT, got {address!r:.80}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_S).close()
    except OSError as error:
        raise ConfigError(f"Ray: no head answers at {address} ({error.strerror or error}); start one with "
                          f"`ray start --head`, or leave out --address for a local instance") from None


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
