"""Activations as stateless layers, named and parameterized like Keras' so summaries and mirrors read the same."""

import functools
import math
from typing import Annotated

import jax
import jax.numpy as jnp

from normlab.interop.frameworks import torch_activation
from normlab.interop.onnx_graph import activate
from normlab.layer import Folding, Kind, Layer, Real, choice, stateless

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


ACTIVATION = Kind(activation, keras_class="Activation",
                  torch=lambda nn, options, in_shape, last: torch_activation(nn, options["activation"], last),
                  onnx=lambda graph, site, x: activate(graph, site, x, len(site.in_shape) + 1))
LEAKY_RELU = Kind(leaky_relu, keras_class="LeakyReLU",
                  torch=lambda nn, options, in_shape, last: [nn.LeakyReLU(options["negative_slope"])],
                  onnx=lambda graph, site, x: graph.op(site.name, "LeakyRelu", x, alpha=site.options["negative_slope"]))
FLATTEN = Kind(flatten, keras_class="Flatten", torch=lambda nn, options, in_shape, last: [nn.Flatten()],
               onnx=lambda graph, site, x: graph.op(site.name, "Flatten", x, axis=1), folding=Folding("reorder"))
