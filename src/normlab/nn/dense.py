"""Fully connected layer ``y = activation(x @ kernel + bias)``, Keras' ``Dense``."""

from typing import Annotated

import jax.numpy as jnp

from normlab.engine.gemm import matmul
from normlab.interop.frameworks import keras_init, torch_activation
from normlab.interop.onnx_graph import activate
from normlab.layer import Flag, Folding, Kind, Layer, Units, choice, need_flat
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


def _torch(nn, options: dict, in_shape: list, last: bool) -> list:
    layer = nn.Linear(in_shape[-1], options["units"], bias=options["use_bias"])
    keras_init(nn, layer, options)
    return [layer, *torch_activation(nn, options["activation"], last)]


def _onnx(graph, site, x: str) -> str:
    y = graph.op(site.name, "MatMul", x, graph.const(f"{site.name}/kernel", site.params["kernel"]))
    if site.options["use_bias"]:
        y = graph.op(site.name, "Add", y, graph.const(f"{site.name}/bias", site.params["bias"]))
    return activate(graph, site, y, 2)


KIND = Kind(dense, keras_class="Dense", torch=_torch, onnx=_onnx,
            folding=Folding("linear", lambda spec, in_channels, affine_channels: True))  # any flattened map
