r"""Layer normalization (Ba, Kiros & Hinton 2016), Keras 3's ``LayerNormalization(axis=-1)``.

Per example (and per pixel of an image), over the features (last axis) alone:

.. math::
    \mu = \tfrac1F \sum_j x_j, \qquad \sigma^2 = \tfrac1F \sum_j (x_j - \mu)^2, \qquad
    y_j = \gamma_j \, \frac{x_j - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta_j.

No statistic crosses the batch, so training and inference agree, a padded row changes nothing, and there is no
state. Keras defaults: epsilon 1e-3, ``gamma`` ones, ``beta`` zeros.
"""

from normlab.interop.frameworks import torch_affine
from normlab.interop.onnx_graph import affine, normalized
from normlab.layer import Flag, Kind, Layer, Positive
from normlab.norms.batch_norm import affine_params, normalize
from normlab.norms.moments import moments


def layer_norm(epsilon: Positive = 1e-3, center: Flag = True, scale: Flag = True) -> Layer:
    def init(key, in_shape):
        return affine_params(in_shape[-1], center, scale), {}, in_shape

    def apply(params, state, x, train, mask=None):
        mean, variance, _ = moments(x, (x.ndim - 1,))
        return normalize(x, mean, variance, epsilon, params), state

    return Layer("LayerNormalization", init, apply)


def _torch(nn, options: dict, in_shape: list, last: bool) -> list:
    return [nn.LayerNorm(in_shape[-1], eps=options["epsilon"], elementwise_affine=torch_affine(options, "LayerNorm"))]


def _onnx(graph, site, x: str) -> str:
    """Over the last axis alone (each pixel's channels, for an image); ``LayerNormalization`` is opset 17."""
    return affine(graph, site, normalized(graph, site, x, [len(site.in_shape)]))


KIND = Kind(layer_norm, keras_class="LayerNormalization", torch=_torch, onnx=_onnx)
