"""One SGD step and one evaluation pass, as pure functions of arrays.

Images stay uint8 until here and are scaled by 1/255 inside the compiled step: 4x less memory resident and
per gather than float32, and the scale fuses into the first op for free.
"""

import jax
import jax.numpy as jnp
import optax

from normlab.nn.losses import correct, sparse_categorical_crossentropy
from normlab.nn.models import Model, apply
from normlab.train.state import TrainState


def scale_pixels(images_u8):
    return images_u8.astype(jnp.float32) * (1.0 / 255.0)


def make_loss(model: Model):
    """``loss(params, model_state, x, labels, mask) -> (mean loss, (new_state, loss_sum, correct_sum))`` in
    training mode: the function every gradient of training and of ``normlab diagnose`` is taken of.

    ``mask`` marks the real rows of a padded batch: the mean is over real rows, exactly what Keras does for the
    partial last batch, and the sums let the epoch report a per-sample mean like Keras' fit.
    """

    def loss(params, model_state, x, labels, mask):
        logits, new_state = apply(model, params, model_state, x, True, mask)
        losses = sparse_categorical_crossentropy(logits, labels) * mask
        return jnp.sum(losses) / jnp.sum(mask), (new_state, jnp.sum(losses), jnp.sum(correct(logits, labels) * mask))

    return loss


def make_train_step(model: Model, optimizer: optax.GradientTransformation):
    """``step(ts, images_u8, labels, mask) -> (ts, (loss_sum, correct_sum))``, one SGD step on ``make_loss``."""
    grad_fn = jax.value_and_grad(make_loss(model), has_aux=True)

    def step(ts: TrainState, images_u8, labels, mask):
        (_, (model_state, loss_sum, correct_sum)), grads = grad_fn(ts.params, ts.model_state, scale_pixels(images_u8),
                                                                   labels, mask)
        updates, opt_state = optimizer.update(grads, ts.opt_state, ts.params)
        params = optax.apply_updates(ts.params, updates)
        return ts._replace(params=params, model_state=model_state, opt_state=opt_state), (loss_sum, correct_sum)

    return step


def make_evaluate(model: Model):
    """``evaluate(params, model_state, images_u8, labels) -> (mean loss, accuracy)`` in inference mode."""

    def evaluate(params, model_state, images_u8, labels):
        logits, _ = apply(model, params, model_state, scale_pixels(images_u8), False)
        return jnp.mean(sparse_categorical_crossentropy(logits, labels)), jnp.mean(correct(logits, labels))

    return evaluate
