r"""Sliding windows (``conv2d`` and the pools): sizes as (height, width) pairs and Keras/TF output sizes.

``"valid"`` keeps every window inside the image: :math:`\lfloor (n - k) / s \rfloor + 1` positions per axis.
``"same"`` gives :math:`\lceil n / s \rceil` positions and pads the missing :math:`(out - 1) s + k - n` values
half before and half after, the odd one after (TF's rule, which ``jax.lax``'s ``"SAME"`` follows too).
A window larger than its input is refused with either padding: with ``"same"`` it would mostly see padding.
"""

from typing import Annotated

from normlab.errors import ConfigError
from normlab.layer import choice, need_image

Padding = Annotated[str, choice("valid", "same")]


def pair(value) -> tuple[int, int]:
    """Keras' ``kernel_size=3`` is ``(3, 3)``."""
    return (value, value) if isinstance(value, int) else tuple(value)


def output_shape(kind: str, in_shape: tuple, window: tuple, strides: tuple, padding: str, channels: int) -> tuple:
    """(height, width, channels) out of an image input, or a ConfigError if the window leaves no position."""
    height, width, _ = need_image(kind, in_shape)
    if window[0] > height or window[1] > width:  # with "same" too: such a window mostly sees padding
        raise ConfigError(f"{kind}: a {window[0]}x{window[1]} window does not fit the {height}x{width} input; "
                          f"use a smaller window or fewer layers before it")
    if padding == "same":
        return -(-height // strides[0]), -(-width // strides[1]), channels
    return (height - window[0]) // strides[0] + 1, (width - window[1]) // strides[1] + 1, channels
