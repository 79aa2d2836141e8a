r"""Root-mean-square normalization (Zhang & Sennrich 2019), Keras 3's ``RMSNormalization(axis=-1)``.

Layer norm without the centring: per example, over the features (last axis),

.. math::
    y_j = \frac{x_j}{\sqrt{\tfrac1F \sum_k x_k^2 + \epsilon}} \, s_j,

with one trainable ``scale`` :math:`s` (ones) and no offset. It is ``normalize`` with a zero mean and the mean
square in place of the variance. No state; training and inference agree. Keras default epsilon 1e-6.
"""

import jax.numpy as jnp

from normlab.interop.onnx_graph import affine, normalized
from normlab.layer import Kind, Layer, Positive
from normlab.norms.batch_norm import normalize
from normlab.norms.moments import moments


def rms_norm(epsilon: Positive = 1e-6) -> Layer:
    def init(key, in_shape):
        return {"scale": jnp.ones(in_shape[-1:], jnp.float32)}, {}, in_shape

    def apply(params, state, x, train, mask=None):
        mean_square, _, _ = moments(jnp.square(x), (x.ndim - 1,))
        return normalize(x, 0.0, mean_square, epsilon, {"gamma": params["scale"]}), state

    return Layer("RMSNormalization", init, apply)


def _onnx(graph, site, x: str) -> str:
    """``RMSNormalization`` is opset 23: spelled out."""
    return affine(graph, site, normalized(graph, site, x, [len(site.in_shape)], centre=False), "scale", None)


KIND = Kind(rms_norm, keras_class="RMSNormalization", onnx=_onnx,
            torch=lambda nn, options, in_shape, last: [nn.RMSNorm(in_shape[-1], eps=options["epsilon"])])
