"""What Keras' ``model.summary()`` shows: per layer its output shape and parameter count, then the totals.

Trainable = params (what the optimizer updates); non-trainable = state (BN moving statistics).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from normlab.nn.models import INPUT_SHAPE, Model, init


class LayerRow(NamedTuple):
    name: str
    kind: str
    output_shape: tuple
    params: int


class Variable(NamedTuple):
    path: str
    shape: tuple
    trainable: bool


def _size(tree) -> int:
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(tree)))


def layer_rows(model: Model) -> list[LayerRow]:
    params, state = jax.eval_shape(lambda: init(model, jax.random.key(0)))
    x = jax.ShapeDtypeStruct((1, *INPUT_SHAPE), jnp.float32)
    rows = []
    for name, layer in model.layers:
        x, _ = jax.eval_shape(lambda p, s, v, f=layer.apply: f(p, s, v, False), params[name], state[name], x)
        rows.append(LayerRow(name, layer.kind, (None, *x.shape[1:]), _size(params[name]) + _size(state[name])))
    return rows


def param_counts(model: Model) -> dict[str, int]:
    params, state = jax.eval_shape(lambda: init(model, jax.random.key(0)))
    trainable, non_trainable = _size(params), _size(state)
    return {"total": trainable + non_trainable, "trainable": trainable, "non_trainable": non_trainable}


KERAS_ORDER = ("kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance")


def variables(model: Model) -> list[Variable]:
    """Every variable in Keras' order (``model.weights``): per layer kernel, bias, gamma, beta, moving stats."""
    params, state = jax.eval_shape(lambda: init(model, jax.random.key(0)))
    found = []
    for name, _ in model.layers:
        named = {k: (v, True) for k, v in params[name].items()} | {k: (v, False) for k, v in state[name].items()}
        found += [Variable(f"{name}/{k}", named[k][0].shape, named[k][1]) for k in KERAS_ORDER if k in named]
    return found
