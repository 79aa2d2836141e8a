r"""Dropout, Keras' ``Dropout(rate)`` (Srivastava et al. 2014): in training each value is kept with probability
:math:`1 - \text{rate}` and scaled up, else zeroed; at inference the identity.

.. math::
    y = \frac{m \odot x}{1 - \text{rate}}, \qquad m \sim \text{Bernoulli}(1 - \text{rate}) \text{ per value}

Inverted dropout, as Keras and PyTorch: the expected output is the input, so inference needs no rescaling. The
mask comes from the training step's key (``Layer.random``; ``train.loop.layer_keys``), a function of the seed,
the epoch and the step: a resumed run drops what the uninterrupted one did, and each seed drops its own values.
Padded rows are dropped too; the loss ignores them.
"""

import jax
import jax.numpy as jnp

from normlab.interop.frameworks import Unsupported
from normlab.layer import Folding, Fraction, Kind, Layer


def dropout(rate: Fraction) -> Layer:
    """No default rate: Keras' ``Dropout`` has none either."""
    return _dropout(rate)


def _dropout(rate: float, axis_name: str | None = None) -> Layer:
    def apply(params, state, x, train, mask=None, key=None):
        if not train or rate == 0:  # Keras draws nothing at rate 0
            return x, state
        return jnp.where(_kept(key, 1 - rate, x.shape, axis_name), x / (1 - rate), 0), state  # Keras' x / keep

    return Layer("Dropout", lambda key, in_shape: ({}, {}, in_shape), apply, random=True)


def _kept(key, keep: float, shape: tuple, axis_name: str | None):
    """The mask; over a device axis, this device's rows of the whole batch's (every device has the step's key), so
    N devices drop exactly what one device does, for N times the random bits of its rows."""
    if axis_name is None:
        return jax.random.bernoulli(key, keep, shape)
    rows = shape[0]
    whole = jax.random.bernoulli(key, keep, (jax.lax.axis_size(axis_name) * rows, *shape[1:]))
    return jax.lax.dynamic_slice_in_dim(whole, jax.lax.axis_index(axis_name) * rows, rows)


def _from_keras(config: dict) -> dict:
    if config.get("noise_shape") is not None:  # invisible at inference, so the probe would not catch it
        raise Unsupported("normlab drops each value on its own: a noise_shape (one draw shared along axes) is not "
                          "read")
    return {}


# At inference the identity: no ONNX node, and a batch norm's affine map passes through it to fold (``nn.fold``).
KIND = Kind(dropout, keras_class="Dropout", from_keras=_from_keras,
            torch=lambda nn, options, in_shape, last: [nn.Dropout(options["rate"])],
            onnx=lambda graph, site, x: x, folding=Folding("reorder"),
            split=lambda options, axis_name, sync: _dropout(options["rate"], axis_name))
