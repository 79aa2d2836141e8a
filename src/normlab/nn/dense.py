"""Fully connected layer ``y = activation(x @ kernel + bias)``, Keras' ``Dense``."""

from typing import Annotated

import jax.numpy as jnp

from normlab.engine.gemm import matmul
from normlab.layer import Flag, Layer, Units, choice, need_flat
from normlab.nn.activations import FUNCTIONS, Activation
from normlab.nn.initializers import INITIALIZERS

Initializer = Annotated[str, choice(*INITIALIZERS)]


def dense(units: Units, activation: Activation = "linear", use_bias: Flag = True,
          kernel_initializer: Initializer = "glorot_uniform") -> Layer:
    """A bias is redundant right before batch norm (BN subtracts the mean), hence ``use_bias=False`` there."""
    act = FUNCTIONS[activation]

    def init(key, in_shape):
        params = {"kernel": INITIALIZERS[kernel_initializer](key, (need_flat("dense", in_shape), units))}
        if use_bias:
            params["bias"] = jnp.zeros((units,), jnp.float32)
        return params, {}, (units,)

    def apply(params, state, x, train, mask=None):
        y = matmul(x, params["kernel"])
        if use_bias:
            y = y + params["bias"]
        return act(y), state

    return Layer("Dense", init, apply, stepped=("kernel",))
