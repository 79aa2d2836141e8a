"""Everything a training run carries from step to step, as one pytree (so it can be vmapped over seeds)."""

from typing import Any, NamedTuple

import jax
import optax

from normlab.nn.models import Model, init


class TrainState(NamedTuple):
    params: Any       # trained by the optimizer
    model_state: Any  # BN moving statistics: updated by the forward pass, not by gradients
    opt_state: Any
    rng: Any          # shuffles the training set; folded with the epoch number, so epoch k is reproducible alone


def create(model: Model, optimizer: optax.GradientTransformation, seed, initial: tuple | None = None) -> TrainState:
    """One seed fixes everything: the initial weights and every epoch's shuffle. ``initial`` ``(params, state)``
    are given weights instead of drawn ones (a model brought in from Keras, say)."""
    init_key, shuffle_key = jax.random.split(jax.random.key(seed))
    params, model_state = init(model, init_key) if initial is None else initial
    return TrainState(params, model_state, optimizer.init(params), shuffle_key)
