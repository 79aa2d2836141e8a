"""Train each preset over its seeds with the probes on, and after every epoch measure the train/eval gap and
snapshot activation and gradient histograms; the result is one ``presets`` entry of ``diagnostics.json``.

All seeds of a preset are one compiled program (``vmap``), as in ``train.loop.fit``; the host sees one call per
epoch. Numbers that are not finite (a diverged seed) become None, JSON's null.
"""

import math
import time
from dataclasses import dataclass
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from normlab import signals
from normlab.errors import ConfigError
from normlab.diagnose.gap import has_moving_statistics, make_batch_statistics_accuracy, make_precise_statistics
from normlab.diagnose.measure import Probes, make_probed_epoch, measured_steps
from normlab.diagnose.probes import last_hidden_nonlinearity, measuring_key
from normlab.nn.models import Model, abstract, outputs
from normlab.train.loop import METRICS, EpochEvent, TrainConfig, make_optimizer, seeds_epoch
from normlab.train.state import create
from normlab.train.step import make_evaluate, make_loss, scale_pixels

WATCHED_IMAGES = 1000   # Ioffe & Szegedy's fixed held-out batch: validation images 0..999
GRADIENT_IMAGES = 256   # the fixed training batch of the gradient histograms: training images 0..255


@dataclass(frozen=True)
class Options:
    probes: Probes
    precise_batches: int  # N of precise BN: full batches of training images 0 .. N * batch_size - 1


def plain(values) -> list:
    """Arrays as nested lists of floats, non-finite values as None (JSON has no NaN)."""
    array = np.asarray(values, np.float64)
    if array.ndim == 0:
        return float(array) if math.isfinite(array) else None
    return [plain(row) for row in array]


def make_snapshot(model: Model):
    """``snapshot(params, state, watch_u8, images_u8, labels) -> (activations, gradients)``: every layer's output on
    the watched images (training mode) and the gradient of every parameter on a fixed training batch, random
    layers with ``probes.measuring_key``."""
    loss, key = make_loss(model), measuring_key(model)

    def snapshot(params, state, watch_u8, images_u8, labels):
        values, _ = outputs(model, params, state, scale_pixels(watch_u8), True, key=key)
        activations = {name: value for (name, _), value in zip(model.layers, values)}
        mask = jnp.ones(labels.shape, jnp.float32)
        grads = jax.grad(lambda p: loss(p, state, scale_pixels(images_u8), labels, mask, key)[0])(params)
        return activations, grads

    return snapshot


def check_unit(model: Model, unit: int) -> None:
    """A ConfigError unless ``model`` has a hidden nonlinearity with a unit ``unit``: before any work starts."""
    index = last_hidden_nonlinearity(model)
    width = abstract(model)[2][index][-1]
    if not 0 <= unit < width:
        raise ConfigError(f"unit {unit}: model {model.name}'s last hidden layer has {width} units (0..{width - 1})")


def diagnose(model: Model, data, seeds: list[int], config: TrainConfig, options: Options,
             on_epoch: Callable[[EpochEvent], None] | None = None,
             on_histograms: Callable[[int, int, dict], None] | None = None) -> dict:
    """Train ``model`` for ``seeds`` with every probe and return its ``presets`` entry. ``on_epoch`` gets the
    epoch's metrics like ``fit``'s hook; ``on_histograms(seed, epoch, {tag: array})`` the epoch's histograms."""
    check_unit(model, options.probes.unit)
    optimizer = make_optimizer(config)
    n = len(data.y_train)
    steps = -(-n // config.batch_size)
    x_train, y_train, x_val, y_val = jax.device_put((data.x_train, data.y_train.astype(np.int32), data.x_val,
                                                     data.y_val.astype(np.int32)))
    held_out = {"watch": x_val[:WATCHED_IMAGES], "x_val": x_val, "y_val": y_val}
    ts = jax.vmap(lambda seed: create(model, optimizer, seed))(jnp.asarray(seeds, jnp.uint32))
    per_seed = (0, 0, None, None)  # params, state, images, labels
    probed = jax.jit(jax.vmap(make_probed_epoch(model, optimizer, n, config.batch_size, options.probes, config.shuffle),
                              in_axes=(0, None, None, None, None)), donate_argnums=0)
    evaluate = jax.jit(jax.vmap(make_evaluate(model), in_axes=per_seed))
    snapshot = jax.jit(jax.vmap(make_snapshot(model), in_axes=(*per_seed, None)))
    with_bn = has_moving_statistics(ts.model_state)
    precise_batches = min(options.precise_batches, n // config.batch_size)
    if with_bn:
        batch_statistics = jax.jit(jax.vmap(make_batch_statistics_accuracy(model, len(data.y_val), config.batch_size),
                                            in_axes=per_seed))
        precise = jax.jit(jax.vmap(make_precise_statistics(model, precise_batches, config.batch_size),
                                   in_axes=(0, 0, None)))

    signals.safe_point("compile")
    start = time.perf_counter()
    train_epoch = probed.lower(ts, x_train, y_train, jnp.int32(0), held_out).compile()
    compile_s = time.perf_counter() - start

    history = {key: [] for key in METRICS}
    gap = {"batch_stats": [], "moving": [], "precise": []}
    measured: list = []
    step_numbers: list[int] = []
    train_s = 0.0
    for epoch in range(config.epochs):
        signals.safe_point("train")
        start = time.perf_counter()
        ts, train_metrics, measures = jax.block_until_ready(
            train_epoch(ts, x_train, y_train, jnp.int32(epoch), held_out))
        seconds = time.perf_counter() - start
        train_s += seconds
        val_loss, val_accuracy = evaluate(ts.params, ts.model_state, x_val, y_val)
        measured.append(jax.tree.map(np.asarray, measures))
        step_numbers += (epoch * steps + measured_steps(steps, options.probes.every)).tolist()
        metrics = {"loss": train_metrics["loss"], "accuracy": train_metrics["accuracy"], "val_loss": val_loss,
                   "val_accuracy": val_accuracy}
        metrics = {k: np.asarray(v, np.float64) for k, v in metrics.items()}
        for key, value in metrics.items():
            history[key].append(value)
        if with_bn:
            gap["moving"].append(metrics["val_accuracy"])
            gap["batch_stats"].append(np.asarray(batch_statistics(ts.params, ts.model_state, x_val, y_val)))
            if precise_batches:  # none when the training set is smaller than one batch: no population to estimate
                population = precise(ts.params, ts.model_state, x_train)
                gap["precise"].append(np.asarray(evaluate(ts.params, population, x_val, y_val)[1]))
            else:
                gap["precise"].append(np.full(len(seeds), np.nan))
        if on_histograms is not None:
            activations, grads = snapshot(ts.params, ts.model_state, held_out["watch"], x_train[:GRADIENT_IMAGES],
                                          y_train[:GRADIENT_IMAGES])
            for i, seed in enumerate(seeds):
                arrays = {f"activations/{name}": np.asarray(a[i]) for name, a in activations.items()}
                arrays |= {f"gradients/{name}/{key}": np.asarray(g[i]) for name, layer in grads.items()
                           for key, g in layer.items()}
                on_histograms(seed, epoch + 1, arrays)
        if on_epoch is not None:
            on_epoch(EpochEvent(list(seeds), epoch + 1, metrics, seconds))

    found = jax.tree.map(lambda *parts: np.concatenate(parts, axis=1), *measured)
    return {
        "seeds": list(seeds),
        "has_bn": with_bn,
        "steps": step_numbers,
        "val_accuracy": plain(found["val_accuracy"]),
        "percentiles": {"layer": model.layers[last_hidden_nonlinearity(model)][0], "unit": options.probes.unit,
                        **{f"p{q}": plain(found["percentiles"][:, :, i]) for i, q in enumerate((15, 50, 85))}},
        "ics": {layer: {k: plain(v) for k, v in values.items()} for layer, values in found["ics"].items()},
        "landscape": {"loss_min": plain(found["loss"].min(axis=2)), "loss_max": plain(found["loss"].max(axis=2))},
        "gradient_predictiveness": {"min": plain(found["grad_distance"].min(axis=2)),
                                    "max": plain(found["grad_distance"].max(axis=2))},
        "beta_smoothness": plain(found["beta"]),
        "epochs": list(range(1, config.epochs + 1)),
        "history": {k: plain(np.stack(v, axis=1)) for k, v in history.items()},
        "train_eval_gap": {k: plain(np.stack(v, axis=1)) for k, v in gap.items()} if with_bn else None,
        "time": {"compile_s": compile_s, "train_s": train_s, "probed_epoch_s": train_s / config.epochs,
                 "plain_epoch_s": plain_epoch_seconds(model, config, ts, x_train, y_train)},
    }


def plain_epoch_seconds(model: Model, config: TrainConfig, ts, x_train, y_train) -> float:
    """One epoch of ``fit``'s own training program from ``ts`` (thrown away), timed without its compilation: what
    the probes' overhead is measured against."""
    learning_rate = jnp.float32(config.learning_rate)
    compiled = seeds_epoch(model, config, len(y_train)).lower(ts, x_train, y_train, jnp.int32(0),
                                                               learning_rate).compile()
    signals.safe_point("train")
    start = time.perf_counter()
    jax.block_until_ready(compiled(ts, x_train, y_train, jnp.int32(0), learning_rate))
    return time.perf_counter() - start
