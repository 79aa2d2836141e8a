r"""Batch normalization (Ioffe & Szegedy 2015) with Keras semantics — the subject of this project.

Training, per feature over the (real rows of the) batch:

.. math::
    \mu_B = \tfrac1m \sum_i x_i, \qquad \sigma_B^2 = \tfrac1m \sum_i (x_i - \mu_B)^2 \quad (\text{biased}),

    y_i = \gamma \, \frac{x_i - \mu_B}{\sqrt{\sigma_B^2 + \epsilon}} + \beta,

    \text{moving} \leftarrow \text{momentum} \cdot \text{moving} + (1 - \text{momentum}) \cdot \text{batch}.

Inference uses ``moving_mean`` and ``moving_variance`` in place of :math:`\mu_B, \sigma_B^2`, so a model's
prediction for one example does not depend on the rest of its batch.

Keras names and defaults: features on the last axis; ``gamma`` = 1 and ``beta`` = 0 are trainable;
``moving_mean`` = 0 and ``moving_variance`` = 1 are state, not trained; momentum 0.99, epsilon 1e-3.
"""

import jax.numpy as jnp

from normlab.layer import Flag, Fraction, Layer, Positive
from normlab.norms.moments import moments


def batch_norm(momentum: Fraction = 0.99, epsilon: Positive = 1e-3, center: Flag = True, scale: Flag = True,
               axis_name=None) -> Layer:
    """A BatchNormalization layer over the last axis; ``axis_name`` (not a spec option) shards its statistics."""

    def init(key, in_shape):
        features = in_shape[-1]
        params = {}
        if scale:
            params["gamma"] = jnp.ones((features,), jnp.float32)
        if center:
            params["beta"] = jnp.zeros((features,), jnp.float32)
        state = {"moving_mean": jnp.zeros((features,), jnp.float32),
                 "moving_variance": jnp.ones((features,), jnp.float32)}
        return params, state, in_shape

    def apply(params, state, x, train, mask=None):
        if train:
            mean, variance = moments(x, tuple(range(x.ndim - 1)), mask, axis_name)
            mean, variance = mean.reshape(-1), variance.reshape(-1)
            state = {"moving_mean": momentum * state["moving_mean"] + (1.0 - momentum) * mean,
                     "moving_variance": momentum * state["moving_variance"] + (1.0 - momentum) * variance}
        else:
            mean, variance = state["moving_mean"], state["moving_variance"]
        y = (x - mean) * jnp.reciprocal(jnp.sqrt(variance + epsilon))
        if scale:
            y = y * params["gamma"]
        if center:
            y = y + params["beta"]
        return y, state

    return Layer("BatchNormalization", init, apply)
