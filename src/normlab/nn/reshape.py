"""Keras' ``Reshape``, with ONNX's two wildcards: each example's values in a new shape.

In ``target_shape`` a 0 copies the input's size at that position and one -1 takes what is left, so the CNN presets'
``[0, 0, -1]`` gives a grayscale (H, W) image its channel axis, (H, W, 1), and leaves a colour (H, W, 3) one as it
is: one model spec for every dataset. Mirrors and exports see the resolved shape (``resolve``).
"""

import math

import jax.numpy as jnp

from normlab.errors import ConfigError
from normlab.layer import Folding, Kind, Layer, Shape, stateless


def resolve(target: tuple, in_shape: tuple) -> tuple[int, ...]:
    """``target`` with its 0s and -1 replaced for an input of ``in_shape`` (without the batch axis)."""
    if any(n < -1 for n in target) or list(target).count(-1) > 1:
        raise ConfigError(f"reshape: target_shape {list(target)} may hold sizes >= 1, 0 (the input's size there) "
                          f"and at most one -1 (what is left)")
    if any(n == 0 and i >= len(in_shape) for i, n in enumerate(target)):
        raise ConfigError(f"reshape: target_shape {list(target)} copies a size (0) the input {tuple(in_shape)} "
                          f"does not have")
    copied = tuple(in_shape[i] if n == 0 else n for i, n in enumerate(target))
    values, known = math.prod(in_shape), math.prod(n for n in copied if n != -1)
    if -1 in copied:
        if known == 0 or values % known:
            raise ConfigError(f"reshape: target_shape {list(target)} cannot hold the {values:,} values of the input "
                              f"{tuple(in_shape)}")
        copied = tuple(values // known if n == -1 else n for n in copied)
    if math.prod(copied) != values:
        raise ConfigError(f"reshape: target_shape {list(target)} holds {math.prod(copied):,} values, but the "
                          f"input {tuple(in_shape)} has {values:,}")
    return copied


def reshape(target_shape: Shape) -> Layer:
    target = tuple(target_shape)
    return stateless("Reshape", lambda x: jnp.reshape(x, (x.shape[0], *resolve(target, x.shape[1:]))),
                     lambda in_shape: resolve(target, tuple(in_shape)))


# mirrors and exports see the target resolved for the input (``concrete``): no 0 or -1 left
KIND = Kind(reshape, keras_class="Reshape", folding=Folding("reorder"),
            concrete=lambda options, out_shape: {**options, "target_shape": list(out_shape)},
            torch=lambda nn, options, in_shape, last: [nn.Flatten(), nn.Unflatten(1, tuple(options["target_shape"]))],
            onnx=lambda graph, site, x: graph.op(site.name, "Reshape", x, graph.ints(
                f"{site.name}/shape", [0, *site.options["target_shape"]])))
