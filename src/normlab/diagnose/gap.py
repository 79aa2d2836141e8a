"""The train/eval gap of batch normalization: the same weights with three kinds of BN statistics.

* batch statistics: each batch normalized by its own mean and variance, as in training;
* moving statistics: Keras' exponential moving averages, what inference normally uses;
* precise statistics: population statistics recomputed after training with the weights frozen, Ioffe &
  Szegedy's Algorithm 2 (steps 8-11): E[x] = mean of the batch means, Var[x] = m/(m-1) * mean of the biased batch
  variances, over N training batches of size m.

Random layers (dropout) draw as in training, with one fixed key (``probes.measuring_key``).
"""

import jax
import jax.numpy as jnp
import numpy as np

from normlab.diagnose.probes import measuring_key
from normlab.nn.losses import correct
from normlab.nn.models import Model, apply, build, rewritten
from normlab.nn.registry import KINDS
from normlab.train.loop import batch_mask
from normlab.train.step import scale_pixels


def has_moving_statistics(state: dict) -> bool:
    return any("moving_mean" in layer for layer in state.values())


def batched(n: int, batch_size: int):
    """Rows 0..n-1 as (batches, batch_size) indices, the last batch padded, and the mask of the real rows."""
    mask = batch_mask(n, batch_size)
    return jnp.asarray(np.minimum(np.arange(mask.size), n - 1).reshape(mask.shape)), jnp.asarray(mask)


def make_batch_statistics_accuracy(model: Model, n: int, batch_size: int):
    """``accuracy(params, state, images_u8, labels)``: every batch of ``batch_size`` normalized by its own
    statistics (training mode, the state it would update thrown away); the padded last batch counts its real rows."""
    rows, mask = batched(n, batch_size)
    key = measuring_key(model)

    def accuracy(params, state, images_u8, labels):
        def body(total, batch):
            batch_rows, batch_mask = batch
            logits, _ = apply(model, params, state, scale_pixels(images_u8[batch_rows]), True, batch_mask, key)
            return total + jnp.sum(correct(logits, labels[batch_rows]) * batch_mask), None

        total, _ = jax.lax.scan(body, jnp.float32(0), (rows, mask))
        return total / n

    return accuracy


def statistics_twin(model: Model) -> Model:
    """The model whose training-mode state update is exactly each batch's statistics (``Kind.batch_statistics``:
    batch norm at momentum 0): read through the layers' own protocol."""

    def twin(path, table):
        derive = KINDS[table["kind"]].batch_statistics
        return derive(table) if derive else table

    return build(model.name, rewritten(model.spec, twin), data=model.data)  # the model's own name: a longer one could pass the 100 characters a name may have


def make_precise_statistics(model: Model, batches: int, batch_size: int):
    """``precise(params, state, images_u8) -> state`` with every moving mean and variance replaced by Algorithm 2's
    population estimate over ``batches`` full batches: images ``0 .. batches * batch_size - 1`` of ``images_u8``."""
    twin = statistics_twin(model)
    rows = jnp.arange(batches * batch_size).reshape(batches, batch_size)
    unbiased = batch_size / (batch_size - 1) if batch_size > 1 else 1.0
    key = measuring_key(twin)

    def precise(params, state, images_u8):
        # the twin's new state is 0 * moving + 1 * batch: zeros in, so a diverged (inf) moving average cannot make NaN
        zeroed = {name: {k: jnp.zeros_like(v) if k.startswith("moving_") else v for k, v in layer.items()}
                  for name, layer in state.items()}

        def one(batch_rows):
            return apply(twin, params, zeroed, scale_pixels(images_u8[batch_rows]), True, key=key)[1]

        per_batch = jax.lax.map(one, rows)
        new = dict(state)
        for name, layer in state.items():
            if "moving_mean" in layer:
                new[name] = {**layer, "moving_mean": jnp.mean(per_batch[name]["moving_mean"], axis=0),
                             "moving_variance": unbiased * jnp.mean(per_batch[name]["moving_variance"], axis=0)}
        return new

    return precise
