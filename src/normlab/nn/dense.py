"""Fully connected layer ``y = activation(x @ kernel + bias)``, Keras' ``Dense``."""

import jax.numpy as jnp

from normlab.nn.activations import FUNCTIONS
from normlab.nn.initializers import INITIALIZERS
from normlab.nn.layer import Layer


def dense(in_features: int, units: int, activation: str | None = None, use_bias: bool = True,
          kernel_initializer: str = "glorot_uniform") -> Layer:
    """A bias is redundant right before batch norm (BN subtracts the mean), hence ``use_bias=False`` there."""
    act = FUNCTIONS[activation]

    def init(key):
        params = {"kernel": INITIALIZERS[kernel_initializer](key, (in_features, units))}
        if use_bias:
            params["bias"] = jnp.zeros((units,), jnp.float32)
        return params, {}

    def apply(params, state, x, train, mask=None):
        y = x @ params["kernel"]
        if use_bias:
            y = y + params["bias"]
        return act(y), state

    return Layer("Dense", init, apply)
