r"""SkipInit (De & Smith 2020): one learnable scalar :math:`\alpha` multiplying a residual branch, :math:`y = \alpha x`.

Put at the end of a block's branch with :math:`\alpha = 0` (``init``), each block starts as the identity, so a
deep network without batch norm starts as a shallow one; De & Smith show this is what lets BN's residual networks
train at large learning rates, and that the scalar recovers much of it without BN. The scalar is named
``scale`` (one weight, shape ``()``); it has no Keras class, so a Keras mirror or ``.keras`` file refuses it.
"""

import functools

import jax.numpy as jnp

from normlab.interop.frameworks import cannot
from normlab.layer import Kind, Layer, Real


def skip_init(init: Real = 0.0) -> Layer:
    """``init``: the scalar's starting value; 0 (De & Smith's) makes the branch start silent."""

    def start(key, in_shape):
        return {"scale": jnp.full((), init, jnp.float32)}, {}, in_shape

    def apply(params, state, x, train, mask=None):
        return x * params["scale"], state

    return Layer("SkipInit", start, apply)


def _torch(nn, options: dict, in_shape: list, last: bool) -> list:
    return [_scalar_module(nn)(options["init"])]


@functools.cache
def _scalar_module(nn):
    class SkipInit(nn.Module):
        """The branch times one learnable scalar, as normlab's ``skip_init``."""

        def __init__(self, init: float):
            super().__init__()
            self.scale = nn.Parameter(nn.Parameter().new_full((), init))  # a float32 scalar, from torch.nn alone

        def forward(self, x):
            return x * self.scale

    return SkipInit


def _onnx(graph, site, x: str) -> str:
    return graph.op(site.name, "Mul", x, graph.const(f"{site.name}/scale", site.params["scale"]))


KIND = Kind(skip_init, keras=cannot("Keras has no layer that multiplies by one learnable scalar (SkipInit)"),
            torch=_torch, onnx=_onnx)
