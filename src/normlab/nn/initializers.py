"""Keras' weight initializers, so our models start from the same distributions as the original study."""

import math

import jax
import jax.numpy as jnp

# Std of a unit normal truncated to [-2, 2]; Keras divides by it so the truncated draw keeps the target std.
TRUNCATED_NORMAL_STD = 0.87962566103423978


def fans(shape) -> tuple[int, int]:
    """Keras' ``compute_fans``: a kernel ``(..., in, out)`` sees ``in`` inputs per position of its receptive field
    ``prod(shape[:-2])``, so fan_in = in * field and fan_out = out * field (a Dense kernel: field 1)."""
    field = math.prod(shape[:-2])
    return shape[-2] * field, shape[-1] * field


def glorot_uniform(key, shape, dtype=jnp.float32):
    """U(-l, l) with l = sqrt(6 / (fan_in + fan_out)): keeps activation variance roughly constant (Keras default)."""
    fan_in, fan_out = fans(shape)
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return jax.random.uniform(key, shape, dtype, -limit, limit)


def he_normal(key, shape, dtype=jnp.float32):
    """Truncated N(0, 2 / fan_in) at ±2 std, rescaled so the std really is sqrt(2 / fan_in) — suited to (leaky) ReLU."""
    stddev = math.sqrt(2.0 / fans(shape)[0]) / TRUNCATED_NORMAL_STD
    return stddev * jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype)


def random_normal(key, shape, dtype=jnp.float32):
    """N(0, 0.05²), Keras' RandomNormal defaults: Ioffe & Szegedy's "small random Gaussian values" (Sec. 4.1)."""
    return 0.05 * jax.random.normal(key, shape, dtype)


INITIALIZERS = {"glorot_uniform": glorot_uniform, "he_normal": he_normal, "random_normal": random_normal}
