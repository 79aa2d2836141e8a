"""Sequential models and the three presets of the study (Géron, *Hands-On ML*, ch. 11, in Keras conventions).

A model is an ordered list of named layers; its params and state are dicts keyed by layer name, named the way
Keras names layers (``dense``, ``dense_1``, ``batch_normalization``, ...), so `normlab inspect` reads like Keras.
"""

import re
from typing import NamedTuple

import jax

from normlab.errors import ConfigError, did_you_mean
from normlab.nn.activations import activation, flatten, leaky_relu
from normlab.nn.dense import dense
from normlab.nn.layer import Layer
from normlab.norms.batch_norm import batch_norm

INPUT_SHAPE = (28, 28)
NUM_CLASSES = 10


class Model(NamedTuple):
    name: str
    layers: tuple[tuple[str, Layer], ...]  # (layer name, layer)


def _snake(kind: str) -> str:
    return {"LeakyReLU": "leaky_re_lu"}.get(kind, re.sub(r"(?<!^)(?=[A-Z])", "_", kind).lower())


def sequential(name: str, layers: list[Layer]) -> Model:
    """Name layers like Keras: the first of a kind gets the plain snake-case name, later ones ``_1``, ``_2``..."""
    seen: dict[str, int] = {}
    named = []
    for layer in layers:
        base = _snake(layer.kind)
        count = seen.get(base, 0)
        seen[base] = count + 1
        named.append((base if count == 0 else f"{base}_{count}", layer))
    return Model(name, tuple(named))


def baseline() -> Model:
    return sequential("baseline", [
        flatten(),
        dense(784, 300, kernel_initializer="he_normal"), leaky_relu(),
        dense(300, 100, kernel_initializer="he_normal"), leaky_relu(),
        dense(100, NUM_CLASSES, activation="softmax"),
    ])


def bn_after(momentum: float = 0.99, epsilon: float = 1e-3) -> Model:
    """BN after each activation (and on the input): the variant the book shows first."""
    return sequential("bn-after", [
        flatten(), batch_norm(784, momentum, epsilon),
        dense(784, 300, activation="relu"), batch_norm(300, momentum, epsilon),
        dense(300, 100, activation="relu"), batch_norm(100, momentum, epsilon),
        dense(100, NUM_CLASSES, activation="softmax"),
    ])


def bn_before(momentum: float = 0.99, epsilon: float = 1e-3) -> Model:
    """BN between the linear part and the activation, as in Ioffe & Szegedy; Dense drops its redundant bias."""
    return sequential("bn-before", [
        flatten(), batch_norm(784, momentum, epsilon),
        dense(784, 300, use_bias=False), batch_norm(300, momentum, epsilon), activation("relu"),
        dense(300, 100, use_bias=False), batch_norm(100, momentum, epsilon), activation("relu"),
        dense(100, NUM_CLASSES, activation="softmax"),
    ])


PRESETS = {"baseline": baseline, "bn-after": bn_after, "bn-before": bn_before}


def check_preset(name: str) -> str:
    """The one place a preset name is validated; a typo gets a suggestion."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}: {did_you_mean(name, PRESETS)}choose from {', '.join(PRESETS)}")
    return name


def build(preset: str, **kwargs) -> Model:
    return PRESETS[check_preset(preset)](**kwargs)


def init(model: Model, key):
    """Params and state of every layer; each layer draws from its own key."""
    keys = jax.random.split(key, len(model.layers))
    params, state = {}, {}
    for layer_key, (name, layer) in zip(keys, model.layers):
        params[name], state[name] = layer.init(layer_key)
    return params, state


def apply(model: Model, params, state, x, train: bool, mask=None):
    """Logits and the new state; ``mask`` marks real rows of a padded batch."""
    new_state = {}
    for name, layer in model.layers:
        x, new_state[name] = layer.apply(params[name], state[name], x, train, mask)
    return x, new_state
