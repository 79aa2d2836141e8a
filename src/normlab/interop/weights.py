"""A model with its weights as one value.

Every reader (``model_files``) returns a ``Weights`` whose model was built from a spec (so it was checked like a
study's model), and ``fitted`` is the one check that a file's model is the one a preset or study expects: same
layers, same shapes, same function. Options that only shape training (initializers, moving-average momentum)
may differ.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from normlab.errors import ConfigError
from normlab.nn.models import MAX_PARAMS, Model
from normlab.nn.summary import variables

MAX_FILE_BYTES = 2 * 4 * MAX_PARAMS + (16 << 20)  # float32 weights and state of the largest model, plus headers
TRAINING_ONLY = ("kernel_initializer", "momentum", "renorm_momentum", "warmup_steps", "relax_steps", "convention",
                 "rate")


class Weights(NamedTuple):
    model: Model
    params: dict
    state: dict

    def finite(self) -> bool:
        """Whether every float weight and statistic is finite (a PRNG key of covariate noise is not a float)."""
        return all(np.isfinite(leaf).all() for leaf in jax.tree.leaves((self.params, self.state))
                   if jnp.issubdtype(leaf.dtype, jnp.floating))


def ordered(weights: Weights) -> list[tuple[str, np.ndarray]]:
    """``(layer/variable, array)`` in ``nn.summary.variables``' order: a Sequential's ``model.weights``."""
    found = []
    for var in variables(weights.model):
        layer, name = var.path.split("/")
        found.append((var.path, np.asarray((weights.params if var.trainable else weights.state)[layer][name])))
    return found


def by_layer(weights: Weights) -> dict[str, list[np.ndarray]]:
    """Each layer's arrays as its Keras layer's ``get_weights()`` lists them (kernel, bias, gamma, beta, moving
    statistics), by layer name: what a Keras mirror is set with, layer by layer. Not one list for ``set_weights``:
    a functional model's ``model.weights`` follow Keras' own walk of the graph (a projection block's shortcut conv
    before its branch's second conv), not normlab's node order."""
    found = {name: [] for name, _ in weights.model.layers}
    for path, array in ordered(weights):
        found[path.split("/")[0]].append(array)
    return found


def from_layers(model: Model, arrays: dict[str, list], source: str) -> Weights:
    """The inverse of ``by_layer``: each layer's arrays placed into ``model``'s params and state, counts and shapes
    checked."""
    params = {name: {} for name, _ in model.layers}
    state = {name: {} for name, _ in model.layers}
    expected = {name: [] for name, _ in model.layers}
    for var in variables(model):
        expected[var.path.split("/")[0]].append(var)
    for layer, wanted in expected.items():
        found = arrays.get(layer, [])
        if len(found) != len(wanted):
            raise ConfigError(f"{source}: layer {layer} holds {len(found)} weight arrays, but needs {len(wanted)}")
        for var, array in zip(wanted, found):
            array = np.asarray(array)
            if array.shape != tuple(var.shape):
                raise ConfigError(f"{source}: {var.path} has shape {array.shape}, its layer needs {tuple(var.shape)}")
            (params if var.trainable else state)[layer][var.path.split("/")[1]] = jnp.asarray(array, jnp.float32)
    return Weights(model, params, state)


def _same_sides(value):
    """A window given per axis with both alike (Keras' config writes ``kernel_size = 3`` as ``[3, 3]``) as one
    number: the two spell one window."""
    if isinstance(value, list) and len(value) == 2 and type(value[0]) is int and value[0] == value[1]:
        return value[0]
    return value


def _architecture(model: Model) -> list[dict]:
    """Each layer's function: its options but those that only shape training, and what it reads."""
    return [{**{k: _same_sides(v) for k, v in node.spec.items() if k not in TRAINING_ONLY}, "inputs": list(node.inputs)}
            for node in model.graph]


def fitted(weights: Weights, expected: Model, source: str) -> tuple[dict, dict]:
    """``weights``' params and state for ``expected``, or a ConfigError naming the first layer that differs."""
    mine, theirs = _architecture(weights.model), _architecture(expected)
    for index, (have, want) in enumerate(zip(mine, theirs)):
        if have != want:
            differing = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
            raise ConfigError(f"{source} does not fit model {expected.name}: its layer {index + 1} is "
                              f"{_shown(have, differing)}, {expected.name}'s is {_shown(want, differing)}")
    if len(mine) != len(theirs):
        raise ConfigError(f"{source} does not fit model {expected.name}: it has {len(mine)} layers, "
                          f"{expected.name} has {len(theirs)}")
    return weights.params, weights.state


def _shown(layer: dict, keys: list[str]) -> str:
    return layer["kind"] + "".join(f" {k}={layer.get(k)}" for k in keys if k != "kind")
