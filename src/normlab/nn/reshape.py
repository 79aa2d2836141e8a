"""Keras' ``Reshape``: each example's values in a new shape, e.g. the (28, 28) images as (28, 28, 1) for conv2d."""

import math

import jax.numpy as jnp

from normlab.errors import ConfigError
from normlab.layer import Layer, Shape, stateless


def reshape(target_shape: Shape) -> Layer:
    target = tuple(target_shape)

    def out_shape(in_shape):
        if math.prod(in_shape) != math.prod(target):
            raise ConfigError(f"reshape: target_shape {list(target)} holds {math.prod(target):,} values, but the "
                              f"input {tuple(in_shape)} has {math.prod(in_shape):,}")
        return target

    return stateless("Reshape", lambda x: jnp.reshape(x, (x.shape[0], *target)), out_shape)
