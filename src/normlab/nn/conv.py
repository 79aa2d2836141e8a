r"""2-D convolution, Keras' ``Conv2D``: per output position, the window of the input times the kernel.

.. math::
    y_{n,i,j,f} = \text{activation}\Big(\sum_{a,b,c} x_{n,\,s_h i + a - p_h,\,s_w j + b - p_w,\,c}\,
    K_{a,b,c,f} + b_f\Big)

with ``p`` the padding before (0 for ``"valid"``, TF's rule for ``"same"``, see ``nn.window``). Images are
NHWC and the kernel ``(kh, kw, in_channels, filters)`` (HWIO), Keras' layout, so weights read the same in both.
"""

import jax
import jax.numpy as jnp

from normlab.layer import Flag, Layer, Units, Window
from normlab.nn.activations import FUNCTIONS, Activation
from normlab.nn.dense import Initializer
from normlab.nn.initializers import INITIALIZERS
from normlab.nn.window import Padding, output_shape, pair


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
        y = jax.lax.conv_general_dilated(x, params["kernel"], steps, padding.upper(),
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        if use_bias:
            y = y + params["bias"]
        return act(y), state

    return Layer("Conv2D", init, apply)
