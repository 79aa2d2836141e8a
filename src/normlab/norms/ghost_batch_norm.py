r"""Ghost batch normalization (Hoffer, Hubara & Soudry 2017), TF-Keras 2's ``virtual_batch_size``.

Large batches generalize worse; part of the cure is to normalize small *virtual* ("ghost") batches: the batch
of B rows is split into B/v consecutive ghosts of v rows, and each is normalized with its own statistics
(per feature, over its rows and an image's height and width; biased variance):

.. math::
    y_i = \gamma \, \frac{x_i - \mu_{k(i)}}{\sqrt{\sigma_{k(i)}^2 + \epsilon}} + \beta ,

with ``gamma``/``beta`` shared. In training the moving statistics take one step per ghost, in order,
:math:`\text{moving} \leftarrow m \cdot \text{moving} + (1 - m) \cdot \text{stat}_k`, as the paper does (TF-Keras
averages the ghosts' statistics into a single step instead); a ghost of padding alone (a padded last batch) is
skipped. A batch of at most v rows is one ghost: plain batch norm. Inference uses the moving statistics.
"""

import jax.numpy as jnp

from normlab.errors import ConfigError
from normlab.interop.frameworks import cannot
from normlab.layer import Flag, Folding, Fraction, Kind, Layer, Positive, Units
from normlab.norms.batch_norm import batch_norm, moving_affine_onnx, moving_steps, normalize
from normlab.norms.moments import moments


def ghost_batch_norm(virtual_batch_size: Units = 32, momentum: Fraction = 0.99, epsilon: Positive = 1e-3,
                     center: Flag = True, scale: Flag = True) -> Layer:
    plain = batch_norm(momentum, epsilon, center, scale)

    def apply(params, state, x, train, mask=None):
        batch, size = x.shape[0], virtual_batch_size
        if not train or batch <= size:
            return plain.apply(params, state, x, train, mask)
        if batch % size:
            raise ConfigError(f"ghost_batch_norm: virtual_batch_size {size} must divide the batch of {batch} rows "
                              "(or be at least it)")
        ghosts = x.reshape((batch // size, size) + x.shape[1:])
        weight = (jnp.ones(batch, x.dtype) if mask is None else mask.astype(x.dtype)).reshape(batch // size, size)
        real = jnp.any(weight > 0, axis=1)
        # a ghost of padding alone is normalized by its own rows: finite, and ignored by the loss (0/0 would
        # put NaN into every gradient)
        weight = jnp.where(real[:, None], weight, 1.0)
        mean, variance, _ = moments(ghosts, tuple(range(1, ghosts.ndim - 1)), weight)
        stats = {"moving_mean": mean.reshape(mean.shape[0], -1), "moving_variance": variance.reshape(mean.shape[0], -1)}
        return normalize(ghosts, mean, variance, epsilon, params).reshape(x.shape), moving_steps(state, stats, real,
                                                                                                 momentum)

    return Layer("BatchNormalization", plain.init, apply)


KIND = Kind(ghost_batch_norm, keras=cannot("Keras 3's BatchNormalization has no virtual_batch_size (ghost_batch_norm)"),
            torch=cannot("PyTorch's BatchNorm has no virtual batches (ghost_batch_norm)"), onnx=moving_affine_onnx,
            folding=Folding("affine"), splits=False,
            batch_limited=lambda spec: True)  # a virtual batch size that does not divide the batch
