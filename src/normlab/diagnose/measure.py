"""An epoch of training that measures as it trains: every ``every`` steps of an epoch, before that step's update,
the probes run on the step's own batch (the gradients) and on fixed held-out images (what a unit sees), with the
step's own key for random layers (dropout): the gradient probed is the one that step takes.

The epoch is a scan over chunks of ``every`` steps, each a probe then a scan of training steps: no branch in the
step (a ``lax.cond`` per step copied its operands, the validation set among them, at every step), so the steps
in between cost what a plain training step costs.
"""

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax

from normlab.diagnose.probes import ics, landscape, last_hidden_nonlinearity, nonlinearity_input, percentiles
from normlab.nn.models import Model
from normlab.train.loop import batch_mask, layer_keys, shuffled_batches
from normlab.train.state import TrainState
from normlab.train.step import make_evaluate, make_loss, make_train_step, scale_pixels


@dataclass(frozen=True)
class Probes:
    """What to measure and how often (the defaults are `normlab diagnose`'s)."""
    every: int                 # measure before global steps 0, every, 2*every, ...
    etas: tuple[float, ...]    # step sizes along the gradient for the landscape, predictiveness and beta
    unit: int = 0              # the watched unit of the last hidden nonlinearity (Ioffe & Szegedy, Fig. 1)


def measured_steps(steps: int, every: int) -> np.ndarray:
    """The steps of an epoch (0-based) that are measured: each epoch is measured from its first step on."""
    return np.arange(0, steps, every)


def dense_layers(model: Model) -> list[str]:
    """The layers with a kernel: where internal covariate shift is measured."""
    return [name for (name, _), node in zip(model.layers, model.graph) if node.spec["kind"] == "dense"]


def make_probe(model: Model, optimizer, probes: Probes):
    """``probe(ts, images_u8, labels, mask, held_out, key=None) -> dict`` of one step's measures; ``held_out``
    holds the probe images ("watch", uint8) and the validation set ("x_val", "y_val"); ``key`` is the step's for
    its random layers (``train.loop.layer_keys``)."""
    loss = make_loss(model)
    evaluate = make_evaluate(model)
    names, kernels = [name for name, _ in model.layers], dense_layers(model)
    watched = last_hidden_nonlinearity(model)
    etas = jnp.asarray(probes.etas, jnp.float32)

    def probe(ts: TrainState, images_u8, labels, mask, held_out, key=None) -> dict:
        x = scale_pixels(images_u8)

        def batch_loss(params):
            return loss(params, ts.model_state, x, labels, mask, key)[0]

        grads = jax.grad(batch_loss)(ts.params)
        updates, _ = optimizer.update(grads, ts.opt_state, ts.params)
        seen = nonlinearity_input(model, ts.params, ts.model_state, scale_pixels(held_out["watch"]), watched, key)
        _, val_accuracy = evaluate(ts.params, ts.model_state, held_out["x_val"], held_out["y_val"])
        return {"val_accuracy": val_accuracy, "percentiles": percentiles(seen[:, probes.unit]),
                "ics": ics(batch_loss, ts.params, optax.apply_updates(ts.params, updates), names, kernels),
                **landscape(batch_loss, ts.params, grads, etas)}

    return probe


def make_probed_epoch(model: Model, optimizer, num_examples: int, batch_size: int, probes: Probes,
                      shuffle: bool = True):
    """``epoch(ts, images_u8, labels, epoch_index, held_out) -> (ts, {"loss", "accuracy"}, measures)``:
    ``train.loop.make_epoch``'s training (up to float32 rounding: XLA may fuse the same step differently inside
    another loop), measured before steps 0, every, 2 * every, ... of the epoch (``measured_steps``); each measure
    has one row per measurement."""
    mask = jnp.asarray(batch_mask(num_examples, batch_size))
    steps = len(mask)
    whole = steps // probes.every * probes.every  # steps in whole chunks of ``every``; the rest is one chunk more
    step = make_train_step(model, optimizer)
    probe = make_probe(model, optimizer, probes)

    def epoch(ts: TrainState, images_u8, labels, epoch_index, held_out):
        batches = (shuffled_batches(ts.rng, epoch_index, num_examples, batch_size, shuffle), mask,
                   layer_keys(model, ts.rng, epoch_index, steps))  # keys None: no random layer

        def train(ts, batch):
            rows, batch_mask_, key = batch
            return step(ts, images_u8[rows], labels[rows], batch_mask_, key=key)

        def chunk(ts, batches):
            rows, batch_mask_, keys = batches
            first_key = jax.tree.map(lambda k: k[0], keys)  # None stays None
            measures = probe(ts, images_u8[rows[0]], labels[rows[0]], batch_mask_[0], held_out, first_key)
            ts, sums = jax.lax.scan(train, ts, batches)
            return ts, (sums, measures)

        chunked = jax.tree.map(lambda a: a[:whole].reshape(-1, probes.every, *a.shape[1:]), batches)
        ts, (sums, measures) = jax.lax.scan(chunk, ts, chunked)
        sums = [s.reshape(-1) for s in sums]
        if whole < steps:  # the epoch's last, shorter chunk (static shapes: its own scan)
            ts, (rest, last) = chunk(ts, jax.tree.map(lambda a: a[whole:], batches))
            sums = [jnp.concatenate([s, r]) for s, r in zip(sums, rest)]
            measures = jax.tree.map(lambda m, x: jnp.concatenate([m, x[None]]), measures, last)
        loss_sums, correct_sums = sums
        return ts, {"loss": jnp.sum(loss_sums) / num_examples,
                    "accuracy": jnp.sum(correct_sums) / num_examples}, measures

    return epoch
