"""Softmax cross-entropy from logits, and accuracy.

Keras' model ends in a softmax and takes the log of clipped probabilities; we keep the logits and use
log-softmax (logsumexp), which is the same function where Keras' clipping does not bite, and stable where it does.
"""

import jax
import jax.numpy as jnp


def sparse_categorical_crossentropy(logits, labels):
    """Per-example -log softmax(logits)[label]."""
    picked = jnp.take_along_axis(logits, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]
    return jax.nn.logsumexp(logits, axis=-1) - picked


def correct(logits, labels):
    """1.0 where the arg-max class is the label (Keras' sparse_categorical_accuracy per example)."""
    return (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
