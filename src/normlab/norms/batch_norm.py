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

import jax
import jax.numpy as jnp
import numpy as np

from normlab.errors import ConfigError
from normlab.interop.frameworks import Unsupported, channels_first, torch_affine
from normlab.layer import Flag, Folding, Fraction, Kind, Layer, Positive, choice
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


def moving_steps(state, stats, real, keep):
    """The moving statistics stepped by each group's ``stats`` in turn (leading axis), ``moving <- keep * moving +
    (1 - keep) * stat``, skipping a group without real rows (``real`` False): ghost batches, or devices."""

    def step(moving, group):
        stat, has_rows = group
        return jax.tree.map(lambda m, s: jnp.where(has_rows, keep * m + (1.0 - keep) * s, m), moving, stat), None

    return jax.lax.scan(step, state, (stats, real))[0]


def in_device_order(tree, axis_name):
    """Every device's ``tree``, its leaves stacked in device order, the same on all devices: a sum of one-hot
    slots, exact (each slot adds zeros), and typed as equal on all devices, which ``all_gather``'s result is not."""
    index, count = jax.lax.axis_index(axis_name), jax.lax.axis_size(axis_name)
    return jax.lax.psum(jax.tree.map(lambda a: jnp.zeros((count, *a.shape), a.dtype).at[index].set(a), tree),
                        axis_name)


def batch_norm(momentum: Fraction = None, epsilon: Positive = None, center: Flag = True, scale: Flag = True,
               convention: Convention = "keras", axis_name=None, sync: bool = True) -> Layer:
    """A BatchNormalization layer over the last axis. ``momentum`` and ``epsilon`` default to the convention's
    (``CONVENTIONS``).

    ``axis_name`` (not a spec option: ``train.parallel`` sets it) names the device axis a data-parallel batch is
    split over. ``sync``: the statistics are over the whole batch (SyncBatchNorm); otherwise each device normalizes
    its own rows (DDP without it: ghost batch norm with one ghost per device), and the moving statistics take one
    step per device, in device order, so every device keeps the same ones.
    """
    momentum = CONVENTIONS[convention]["momentum"] if momentum is None else momentum
    epsilon = CONVENTIONS[convention]["epsilon"] if epsilon is None else epsilon
    keep = momentum if convention == "keras" else 1.0 - momentum  # the old value's weight

    def init(key, in_shape):
        features = in_shape[-1]
        state = {"moving_mean": jnp.zeros((features,), jnp.float32),
                 "moving_variance": jnp.ones((features,), jnp.float32)}
        return affine_params(features, center, scale), state, in_shape

    local = axis_name is not None and not sync

    def apply(params, state, x, train, mask=None):
        if not train:
            return normalize(x, state["moving_mean"], state["moving_variance"], epsilon, params), state
        real = True
        if local and mask is not None:
            # a device of padding alone (the padded last batch's) is normalized by its own rows: finite, and
            # ignored by the loss (0/0 would put NaN into every gradient); it leaves the moving statistics
            real = jnp.any(mask > 0)
            mask = jnp.where(real, mask, 1.0)
        mean, variance, count = moments(x, batch_axes(x), mask, None if local else axis_name)
        mean, variance, count = mean.reshape(-1), variance.reshape(-1), count.reshape(-1)
        running = variance
        if convention == "pytorch":
            if math.prod(x.shape[:-1]) == 1 and (axis_name is None or local):
                raise ConfigError("batch_norm (convention pytorch): expected more than 1 value per feature in "
                                  "training, got a batch of 1 (PyTorch refuses it too); use a batch of 2 or more")
            # unbiased; a padded last batch with one real row keeps the biased 0 instead of dividing by zero
            running = variance * count / jnp.maximum(count - 1.0, 1.0)
        stats = {"moving_mean": mean, "moving_variance": running}
        if local:
            every_stats, every_real = in_device_order((stats, jnp.asarray(real, x.dtype)), axis_name)
            new_state = moving_steps(state, every_stats, every_real > 0, keep)
        else:
            new_state = jax.tree.map(lambda m, s: keep * m + (1.0 - keep) * s, state, stats)
        return normalize(x, mean, variance, epsilon, params), new_state

    return Layer("BatchNormalization", init, apply)


def inference_affine(epsilon: float, params: dict, state: dict) -> tuple[np.ndarray, np.ndarray]:
    """Batch norm at inference as one map per feature, ``x * s + t``, in float64: ``s = gamma / sqrt(moving_variance
    + epsilon)``, ``t = beta - moving_mean * s`` (gamma 1 without ``scale``, beta 0 without ``center``). What
    folding absorbs into a neighbour and the ONNX export writes as one Mul and one Add."""
    mean, variance = (np.asarray(state[k], np.float64) for k in ("moving_mean", "moving_variance"))
    gamma = np.asarray(params.get("gamma", 1.0), np.float64)
    beta = np.asarray(params.get("beta", 0.0), np.float64)
    scale = gamma / np.sqrt(variance + epsilon)
    return scale, beta - mean * scale


def moving_affine_onnx(graph, site, x: str) -> str:
    """The ONNX nodes of ``inference_affine``, computed in float64 and stored as float32: how every kind that infers
    with batch norm's moving statistics (renorm, ghost batches) exports."""
    scale, shift = inference_affine(site.options["epsilon"], site.params, site.state)
    y = graph.op(site.name, "Mul", x, graph.const(f"{site.name}/scale", scale))
    return graph.op(site.name, "Add", y, graph.const(f"{site.name}/shift", shift))


def _keras(options: dict) -> tuple[str, dict]:
    if options["convention"] == "pytorch":
        raise Unsupported("Keras' BatchNormalization cannot keep an unbiased running variance "
                          "(batch_norm convention \"pytorch\")")
    return "BatchNormalization", {k: v for k, v in options.items() if k != "convention"}


def _torch(nn, options: dict, in_shape: list, last: bool) -> list:
    """Keras' momentum m is PyTorch's 1 - m; the "pytorch" convention's momentum is PyTorch's own."""
    momentum = options["momentum"] if options["convention"] == "pytorch" else 1.0 - options["momentum"]
    module = nn.BatchNorm2d if len(in_shape) == 3 else nn.BatchNorm1d
    layer = module(in_shape[-1], eps=options["epsilon"], momentum=momentum,
                   affine=torch_affine(options, module.__name__))
    return [channels_first(nn, layer, in_shape)]


def _options(spec: dict) -> dict:
    return {key: value for key, value in spec.items() if key != "kind"}


KIND = Kind(
    batch_norm, keras=_keras, keras_class="BatchNormalization",
    from_keras=lambda config: None if config.get("renorm") else {}, torch=_torch, onnx=moving_affine_onnx,
    folding=Folding("affine"),
    # momentum 0 in Keras' convention: the training-mode update is the batch's mean and biased variance (a
    # PyTorch-convention BN normalizes the same way in training; only its running variance is unbiased)
    batch_statistics=lambda spec: {**spec, "momentum": 0.0, "convention": "keras"},
    split=lambda spec, axis_name, sync: batch_norm(**_options(spec), axis_name=axis_name, sync=sync),
    study_bn=True, conventions=CONVENTIONS,
    batch_limited=lambda spec: spec["convention"] == "pytorch")  # batch 1: no unbiased variance
