"""One SGD step and one evaluation pass, as pure functions of arrays.

Images stay uint8 until here and become float32 pixels inside the compiled step: 4x less memory resident and
per gather than float32. How (scaled, normalized, augmented) is ``train.preprocess``.
"""

import jax
import jax.numpy as jnp
import optax

from normlab.engine.gemm import Stepped
from normlab.nn.losses import correct, sparse_categorical_crossentropy
from normlab.nn.models import Model, apply
from normlab.train.preprocess import augmented, pixels, scale_pixels  # noqa: F401 (scale_pixels: diagnose's)
from normlab.train.state import TrainState


def make_loss(model: Model, axis_name=None):
    """``loss(params, model_state, x, labels, mask, key=None) -> (mean loss, (new_state, loss_sum, correct_sum))``
    in training mode: the function every gradient of training and of ``normlab diagnose`` is taken of; ``key``
    is the random layers' draw (``models.outputs``), None for a model without one (``Model.is_random``).

    ``mask`` marks the real rows of a padded batch: the mean is over real rows, exactly what Keras does for the
    partial last batch, and the sums let the epoch report a per-sample mean like Keras' fit. ``axis_name``: the
    batch is split over that device axis (``train.parallel``); the sums and the mean are the whole batch's.
    """

    def loss(params, model_state, x, labels, mask, key=None):
        logits, new_state = apply(model, params, model_state, x, True, mask, key)
        losses = sparse_categorical_crossentropy(logits, labels) * mask
        sums = jnp.sum(losses), jnp.sum(mask), jnp.sum(correct(logits, labels) * mask)
        loss_sum, count, correct_sum = sums if axis_name is None else jax.lax.psum(sums, axis_name)
        return loss_sum / count, (new_state, loss_sum, correct_sum)

    return loss


def make_train_step(model: Model, optimizer: optax.GradientTransformation, sgd_rate=None, axis_name=None,
                    stats: dict | None = None):
    """``step(ts, images, labels, mask, drawn=None, key=None) -> (ts, (loss_sum, correct_sum))``, one step of
    ``optimizer`` on ``make_loss`` (``axis_name`` and ``key`` as there), on the images as ``preprocess.pixels``
    makes them with ``stats`` and, given ``drawn`` (``preprocess.draws``), augmented.

    ``sgd_rate``: the optimizer is plain SGD at this (traced) rate, and the layers' ``stepped`` params take their
    step inside their own weight-gradient product (``engine.gemm.Stepped``); the rest as ``optax.sgd`` would.
    """
    grad_fn = jax.value_and_grad(make_loss(model, axis_name), has_aux=True)

    def step(ts: TrainState, images, labels, mask, drawn=None, key=None):
        params = ts.params if sgd_rate is None else _stepped(model, ts.params, -sgd_rate)
        x = augmented(pixels(images, stats), drawn or {})
        (_, (model_state, loss_sum, correct_sum)), grads = grad_fn(params, ts.model_state, x, labels, mask, key)
        if sgd_rate is None:
            updates, opt_state = optimizer.update(grads, ts.opt_state, ts.params)
            params = optax.apply_updates(ts.params, updates)
        else:  # optax.sgd's update, p + (-rate) * g; a stepped kernel's "gradient" is its stepped value
            params, opt_state = jax.tree.map(lambda p, g: g.kernel if isinstance(g, Stepped) else p + g * -sgd_rate,
                                             params, grads, is_leaf=lambda node: isinstance(node, Stepped)), ts.opt_state
        return ts._replace(params=params, model_state=model_state, opt_state=opt_state), (loss_sum, correct_sum)

    return step


def _stepped(model: Model, params, step):
    return {name: {key: Stepped(value, step) if key in layer.stepped else value
                   for key, value in params[name].items()} for name, layer in model.layers}


EVAL_CHUNK = 1000  # rows per inference pass: a CNN's im2col on 10,000 images at once takes gigabytes


def make_chunk_sums(model: Model, stats: dict | None = None):
    """``sums(params, model_state, images, labels, real) -> (loss sum, correct sum)`` over one chunk's real rows
    (``real``: 1 for a row, 0 for padding) in inference mode, on ``preprocess.pixels(images, stats)``."""

    def sums(params, model_state, images, labels, real):
        logits, _ = apply(model, params, model_state, pixels(images, stats), False)
        return (jnp.sum(sparse_categorical_crossentropy(logits, labels) * real),
                jnp.sum(correct(logits, labels) * real))

    return sums


def chunked(images_u8, labels, size: int):
    """``(images, labels, real)`` as ``(chunks, size, ...)``: the last chunk padded, its padding 0 in ``real``."""
    n = images_u8.shape[0]
    chunks = -(-n // size)
    pad = chunks * size - n
    images = jnp.pad(images_u8, ((0, pad),) + ((0, 0),) * (images_u8.ndim - 1))
    real = (jnp.arange(chunks * size) < n).astype(jnp.float32).reshape(chunks, size)
    return images.reshape(chunks, size, *images_u8.shape[1:]), jnp.pad(labels, (0, pad)).reshape(chunks, size), real


def make_evaluate(model: Model, chunk: int = EVAL_CHUNK, stats: dict | None = None):
    """``evaluate(params, model_state, images_u8, labels) -> (mean loss, accuracy)`` in inference mode, over
    ``chunk`` rows at a time (``lax.map``), so memory is bounded by the chunk, not the data set (``stats``: as
    ``make_chunk_sums``)."""
    sums = make_chunk_sums(model, stats)

    def evaluate(params, model_state, images_u8, labels):
        loss_sums, correct_sums = jax.lax.map(lambda batch: sums(params, model_state, *batch),
                                              chunked(images_u8, labels, min(images_u8.shape[0], chunk)))
        return jnp.sum(loss_sums) / images_u8.shape[0], jnp.sum(correct_sums) / images_u8.shape[0]

    return evaluate
