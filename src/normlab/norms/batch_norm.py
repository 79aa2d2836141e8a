r"""Batch normalization (Ioffe & Szegedy 2015) with Keras semantics — the subject of this project — or PyTorch's.

Training, per feature over the (real rows of the) batch, and over the height and width of an image:

.. math::
    \mu_B = \tfrac1m \sum_i x_i, \qquad \sigma_B^2 = \tfrac1m \sum_i (x_i - \mu_B)^2 \quad (\text{biased}),

    y_i = \gamma \, \frac{x_i - \mu_B}{\sqrt{\sigma_B^2 + \epsilon}} + \beta,

    \text{moving} \leftarrow \text{momentum} \cdot \text{moving} + (1 - \text{momentum}) \cdot \text{batch}.

Inference uses ``moving_mean`` and ``moving_variance`` in place of :math:`\mu_B, \sigma_B^2`, so a model's
prediction for one example does not depend on the rest of its batch.

Keras names and defaults: features on the last axis; ``gamma`` = 1 and ``beta`` = 0 are trainable;
``moving_mean`` = 0 and ``moving_variance`` = 1 are state, not trained; momentum 0.99, epsilon 1e-3.

``convention = "pytorch"`` is ``torch.nn.BatchNorm1d``/``2d``, whose three differences trip users daily: its
momentum is the weight of the *new* statistic (default 0.1, Keras' 0.9), epsilon defaults to 1e-5, and the
running variance is updated with the *unbiased* batch variance :math:`\tfrac{m}{m-1}\sigma_B^2` while training
normalizes with the biased one. One value per feature (batch 1 of a dense layer) has no unbiased variance:
PyTorch refuses it in training, and so does this layer.
"""

import math
from typing import Annotated

import jax.numpy as jnp

from normlab.errors import ConfigError
from normlab.layer import Flag, Fraction, Layer, Positive, choice
from normlab.norms.moments import moments

Convention = Annotated[str, choice("keras", "pytorch")]
# Each convention's momentum and epsilon, filled in by ``nn.spec`` for the options a layer table leaves unset.
CONVENTIONS = {"keras": {"momentum": 0.99, "epsilon": 1e-3}, "pytorch": {"momentum": 0.1, "epsilon": 1e-5}}


def normalize(x, mean, variance, epsilon, params):
    """:math:`\\gamma (x - \\mu) / \\sqrt{\\sigma^2 + \\epsilon} + \\beta`, with whichever of gamma and beta exist."""
    y = (x - mean) * jnp.reciprocal(jnp.sqrt(variance + epsilon))
    if "gamma" in params:
        y = y * params["gamma"]
    if "beta" in params:
        y = y + params["beta"]
    return y


def affine_params(features: int, center: bool, scale: bool) -> dict:
    """Keras' ``gamma`` (ones) and ``beta`` (zeros), each only if asked for."""
    return ({"gamma": jnp.ones((features,), jnp.float32)} if scale else {}) | (
        {"beta": jnp.zeros((features,), jnp.float32)} if center else {})


def batch_axes(x) -> tuple[int, ...]:
    """Every axis but the features (last): the batch, and an image's height and width."""
    return tuple(range(x.ndim - 1))


def batch_norm(momentum: Fraction = None, epsilon: Positive = None, center: Flag = True, scale: Flag = True,
               convention: Convention = "keras", axis_name=None) -> Layer:
    """A BatchNormalization layer over the last axis; ``axis_name`` (not a spec option) shards its statistics.
    ``momentum`` and ``epsilon`` default to the convention's (``CONVENTIONS``)."""
    momentum = CONVENTIONS[convention]["momentum"] if momentum is None else momentum
    epsilon = CONVENTIONS[convention]["epsilon"] if epsilon is None else epsilon
    keep = momentum if convention == "keras" else 1.0 - momentum  # the old value's weight

    def init(key, in_shape):
        features = in_shape[-1]
        state = {"moving_mean": jnp.zeros((features,), jnp.float32),
                 "moving_variance": jnp.ones((features,), jnp.float32)}
        return affine_params(features, center, scale), state, in_shape

    def apply(params, state, x, train, mask=None):
        if not train:
            return normalize(x, state["moving_mean"], state["moving_variance"], epsilon, params), state
        mean, variance, count = moments(x, batch_axes(x), mask, axis_name)
        mean, variance, count = mean.reshape(-1), variance.reshape(-1), count.reshape(-1)
        running = variance
        if convention == "pytorch":
            if axis_name is None and math.prod(x.shape[:-1]) == 1:
                raise ConfigError("batch_norm (convention pytorch): expected more than 1 value per feature in "
                                  "training, got a batch of 1 (PyTorch refuses it too); use a batch of 2 or more")
            # unbiased; a padded last batch with one real row keeps the biased 0 instead of dividing by zero
            running = variance * count / jnp.maximum(count - 1.0, 1.0)
        state = {"moving_mean": keep * state["moving_mean"] + (1.0 - keep) * mean,
                 "moving_variance": keep * state["moving_variance"] + (1.0 - keep) * running}
        return normalize(x, mean, variance, epsilon, params), state

    return Layer("BatchNormalization", init, apply)
