r"""2-D convolution, Keras' ``Conv2D``: per output position, the window of the input times the kernel.

.. math::
    y_{n,i,j,f} = \text{activation}\Big(\sum_{a,b,c} x_{n,\,s_h i + a - p_h,\,s_w j + b - p_w,\,c}\,
    K_{a,b,c,f} + b_f\Big)

with ``p`` the padding before (0 for ``"valid"``, TF's rule for ``"same"``, see ``nn.window``). Images are
NHWC and the kernel ``(kh, kw, in_channels, filters)`` (HWIO), Keras' layout, so weights read the same in both.
"""

import math

import jax.numpy as jnp
import numpy as np

from normlab.interop.frameworks import channels_first, keras_init, torch_activation, torch_padded
from normlab.interop.onnx_graph import activate, channels_first as onnx_channels_first, pads
from normlab.layer import Flag, Folding, Kind, Layer, Units, Window
from normlab.nn.activations import FUNCTIONS, Activation
from normlab.engine.gemm import matmul
from normlab.nn.dense import Initializer
from normlab.nn.initializers import INITIALIZERS
from normlab.nn.window import Padding, output_shape, pair


def patches(x, window: tuple, steps: tuple, padding: str):
    """im2col: every output position's window as one row, ``(n * out_h * out_w, kh * kw * channels)``, in the
    order of the HWIO kernel's rows, so the convolution is one GEMM.

    XLA's CPU convolution ran 4-6x slower inside the epoch's ``lax.scan`` than called alone (cnn-bn at batch 2:
    17 ms per training step vs 3.9 ms with this GEMM form; 2-core EPYC, jaxlib 0.10.2); matmuls keep their speed
    there, as the MLP's do.
    """
    (kh, kw), (sh, sw) = window, steps
    n, height, width, channels = x.shape
    out_h, out_w, _ = output_shape("conv2d", x.shape[1:], window, steps, padding, channels)
    if padding == "same":  # TF's rule (``nn.window``): the odd value after
        pad_h, pad_w = max((out_h - 1) * sh + kh - height, 0), max((out_w - 1) * sw + kw - width, 0)
        x = jnp.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    shifted = [x[:, a:a + (out_h - 1) * sh + 1:sh, b:b + (out_w - 1) * sw + 1:sw, :]
               for a in range(kh) for b in range(kw)]
    return jnp.concatenate(shifted, axis=-1).reshape(n * out_h * out_w, kh * kw * channels), (n, out_h, out_w)


def patch_values(spec: dict, in_shape: tuple, out_shape: tuple) -> int:
    """Values of one example's im2col rows (``patches``), what a convolution holds beside its output: a row of
    ``kh * kw * channels`` per output position."""
    return math.prod(out_shape[:2]) * math.prod(pair(spec["kernel_size"])) * in_shape[-1]


def conv2d(filters: Units, kernel_size: Window = 3, strides: Window = 1, padding: Padding = "valid",
           activation: Activation = "linear", use_bias: Flag = True,
           kernel_initializer: Initializer = "glorot_uniform") -> Layer:
    """Keras' defaults, except ``kernel_size`` (Keras has none): 3, the usual choice."""
    window, steps, act = pair(kernel_size), pair(strides), FUNCTIONS[activation]

    def init(key, in_shape):
        out_shape = output_shape("conv2d", in_shape, window, steps, padding, filters)
        params = {"kernel": INITIALIZERS[kernel_initializer](key, (*window, in_shape[-1], filters))}
        if use_bias:
            params["bias"] = jnp.zeros((filters,), jnp.float32)
        return params, {}, out_shape

    def apply(params, state, x, train, mask=None):
        rows, out = patches(x, window, steps, padding)
        y = matmul(rows, params["kernel"].reshape(-1, filters)).reshape(*out, filters)
        if use_bias:
            y = y + params["bias"]
        return act(y), state

    return Layer("Conv2D", init, apply)


def _torch(nn, options: dict, in_shape: list, last: bool) -> list:
    window, strides = pair(options["kernel_size"]), pair(options["strides"])
    pad, padding = torch_padded(nn, "conv2d", options, in_shape, window, strides, 0.0)
    layer = nn.Conv2d(in_shape[-1], options["filters"], window, strides, bias=options["use_bias"], padding=padding)
    keras_init(nn, layer, options)
    return [channels_first(nn, nn.Sequential(*pad, layer) if pad else layer, in_shape),
            *torch_activation(nn, options["activation"], last)]


def _onnx(graph, site, x: str) -> str:
    """HWIO kernel -> ONNX's OIHW."""
    window, strides = pair(site.options["kernel_size"]), pair(site.options["strides"])
    inputs = [graph.const(f"{site.name}/kernel", np.transpose(site.params["kernel"], (3, 2, 0, 1)))]
    if site.options["use_bias"]:
        inputs.append(graph.const(f"{site.name}/bias", site.params["bias"]))
    y = onnx_channels_first(graph, site.name, x, "Conv", *inputs, kernel_shape=list(window), strides=list(strides),
                            pads=pads(site.in_shape, window, strides, site.options["padding"]))
    return activate(graph, site, y, 4)


def _takes_input(spec: dict, in_channels: int, affine_channels: int) -> bool:
    """An affine map per channel repeating along its own (and no zero padding, which would become its shift)."""
    return spec["padding"] == "valid" and in_channels % affine_channels == 0


KIND = Kind(conv2d, keras_class="Conv2D", torch=_torch, onnx=_onnx, folding=Folding("linear", _takes_input),
            workspace=patch_values)
