"""Pooling, Keras' ``MaxPooling2D``, ``AveragePooling2D`` and ``GlobalAveragePooling2D``: per channel, each
window's largest value or mean; no weights.

``"same"`` pads the border windows, and TF counts only their real values: the maximum of a border window is its
real values' (padding with -inf), and its average is theirs too (the window's sum over the zero-padded image
divided by how many real values it holds, not by its size).

Windows that tile the image (strides = pool size, the default) are a reshape and a max or mean: the max's
gradient was 5-8x faster than ``reduce_window``'s select-and-scatter on XLA's CPU backend (28x28x16 at batch 32:
3.4 vs 18.8 ms, 2-core EPYC under load). The two differ only on exact ties, where the reshape splits the gradient
evenly and TF gives it all to one input; after a ReLU the ties are zeros, whose gradient ReLU stops either way.
"""

import jax
import jax.numpy as jnp

from normlab.interop.frameworks import Unsupported, channels_first, torch_padded, torch_padding
from normlab.interop.onnx_graph import channels_first as onnx_channels_first, pads
from normlab.layer import Kind, Layer, MaybeWindow, Window, need_image
from normlab.nn.window import Padding, output_shape, pair


def _pooling(kind: str, keras_class: str, pool_size, strides, padding: str, tiled, windowed) -> Layer:
    """A pooling layer: ``tiled(tiles, axes)`` reduces windows that tile the image, ``windowed(x, window, steps)``
    any others."""
    window = pair(pool_size)
    steps = window if strides is None else pair(strides)

    def init(key, in_shape):
        return {}, {}, output_shape(kind, in_shape, window, steps, padding, in_shape[-1])

    def apply(params, state, x, train, mask=None):
        n, height, width, channels = x.shape
        rows, cols = height // window[0], width // window[1]
        if steps == window and (padding == "valid" or (rows * window[0], cols * window[1]) == (height, width)):
            tiles = x[:, :rows * window[0], :cols * window[1]].reshape(n, rows, window[0], cols, window[1], channels)
            return tiled(tiles, axis=(2, 4)), state
        return windowed(x, window, steps), state

    return Layer(keras_class, init, apply)


def _reduce(x, initial, operation, window: tuple, steps: tuple, padding: str):
    return jax.lax.reduce_window(x, initial, operation, (1, *window, 1), (1, *steps, 1), padding.upper())


def max_pool2d(pool_size: Window = 2, strides: MaybeWindow = None, padding: Padding = "valid") -> Layer:
    """Keras' defaults: 2x2 windows that do not overlap (strides = pool size)."""
    return _pooling("max_pool2d", "MaxPooling2D", pool_size, strides, padding, jnp.max,
                    lambda x, window, steps: _reduce(x, -jnp.inf, jax.lax.max, window, steps, padding))


def avg_pool2d(pool_size: Window = 2, strides: MaybeWindow = None, padding: Padding = "valid") -> Layer:
    """Keras' defaults, as max_pool2d's. A window's count of real values is a constant of the shapes (XLA folds
    it): with "valid" every window's size, with "same" fewer at the borders."""

    def windowed(x, window, steps):
        counts = _reduce(jnp.ones((1, *x.shape[1:3], 1), x.dtype), 0.0, jax.lax.add, window, steps, padding)
        return _reduce(x, 0.0, jax.lax.add, window, steps, padding) / counts

    return _pooling("avg_pool2d", "AveragePooling2D", pool_size, strides, padding, jnp.mean, windowed)


def global_avg_pool2d() -> Layer:
    """Each channel's mean over the whole image, (height, width, channels) -> (channels,): the classifier's input
    in ResNets, with no window to fit the image's size."""

    def init(key, in_shape):
        return {}, {}, (need_image("global_avg_pool2d", in_shape)[-1],)

    def apply(params, state, x, train, mask=None):
        return jnp.mean(x, axis=(1, 2)), state

    return Layer("GlobalAveragePooling2D", init, apply)


def _window(options: dict) -> tuple[tuple, tuple]:
    window = pair(options["pool_size"])
    return window, window if options["strides"] is None else pair(options["strides"])


def _torch(module: str, kind: str, fill: float | None = None, **settings):
    """MaxPool2d pads with -inf, as TF (TF's odd "same" pixel after: a ``fill`` ConstantPad2d in front); AvgPool2d
    leaves its padding out of a window's count when asked to, which a pad in front could not."""

    def translate(nn, options: dict, in_shape: list, last: bool) -> list:
        window, strides = _window(options)
        if fill is None:
            pad, padding = [], torch_padding(kind, options, in_shape, window, strides)
        else:
            pad, padding = torch_padded(nn, kind, options, in_shape, window, strides, fill)
        layer = getattr(nn, module)(window, strides, padding, **settings)
        return [channels_first(nn, nn.Sequential(*pad, layer) if pad else layer, in_shape)]

    return translate


def _onnx(op_type: str, **settings):
    """MaxPool skips its padding (it never wins the max), as normlab's -inf padding; AveragePool leaves it out of
    the count (``count_include_pad = 0``, its default), as TF."""

    def translate(graph, site, x: str) -> str:
        window, strides = _window(site.options)
        return onnx_channels_first(graph, site.name, x, op_type, kernel_shape=list(window), strides=list(strides),
                                   pads=pads(site.in_shape, window, strides, site.options["padding"]), **settings)

    return translate


def _global_from_keras(config: dict) -> dict:
    if config.get("keepdims"):
        raise Unsupported("keepdims = True gives (1, 1, channels); normlab's global_avg_pool2d gives (channels,)")
    return {}


def _global_torch(nn, options: dict, in_shape: list, last: bool) -> list:
    return [channels_first(nn, nn.AdaptiveAvgPool2d(1), in_shape), nn.Flatten()]


MAX_POOL2D = Kind(max_pool2d, keras_class="MaxPooling2D", torch=_torch("MaxPool2d", "max_pool2d", -float("inf")),
                  onnx=_onnx("MaxPool"))
AVG_POOL2D = Kind(avg_pool2d, keras_class="AveragePooling2D",
                  torch=_torch("AvgPool2d", "avg_pool2d", count_include_pad=False),
                  onnx=_onnx("AveragePool", count_include_pad=0))
GLOBAL_AVG_POOL2D = Kind(global_avg_pool2d, keras_class="GlobalAveragePooling2D", from_keras=_global_from_keras,
                         torch=_global_torch,
                         onnx=lambda graph, site, x: graph.op(site.name, "ReduceMean", x, axes=[1, 2], keepdims=0))
