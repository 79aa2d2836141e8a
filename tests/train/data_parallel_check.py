"""Run in a process of its own with 4 CPU devices (``test_parallel``): data-parallel training against one device.

Prints one JSON object: for each check, the largest absolute difference between the sharded computation and its
single-device reference (loss, every gradient, every moving statistic; weights after an epoch, and its accuracy
in images).
"""

import json

import jax

jax.config.update("jax_num_cpu_devices", 4)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402

from normlab.engine import gemm  # noqa: E402
from normlab.experiments.config import StudyConfig  # noqa: E402
from normlab.nn.models import build  # noqa: E402
from normlab.train.loop import make_optimizer, seeds_epoch  # noqa: E402
from normlab.train.parallel import AXIS, DataParallel, replicated  # noqa: E402
from normlab.train.preprocess import preprocessing  # noqa: E402
from normlab.train.state import create  # noqa: E402
from normlab.train.step import make_loss  # noqa: E402

DEVICES, ROWS = 4, 8
BATCH = DEVICES * ROWS


def layers(bn: dict) -> list[dict]:
    """An MLP with a batch norm on the input, one with and one without its own bias before it, Keras' and PyTorch's."""
    return [{"kind": "flatten"}, {"kind": "batch_norm", **bn}, {"kind": "dense", "units": 64, "use_bias": False},
            {"kind": "batch_norm", **bn}, {"kind": "activation", "activation": "relu"},
            {"kind": "dense", "units": 32, "activation": "relu"}, {"kind": "batch_norm", **bn},
            {"kind": "dense", "units": 10, "activation": "softmax"}]


def residual_layers() -> list[dict]:
    """A residual MLP: batch norms inside an identity block's branch and inside a projection shortcut."""
    return [{"kind": "flatten"}, {"kind": "dense", "units": 32, "use_bias": False}, {"kind": "batch_norm"},
            {"kind": "residual", "layers": [{"kind": "dense", "units": 32, "use_bias": False}, {"kind": "batch_norm"},
                                            {"kind": "activation", "activation": "relu"}, {"kind": "dense", "units": 32}]},
            {"kind": "residual", "layers": [{"kind": "dense", "units": 16}, {"kind": "batch_norm"}],
             "shortcut": [{"kind": "dense", "units": 16, "use_bias": False}, {"kind": "batch_norm"}]},
            {"kind": "dense", "units": 10, "activation": "softmax"}]


def difference(a, b) -> float:
    return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def metric_differences(metrics, want, n=300) -> dict:
    """The epoch's loss difference, and its accuracy's as a count of the n training predictions."""
    return {"loss": difference(metrics["loss"], want["loss"]),
            "accuracy_images": round(difference(metrics["accuracy"], want["accuracy"]) * n)}


def one_step(model, params, state, x, labels, mask, axis_name=None):
    (loss, (new_state, _, _)), grads = jax.value_and_grad(make_loss(model, axis_name), has_aux=True)(
        params, state, x, labels, mask)
    return loss, grads, new_state


def compare(model, reference, parallel: DataParallel, x, labels, mask) -> dict:
    """One step's loss, gradients and moving statistics: ``parallel`` on 4 devices vs ``reference`` on one."""
    params, state = jax.tree.map(lambda a: a * 1.5 + 0.1, reference_init(model))  # not the trivial init values
    want = jax.jit(lambda *a: one_step(reference, *a))(params, state, x, labels, mask)
    mesh, rows = parallel.mesh(), PartitionSpec(AXIS)
    sharded = jax.jit(jax.shard_map(lambda *a: one_step(parallel.model(model), *a, axis_name=AXIS), mesh=mesh,
                                    in_specs=(PartitionSpec(),) * 2 + (rows,) * 3, out_specs=PartitionSpec()))
    got = sharded(*replicated((params, state), mesh), *jax.device_put((x, labels, mask), NamedSharding(mesh, rows)))
    return {name: difference(g, w) for name, g, w in zip(("loss", "gradients", "moving"), got, want)}


def reference_init(model):
    from normlab.nn.models import init
    return init(model, jax.random.key(3))


def main() -> None:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(2.0, 3.0, (BATCH, 28, 28)).astype(np.float32))
    labels = jnp.asarray(rng.integers(0, 10, BATCH).astype(np.int32))
    full, partial = jnp.ones(BATCH), (jnp.arange(BATCH) < 20).astype(jnp.float32)  # the last device: padding only
    out = {}
    for convention, bn in (("keras", {}), ("pytorch", {"convention": "pytorch"})):
        model = build("mlp", layers(bn))
        ghost_layers = [{"kind": "ghost_batch_norm", "virtual_batch_size": ROWS} if spec["kind"] == "batch_norm"
                        else spec for spec in layers({})]
        ghost = build("ghost", ghost_layers)
        for name, mask in (("full", full), ("partial", partial)):
            out[f"sync-{convention}-{name}"] = compare(model, model, DataParallel(DEVICES, sync=True), x, labels, mask)
            if convention == "keras":  # ghost batch norm has Keras' conventions only
                out[f"local-{name}"] = compare(model, ghost, DataParallel(DEVICES, sync=False), x, labels, mask)
    residual = build("residual", residual_layers())
    out["sync-residual-partial"] = compare(residual, residual, DataParallel(DEVICES, sync=True), x, labels, partial)

    # fit's whole program: one epoch of 300 images (10 steps, the last of 12 real rows), 2 seeds vmapped
    config = StudyConfig(epochs=1)
    train, model = config.train_config(), config.model("bn-after")
    images = jnp.asarray(rng.integers(0, 256, (300, 28, 28), dtype=np.uint8))
    digits = jnp.asarray(rng.integers(0, 10, 300).astype(np.int32))
    ts = jax.vmap(lambda seed: create(model, make_optimizer(train), seed))(jnp.arange(2, dtype=jnp.uint32))
    arguments = (ts, images, digits, 0, jnp.float32(0.05))
    want, want_metrics = seeds_epoch(model, train, 300)(*arguments)
    parallel = DataParallel(DEVICES)
    got, metrics = seeds_epoch(model, train, 300, parallel=parallel)(*replicated(arguments, parallel.mesh()))
    out["epoch"] = {"weights": difference(got.params, want.params), "moving": difference(got.model_state,
                                                                                         want.model_state),
                    **metric_differences(metrics, want_metrics)}
    # normalized and augmented: each step's draws are the whole batch's, split with its rows
    augmented = StudyConfig(epochs=1, normalize="per_channel", augment=["crop4", "flip"]).train_config()
    stats = preprocessing(np.asarray(images), "per_channel")
    alone, alone_metrics = seeds_epoch(model, augmented, 300, stats=stats)(*arguments)
    split, split_metrics = seeds_epoch(model, augmented, 300, parallel=parallel, stats=stats)(
        *replicated(arguments, parallel.mesh()))
    out["augmented-epoch"] = {"weights": difference(split.params, alone.params),
                              "moving": difference(split.model_state, alone.model_state),
                              **metric_differences(split_metrics, alone_metrics)}
    for name in gemm.usable(("mkl", "openblas")):  # the BLAS GEMM's custom calls inside shard_map
        got, metrics = seeds_epoch(model, train, 300, parallel=parallel)(*replicated(arguments, parallel.mesh()))
        out[f"epoch-{name}"] = {"weights": difference(got.params, want.params),
                                **metric_differences(metrics, want_metrics)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
