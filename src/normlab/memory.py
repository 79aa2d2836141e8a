"""Memory: what training a model needs, what this process may still have, and the one message for running out.

A study is checked before any work starts (``check``): a model whose activations cannot fit is refused in one
line, not minutes later by XLA's RESOURCE_EXHAUSTED traceback or the kernel's OOM killer. Running out anyway
(another program took the memory meanwhile) ends in one line too (``out_of_memory``). The estimate compiles
nothing: it reads the layers' output shapes (``models.abstract``) and their working buffers (``Kind.workspace``).
"""

import dataclasses
import functools
import json
import math
import resource
import sys
from pathlib import Path

from normlab.errors import ConfigError, NormlabError
from normlab.files import one_line

FLOAT = 4
# `normlab train bn-after --subset 500 --epochs 1`, whose activations are about 1 MB, peaked at 605 MB resident
# (/usr/bin/time -v; 2-core EPYC, jaxlib 0.10.2): Python, JAX and XLA, the compiled programs, the data, the report.
PROCESS = 600 << 20
LINE = 200  # characters of XLA's message kept: its first line says what it could not allocate
CHANGES = ("fewer workers or seeds per program, a smaller batch size, or a model with smaller activations (fewer "
           "filters, a stride or a pooling layer before a wide convolution); a smaller subset does not help: "
           "activations grow with the batch and the 1,000-image evaluation chunks, not with the data")


class OutOfMemory(NormlabError):
    """Training ran out of memory after all: another program took it meanwhile, or the estimate fell short."""


def out_of_memory(error: BaseException) -> OutOfMemory | None:
    """``error`` as one line if it is running out of memory (a MemoryError, XLA's RESOURCE_EXHAUSTED), else None."""
    if isinstance(error, OutOfMemory):
        return error
    if isinstance(error, MemoryError):
        return OutOfMemory(f"out of memory (a memory allocation failed); ask for {CHANGES}")
    jax = sys.modules.get("jax")  # no XLA error without JAX loaded: a light command never imports it here
    text = str(error).strip()
    if jax is None or not isinstance(error, jax.errors.JaxRuntimeError) or not (
            "RESOURCE_EXHAUSTED" in text or "Out of memory" in text):
        return None
    first = one_line(text.splitlines()[0])[:LINE] if text else type(error).__name__
    return OutOfMemory(f"out of memory ({first}); ask for {CHANGES}")


def activation_bytes(model, rows: int, train: bool) -> int:
    """What one seed's program holds at its peak beside its weights, for ``rows`` examples, training or evaluating.

    Calibrated on XLA's own buffer assignment (``compile().memory_analysis().temp_size_in_bytes``; jaxlib 0.10.2,
    CPU) for 10 models from the MLPs and cnn-bn to three 64-filter "same" convolutions: a training step holds about
    2x (every layer's output + every convolution's im2col patches) per example — the forward values the backward
    pass keeps, and their gradients — measured 0.47-1.04x of this at batch 256 (where activations, not the weights'
    gradients that ``training_bytes`` counts apart, dominate); an evaluation chunk 2x (the largest output + the
    largest patches), measured 0.69-1.0x (three 64-filter convolutions: 3.64 GiB of an estimated 3.83 GiB for a
    1,000-image chunk, its 9 shifted copies and their concatenation alive at once). A whole `normlab run` of that
    model, one seed, peaked at 4.36 GB resident (/usr/bin/time -v), ``training_bytes`` says 4.6 GB.
    """
    return _activation_bytes(_key(model), rows, train)


def _key(model) -> str:
    """A model as the text ``models.build`` rebuilds it from: the caches' key."""
    return json.dumps([model.name, model.spec, model.data], sort_keys=True, default=str)


def _model(key: str):
    from normlab.nn.models import build
    name, spec, data = json.loads(key)
    return build(name, spec, data=data)


def _activation_bytes(key: str, rows: int, train: bool) -> int:
    outputs, workspaces = _values(key)
    per_example = sum(outputs) + sum(workspaces) if train else max(outputs) + max(workspaces)
    return 2 * FLOAT * rows * per_example


@functools.lru_cache(maxsize=256)
def _values(key: str) -> tuple[list[int], list[int]]:
    """Per layer: one example's output values, and the values it works on beside them (``Kind.workspace``)."""
    from normlab.nn.models import abstract, input_of
    from normlab.nn.registry import KINDS
    model = _model(key)
    shapes = abstract(model)[2]
    workspaces = [(workspace := KINDS[node.spec["kind"]].workspace) and workspace(
        node.spec, input_of(model, index, shapes, tuple(model.data.image)), shapes[index]) or 0
                  for index, node in enumerate(model.graph)]
    return [math.prod(shape) for shape in shapes], workspaces


def training_bytes(model, train, seeds: int, examples: int, evaluated: int, pixel_bytes: int = 1) -> int:
    """What one training process needs at its peak: ``PROCESS``, the images (the ``examples`` training images once
    per device, the ``evaluated`` validation and test images, ``pixel_bytes`` per value: 1 for uint8, 4 for
    float32), and per seed the weights three times (as they are, their gradients, updated), the optimizer's state
    and the larger of a training step's and an evaluation chunk's activations. ``train``: a ``TrainConfig``."""
    # cached without the learning rate and epochs, which change no shape: a sweep's trials share their estimates
    weights = _weights_bytes(_key(model), dataclasses.replace(train, learning_rate=1.0, epochs=1), seeds)
    return weights + pixel_bytes * math.prod(model.data.image) * (examples * train.devices + evaluated)


@functools.lru_cache(maxsize=1024)
def _weights_bytes(key: str, train, seeds: int) -> int:
    import jax
    from normlab.nn.models import abstract
    from normlab.train.loop import make_optimizer
    from normlab.train.step import EVAL_CHUNK
    params, state, _ = abstract(_model(key))
    optimizer = jax.eval_shape(make_optimizer(train).init, params)
    carried = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves((params, params, params, state, optimizer)))
    activations = max(_activation_bytes(key, train.batch_size, True), _activation_bytes(key, EVAL_CHUNK, False))
    return PROCESS + seeds * (FLOAT * carried + activations)


def check(need: int, processes: int, what: str) -> None:
    """Refuse ``processes`` at once of ``need`` bytes each (``training_bytes``) beyond what this process and this
    machine still give (``headroom``); ``what`` names the largest job ("PRESET at batch size 32, 1 seed per
    program")."""
    for room, source, per_process, on_device in headroom():
        each = need - PROCESS if on_device else need  # an accelerator holds all but the host process itself
        total = each if per_process else each * processes
        if total > room:
            together = "" if per_process or processes == 1 else f", {_gb(total)} for {processes} at once"
            raise ConfigError(f"not enough memory: {what} needs about {_gb(each)} per training process{together}, "
                              f"but {source} leaves {_gb(room)}; ask for {CHANGES}")


def _gb(count: int) -> str:
    return f"{count / 1e9:.1f} GB"


def headroom() -> list[tuple[int, str, bool, bool]]:
    """What this machine still gives: ``(bytes, whose limit, whether it holds per process, whether it is an
    accelerator's)`` for the memory available (MemAvailable), every cgroup limit above this process, this
    process's RLIMIT_AS and RLIMIT_DATA (which the workers it starts inherit), and an accelerator's own memory,
    where the training runs there (JAX has started: the pool's size started it)."""
    found = []
    if (available := _meminfo().get("MemAvailable")) is not None:
        found.append((available, "the memory available (MemAvailable in /proc/meminfo)", False, False))
    found += [(limit - used, f"the cgroup limit {path}", False, False) for path, limit, used in _cgroups()]
    status = _meminfo("/proc/self/status")
    for name, kind, size, resident in (("RLIMIT_AS", resource.RLIMIT_AS, "VmSize", "VmRSS"),
                                       ("RLIMIT_DATA", resource.RLIMIT_DATA, "VmData", "RssAnon")):
        limit = resource.getrlimit(kind)[0]
        if limit != resource.RLIM_INFINITY and size in status:
            # the address space JAX reserves without using it (thread stacks, arenas) is gone; what it uses is
            # part of ``PROCESS``, which every estimate counts
            found.append((limit - status[size] + status.get(resident, 0), f"{name} ({_gb(limit)})", True, False))
    import jax
    device = jax.local_devices()[0]  # this process's own: another's (several processes) has no statistics here
    stats = device.memory_stats() or {}  # None on a CPU, whose memory is the host's above
    if "bytes_limit" in stats:
        found.append((stats["bytes_limit"] - stats.get("bytes_in_use", 0), f"the {device.device_kind}'s memory",
                      True, True))
    return found


def _meminfo(path: str = "/proc/meminfo") -> dict[str, int]:
    """The ``NAME: N kB`` lines of ``/proc/meminfo`` or ``/proc/self/status``, in bytes."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return {}
    found = {}
    for line in lines:
        name, _, value = line.partition(":")
        if (fields := value.split()) and fields[-1] == "kB" and fields[0].isdigit():
            found[name] = int(fields[0]) << 10
    return found


def _cgroups() -> list[tuple[str, int, int]]:
    """``(limit file, limit, usage)`` of every cgroup above this process that limits memory: cgroup v2's
    memory.max up the hierarchy, or cgroup v1's memory.limit_in_bytes."""
    try:
        own = next(line[3:] for line in Path("/proc/self/cgroup").read_text().splitlines() if line.startswith("0::"))
    except (OSError, StopIteration):
        own = None
    root = Path("/sys/fs/cgroup")
    folders = [] if own is None else [root / own.strip("/"), *(root / own.strip("/")).parents]
    pairs = [(folder / "memory.max", folder / "memory.current") for folder in folders
             if root in (folder, *folder.parents)]
    pairs.append((root / "memory" / "memory.limit_in_bytes", root / "memory" / "memory.usage_in_bytes"))
    found = []
    for limit_file, usage_file in pairs:
        try:
            limit, used = int(limit_file.read_text()), int(usage_file.read_text())
        except (OSError, ValueError):  # none there, or "max"
            continue
        if limit < 1 << 60:  # cgroup v1 writes "no limit" as about 2**63
            found.append((str(limit_file), limit, used))
    return found
