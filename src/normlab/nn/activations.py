"""Activations as stateless layers, named and parameterized like Keras' so summaries and mirrors read the same."""

import functools
import math
from typing import Annotated

import jax
import jax.numpy as jnp

from normlab.layer import Layer, Real, choice, stateless

FUNCTIONS = {  # Keras' activation functions with Keras' defaults
    "linear": lambda x: x,
    "relu": jax.nn.relu,
    "leaky_relu": functools.partial(jax.nn.leaky_relu, negative_slope=0.2),  # the function's 0.2, not the layer's 0.3
    "elu": jax.nn.elu,
    "selu": jax.nn.selu,
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "swish": jax.nn.silu,
    "softmax": jax.nn.softmax,
}
Activation = Annotated[str, choice(*FUNCTIONS)]


def activation(activation: Activation = "linear") -> Layer:
    return stateless("Activation", FUNCTIONS[activation])


def leaky_relu(negative_slope: Real = 0.3) -> Layer:
    """Keras' LeakyReLU layer: its default slope is 0.3 (PyTorch's is 0.01)."""
    return stateless("LeakyReLU", lambda x: jax.nn.leaky_relu(x, negative_slope))


def flatten() -> Layer:
    return stateless("Flatten", lambda x: jnp.reshape(x, (x.shape[0], -1)), lambda shape: (math.prod(shape),))
