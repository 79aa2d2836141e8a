"""Activations as stateless layers, named like Keras' so summaries read the same."""

import jax
import jax.numpy as jnp

from normlab.nn.layer import stateless

FUNCTIONS = {
    None: lambda x: x,
    "relu": jax.nn.relu,
    # Keras' LeakyReLU default negative slope is 0.3 (PyTorch's is 0.01).
    "leaky_relu": lambda x: jax.nn.leaky_relu(x, 0.3),
    # The softmax of the output layer is folded into the loss (see losses.py); the model emits logits.
    "softmax": lambda x: x,
}


def activation(name: str):
    return stateless("Activation", FUNCTIONS[name])


def leaky_relu(negative_slope: float = 0.3):
    return stateless("LeakyReLU", lambda x: jax.nn.leaky_relu(x, negative_slope))


def flatten():
    return stateless("Flatten", lambda x: jnp.reshape(x, (x.shape[0], -1)))
