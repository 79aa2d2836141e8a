r"""Batch renormalization (Ioffe 2017), Keras' ``BatchNormalization(renorm=True)``, with the paper's schedule.

Batch norm trains on batch statistics but infers with moving ones; with small or non-i.i.d. batches the two
differ, and the model never sees at training time what it will be given at inference. Renorm trains on the
batch statistics *corrected towards* moving ones (``renorm_mean``, ``renorm_stddev`` :math:`\mu, \sigma`):

.. math::
    s_B = \sqrt{\sigma_B^2 + \epsilon}, \qquad
    r = \operatorname{clip}_{[1/r_{max}, r_{max}]}\!\Big(\frac{s_B}{\max(\sigma, \sqrt\epsilon)}\Big), \qquad
    d = \operatorname{clip}_{[-d_{max}, d_{max}]}\!\Big(\frac{\mu_B - \mu}{\max(\sigma, \sqrt\epsilon)}\Big),

    y = \gamma \Big(r \, \frac{x - \mu_B}{s_B} + d\Big) + \beta,

with :math:`r, d` constants for the gradient (``stop_gradient``). Unclipped, :math:`y = \gamma (x - \mu) / \sigma
+ \beta`: normalized by the moving statistics, as at inference, while the gradient still flows through the batch's.
:math:`r = 1, d = 0` (``rmax`` 1, ``dmax`` 0) is plain batch norm. Keras' updates: ``renorm_mean`` and
``renorm_stddev`` with ``renorm_momentum``; ``moving_mean`` and ``moving_stddev`` with ``momentum``;
``moving_variance`` = relu(``moving_stddev``² - epsilon), which inference uses. Keras clips only
:math:`r \le r_{max}` unless given ``rmin``; the paper's :math:`1/r_{max}` lower bound is used here (a Keras
mirror passes ``rmin = 1 / rmax``).

The paper's schedule (not in Keras): with ``warmup_steps`` W or ``relax_steps`` R set, an int32 ``step``
joins the state and the bounds open linearly from plain batch norm,
:math:`r_{max,t} = 1 + (r_{max} - 1)\,p_t`, :math:`d_{max,t} = d_{max}\,p_t`,
:math:`p_t = \operatorname{clip}((t - W) / R, 0, 1)` (a step at W when R = 0).
"""

import math
from typing import Annotated

import jax
import jax.numpy as jnp

from normlab.interop.frameworks import Unsupported, cannot
from normlab.layer import FLOAT32_MAX, Flag, Folding, Fraction, Kind, Layer, NonNegative, Option, Positive
from normlab.norms.batch_norm import affine_params, batch_axes, moving_affine_onnx, normalize
from normlab.norms.moments import moments

MAX_STEPS = 2**31 - 1  # the step counter is int32
Rmax = Annotated[float, Option("a number >= 1 within float32",
                               lambda v: type(v) in (int, float) and 1 <= v <= FLOAT32_MAX)]
Steps = Annotated[int, Option(f"an int in 0..{MAX_STEPS:,}", lambda v: type(v) is int and 0 <= v <= MAX_STEPS)]


def _average(moving, new, momentum):
    return momentum * moving + (1.0 - momentum) * new


def batch_renorm(momentum: Fraction = 0.99, epsilon: Positive = 1e-3, center: Flag = True, scale: Flag = True,
                 renorm_momentum: Fraction = 0.99, rmax: Rmax = 3.0, dmax: NonNegative = 5.0,
                 warmup_steps: Steps = 0, relax_steps: Steps = 0) -> Layer:
    scheduled = warmup_steps > 0 or relax_steps > 0

    def init(key, in_shape):
        zeros, ones = jnp.zeros(in_shape[-1:], jnp.float32), jnp.ones(in_shape[-1:], jnp.float32)
        state = {"moving_mean": zeros, "moving_variance": ones, "moving_stddev": ones,
                 "renorm_mean": zeros, "renorm_stddev": ones}
        if scheduled:
            state["step"] = jnp.zeros((), jnp.int32)
        return affine_params(in_shape[-1], center, scale), state, in_shape

    def bounds(state):
        """This step's (rmax, dmax)."""
        if not scheduled:
            return rmax, dmax
        after = state["step"] - warmup_steps
        opened = (after >= 0).astype(jnp.float32) if relax_steps == 0 else jnp.clip(after / relax_steps, 0.0, 1.0)
        return 1.0 + (rmax - 1.0) * opened, dmax * opened

    def apply(params, state, x, train, mask=None):
        if not train:
            return normalize(x, state["moving_mean"], state["moving_variance"], epsilon, params), state
        mean, variance, _ = moments(x, batch_axes(x), mask)
        mean, variance = mean.reshape(-1), variance.reshape(-1)
        stddev = jnp.sqrt(variance + epsilon)
        renorm_stddev = jnp.maximum(state["renorm_stddev"], math.sqrt(epsilon))  # Keras: no 0 early in training
        r_max, d_max = bounds(state)
        r = jax.lax.stop_gradient(jnp.clip(stddev / renorm_stddev, 1.0 / r_max, r_max))
        d = jax.lax.stop_gradient(jnp.clip((mean - state["renorm_mean"]) / renorm_stddev, -d_max, d_max))
        gamma = params.get("gamma", 1.0)
        corrected = {"gamma": r * gamma, "beta": d * gamma + params.get("beta", 0.0)}
        moving_stddev = _average(state["moving_stddev"], stddev, momentum)
        new_state = {"moving_mean": _average(state["moving_mean"], mean, momentum),
                     "moving_variance": jax.nn.relu(jnp.square(moving_stddev) - epsilon),
                     "moving_stddev": moving_stddev,
                     "renorm_mean": _average(state["renorm_mean"], mean, renorm_momentum),
                     "renorm_stddev": _average(state["renorm_stddev"], stddev, renorm_momentum)}
        if scheduled:
            new_state["step"] = state["step"] + 1
        return normalize(x, mean, variance, epsilon, corrected), new_state

    return Layer("BatchNormalization", init, apply)


def _keras(options: dict) -> tuple[str, dict]:
    """Keras clips r only from above unless given ``rmin``: the paper's (and normlab's) 1/rmax is passed."""
    if options["warmup_steps"] or options["relax_steps"]:
        raise Unsupported("Keras' batch renormalization has no warm-up or relaxation schedule "
                          "(batch_renorm warmup_steps or relax_steps)")
    clipping = {"rmax": options["rmax"], "rmin": 1.0 / options["rmax"], "dmax": options["dmax"]}
    kept = {k: options[k] for k in ("momentum", "epsilon", "center", "scale", "renorm_momentum")}
    return "BatchNormalization", kept | {"renorm": True, "renorm_clipping": clipping}


def _from_keras(config: dict) -> dict | None:
    """A ``renorm=True`` BatchNormalization; Keras checks little of its clipping: the values go as they are to
    the spec's checks."""
    if not config.get("renorm"):
        return None
    clipping = config.get("renorm_clipping") or {}
    if not isinstance(clipping, dict):
        raise Unsupported(f"renorm_clipping must be a dict of rmax, rmin and dmax, got {clipping!r:.200}")
    return {k: clipping[k] for k in ("rmax", "dmax") if clipping.get(k) is not None}


# inference is batch norm's (moving statistics): it folds and exports the same way
KIND = Kind(batch_renorm, keras=_keras, keras_class="BatchNormalization", from_keras=_from_keras,
            torch=cannot("PyTorch has no batch renormalization (batch_renorm)"), onnx=moving_affine_onnx,
            folding=Folding("affine"), splits=False)
