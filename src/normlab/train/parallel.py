"""Data parallel training: every step's batch split over N devices, one program (``jax.shard_map``).

Batch norm is the one layer that couples a batch's rows, so it is what data parallelism changes. ``sync``
(PyTorch's SyncBatchNorm): each BN sums its moments over the devices (the statistics kernel's ``axis_name``), so
N devices of B/N rows compute what one device of B rows does. Otherwise (DDP without SyncBatchNorm) each device
normalizes its own rows: ghost batch norm with a virtual batch of B/N, the moving statistics stepped once per
device in device order, so the devices keep the same ones. All else is exact: device d takes rows
[d B/N, (d+1) B/N) of each batch, a padded last batch's mask goes with its rows, the loss is the mean over the
real rows of the whole batch, and inside ``shard_map`` the gradient of a replicated parameter is already summed
over the devices, so every device takes the same step.
"""

from dataclasses import dataclass

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from normlab.errors import ConfigError
from normlab.files import one_line
from normlab.nn.models import Model
from normlab.nn.registry import KINDS

AXIS = "data"
# Kinds that couple or draw per row without a data-parallel form yet (their statistics or noise would be per device).
NOT_SPLITTABLE = ("batch_renorm", "ghost_batch_norm", "covariate_noise")


@dataclass(frozen=True)
class DataParallel:
    devices: int
    sync: bool = True  # batch norm's statistics over the whole batch (SyncBatchNorm), else per device

    def mesh(self) -> jax.sharding.Mesh:
        """The first ``devices`` devices (of every process, after ``jax.distributed.initialize``) as the data axis.

        On a CPU a process has one device unless asked for more before JAX starts: if it has not started yet, this
        asks for ``devices`` (virtual) CPU devices, which share the cores.
        """
        try:
            if jax.config.jax_num_cpu_devices < self.devices:
                jax.config.update("jax_num_cpu_devices", self.devices)
        except RuntimeError:  # JAX has started: its devices are what they are
            pass
        available = jax.devices()
        if self.devices > len(available):
            hint = (" (on a CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N makes N)"
                    if available[0].platform == "cpu" else "")
            raise ConfigError(f"--devices {self.devices}: only {len(available)} {available[0].platform} device(s) "
                              f"here{hint}")
        return jax.make_mesh((self.devices,), (AXIS,), devices=available[:self.devices])

    def check(self, model: Model, batch_size: int) -> None:
        if batch_size % self.devices:
            raise ConfigError(f"--devices {self.devices} must divide the batch size {batch_size}: each device takes "
                              f"an equal share of every batch")
        if kinds := sorted({spec["kind"] for spec in model.spec} & set(NOT_SPLITTABLE)):
            raise ConfigError(f"model {model.name}: {', '.join(kinds)} cannot be split over devices yet; train it "
                              f"on one device (leave out --devices)")

    def model(self, model: Model) -> Model:
        """``model`` with its batch norms summing (``sync``) or gathering their statistics over the data axis."""
        layers = tuple((name, KINDS["batch_norm"](**_options(spec), axis_name=AXIS, sync=self.sync)
                        if spec["kind"] == "batch_norm" else layer)
                       for (name, layer), spec in zip(model.layers, model.spec))
        return model._replace(layers=layers)


@dataclass(frozen=True)
class Processes:
    """A run over several processes (hosts), each contributing its devices to one mesh: ``jax.distributed``."""
    coordinator: str  # host:port of process 0, which the others connect to
    count: int
    index: int
    timeout_s: int = 300  # how long a process waits for the others to join

    def join(self, devices: int) -> None:
        """Before JAX starts: connect to the others; on a CPU each process gets ``devices / count`` virtual devices,
        their collectives over gloo (GPUs use NCCL)."""
        if devices % self.count:
            raise ConfigError(f"--devices {devices} must be a multiple of --processes {self.count}: each process "
                              f"contributes as many devices")
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.config.update("jax_num_cpu_devices", devices // self.count)
        try:
            jax.distributed.initialize(self.coordinator, self.count, self.index,
                                       initialization_timeout=self.timeout_s)
        except Exception as error:  # noqa: BLE001 - XLA's own errors: a bad address, a process that never came
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ConfigError(f"process {self.index} of {self.count} could not join {one_line(self.coordinator)}: "
                              f"{one_line(first)}") from None


def _options(spec: dict) -> dict:
    return {key: value for key, value in spec.items() if key != "kind"}


def device_rows(batches, axis_name: str):
    """This device's consecutive share of every batch's rows (axis 1 of each of ``batches``)."""
    index, count = jax.lax.axis_index(axis_name), jax.lax.axis_size(axis_name)

    def share(rows):
        width = rows.shape[1] // count
        return jax.lax.dynamic_slice_in_dim(rows, index * width, width, axis=1)

    return jax.tree.map(share, batches)


def replicated(tree, mesh: jax.sharding.Mesh):
    """``tree``'s arrays on every device of ``mesh``, where the sharded epoch reads them (once, not per call). Over
    several processes each gives its own copy (they are equal: same seeds, same data) for its own devices."""
    sharding = NamedSharding(mesh, PartitionSpec())
    if not mesh.is_multi_process:
        return jax.device_put(tree, sharding)

    def put(array):
        if jax.dtypes.issubdtype(array.dtype, jax.dtypes.prng_key):  # typed keys travel as their raw data
            return jax.random.wrap_key_data(put(jax.random.key_data(array)), impl=jax.random.key_impl(array))
        return jax.make_array_from_process_local_data(sharding, np.asarray(array))

    return jax.tree.map(put, tree)


def one_copy(tree):
    """One device's copy of replicated arrays (this process's first): what evaluation and checkpoints read."""
    return jax.tree.map(lambda array: array.addressable_data(0), tree)
