"""The one statistics kernel every normalization is built on.

A norm is just a choice of *which axes* to reduce (Flax's `_compute_stats` idea): batch norm reduces over the
batch, layer norm over the features. Two extras make it exact for training:

* ``mask`` (one weight per example, 0 or 1) lets a padded batch count only its real rows, so the partial last
  batch of an epoch (24 of 32 rows) gets the statistics Keras computes over its 24 samples; it covers the
  leading axes of ``x`` (a ghost batch norm's ``(ghosts, rows)`` mask over ``(ghosts, rows, features)``);
* ``axis_name`` sums the moments across a named ``vmap``/``pmap`` axis, so sharded batch norm needs nothing else.
"""

import jax
import jax.numpy as jnp


def _sum(x, axes, axis_name):
    total = jnp.sum(x, axis=axes, keepdims=True)
    return total if axis_name is None else jax.lax.psum(total, axis_name)


def moments(x, axes, mask=None, axis_name=None):
    """Mean and *biased* variance of ``x`` over ``axes`` (kept as size-1 dims), rows weighted by ``mask``, and
    the weight each statistic is over (the count of values, so unbiased variants and empty groups can use it).

    Two passes, E[(x - mean)^2], rather than E[x^2] - mean^2: the latter cancels catastrophically in float32
    when |mean| >> std, as it is for raw pixel features.
    """
    weight = jnp.ones(x.shape[:1], x.dtype) if mask is None else mask.astype(x.dtype)
    weight = jnp.broadcast_to(weight.reshape(weight.shape + (1,) * (x.ndim - weight.ndim)), x.shape)
    count = _sum(weight, axes, axis_name)
    mean = _sum(weight * x, axes, axis_name) / count
    variance = _sum(weight * jnp.square(x - mean), axes, axis_name) / count
    return mean, variance, count
