"""Data parallel training: every step's batch split over N devices, one program (``jax.shard_map``).

Batch norm is the one layer that couples a batch's rows, so it is what data parallelism changes (its record's
``split``; kinds without a data-parallel form say so, ``Kind.splits``). ``sync``
(PyTorch's SyncBatchNorm): each BN sums its moments over the devices (the statistics kernel's ``axis_name``), so
N devices of B/N rows compute what one device of B rows does. Otherwise (DDP without SyncBatchNorm) each device
normalizes its own rows: ghost batch norm with a virtual batch of B/N, the moving statistics stepped once per
device in device order, so the devices keep the same ones. All else is exact: device d takes rows
[d B/N, (d+1) B/N) of each batch, a padded last batch's mask goes with its rows, a random layer's draws too (every
device has the step's key, ``loop.layer_keys``; the layer's ``split`` form draws for the whole batch and takes its
rows), the loss is the mean over the real rows of the whole batch, and inside ``shard_map`` the gradient of a
replicated parameter is already summed over the devices, so every device takes the same step.
"""

from dataclasses import dataclass

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from normlab.errors import ConfigError
from normlab.nn.models import Model, check_batch
from normlab.nn.registry import KINDS
from normlab.train.processes import joined

AXIS = "data"


@dataclass(frozen=True)
class DataParallel:
    devices: int
    sync: bool = True  # batch norm's statistics over the whole batch (SyncBatchNorm), else per device

    def ask_for_cpu_devices(self) -> None:
        """On a CPU a process has one device unless asked for more before JAX starts: if it has not started yet,
        ask for ``devices`` (virtual) CPU devices, which share the cores. No effect on accelerators, nor in a
        process that joined others (``processes.Processes.join`` asked for its share)."""
        if joined():
            return
        try:
            if jax.config.jax_num_cpu_devices < self.devices:
                jax.config.update("jax_num_cpu_devices", self.devices)
        except RuntimeError:  # JAX has started: its devices are what they are
            pass

    def mesh(self) -> jax.sharding.Mesh:
        """The first ``devices`` devices (of every process, after ``jax.distributed.initialize``) as the data axis."""
        self.ask_for_cpu_devices()
        available = jax.devices()
        if self.devices > len(available):
            hint = (" (on a CPU, ask before JAX starts: XLA_FLAGS=--xla_force_host_platform_device_count=N, or "
                    "jax.config.update('jax_num_cpu_devices', N) right after importing jax)"
                    if available[0].platform == "cpu" else "")
            raise ConfigError(f"--devices {self.devices}: only {len(available)} {available[0].platform} device(s) "
                              f"here{hint}")
        return jax.make_mesh((self.devices,), (AXIS,), devices=available[:self.devices])

    def check(self, model: Model, batch_size: int) -> None:
        if batch_size % self.devices:
            raise ConfigError(f"{self.devices} devices must divide the batch size {batch_size}: each device takes "
                              f"an equal share of every batch")
        if kinds := sorted({node.spec["kind"] for node in model.graph if not KINDS[node.spec["kind"]].splits}):
            raise ConfigError(f"model {model.name}: {', '.join(kinds)} cannot be split over devices yet; train it "
                              f"on one device (leave out --devices)")
        if not self.sync:  # each device normalizes its share alone: a share PyTorch's BN cannot take is an error now
            try:
                check_batch(model, batch_size // self.devices)
            except ConfigError as error:
                raise ConfigError(f"--bn-local: each of {self.devices} devices normalizes {batch_size // self.devices} "
                                  f"row(s) alone; {error}") from None

    def model(self, model: Model) -> Model:
        """``model`` with each layer that has a data-parallel form (``Kind.split``: batch norm's statistics summed,
        ``sync``, or gathered over the data axis) in that form."""
        layers = tuple((name, split(node.spec, AXIS, self.sync) if (split := KINDS[node.spec["kind"]].split)
                        else layer) for (name, layer), node in zip(model.layers, model.graph))
        return model._replace(layers=layers)


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
