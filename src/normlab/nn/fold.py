r"""Batch norm folded into its linear neighbours for inference: the same predictions with fewer layers.

At inference a batch norm is a fixed affine map per feature, with the moving statistics :math:`\mu, \sigma^2`:

.. math::
    y = s \odot x + t, \qquad s = \frac{\gamma}{\sqrt{\sigma^2 + \epsilon}}, \qquad t = \beta - \mu \odot s

(:math:`\gamma = 1` without ``scale``, :math:`\beta = 0` without ``center``), so a Dense or Conv2D next to it
can absorb it:

1. after a linear Dense/Conv2D (its output channels): :math:`W' = W \operatorname{diag}(s)`,
   :math:`b' = (b - \mu) s + \beta`; preferred where it applies;
2. before a Dense, through flatten/reshape layers (which only reorder): :math:`W' = \operatorname{diag}(s) W`,
   :math:`b' = t W + b`, with ``s`` and ``t`` repeated in the flattened feature order;
3. before a Conv2D with ``"valid"`` padding, per input channel the same way. With ``"same"`` the zero padding
   would become :math:`t`, so such a BN stays.

Any other BN stays as it is: it already uses the moving statistics, so the folded model is still exact.
``batch_renorm`` and ``ghost_batch_norm`` infer with this same affine map (their inference is batch norm's
``normalize``), so they fold too. The arithmetic is float64, cast back once: folding adds one rounding.
"""

import jax.numpy as jnp
import numpy as np

from normlab.nn import models
from normlab.nn.models import Model

FOLDABLE = ("batch_norm", "batch_renorm", "ghost_batch_norm")
REORDERS = ("flatten", "reshape")  # row-major reshapes: feature f of a BN over C channels is channel f % C
LINEAR = ("dense", "conv2d")


def _absorbs_output(spec: dict) -> bool:
    return spec["kind"] in LINEAR and spec["activation"] == "linear"


def _absorbs_input(spec: dict, in_channels: int, bn_channels: int) -> bool:
    """A Dense takes any flattened BN; a Conv2D one whose channels repeat along its own (and no zero padding)."""
    return spec["kind"] == "dense" or (spec["kind"] == "conv2d" and spec["padding"] == "valid"
                                       and in_channels % bn_channels == 0)


def _plan(model: Model) -> dict[int, tuple[int, bool]]:
    """BN index -> (index of the layer that absorbs it, whether it absorbs the BN's output: rule 1).

    A BN right after one already folded into a linear layer folds into that layer too (the two compose)."""
    _, _, shapes = models.abstract(model)
    spec, plan = model.spec, {}
    for i, layer in enumerate(spec):
        if layer["kind"] not in FOLDABLE:
            continue
        before = plan.get(i - 1, (i - 1,))[0]
        if i > 0 and _absorbs_output(spec[before]):
            plan[i] = (before, True)
            continue
        after = i + 1
        while after < len(spec) and spec[after]["kind"] in REORDERS:
            after += 1
        if after < len(spec) and _absorbs_input(spec[after], shapes[after - 1][-1], shapes[i][-1]):
            plan[i] = (after, False)
    return plan


def _folded(model: Model, plan: dict) -> Model:
    absorbers = {target for target, _ in plan.values()}
    return models.build(model.name, [{**layer, "use_bias": True} if i in absorbers else layer
                                     for i, layer in enumerate(model.spec) if i not in plan], data=model.data)


def folded(model: Model) -> Model:
    """The model ``fold`` produces, from the spec alone: folded BNs gone, their absorbers with a bias."""
    return _folded(model, _plan(model))


def inference_affine(epsilon: float, params: dict, state: dict) -> tuple[np.ndarray, np.ndarray]:
    """A BN's inference map ``x * s + t`` in float64 (the ONNX export writes it as one Mul and one Add)."""
    mean, variance = (np.asarray(state[k], np.float64) for k in ("moving_mean", "moving_variance"))
    gamma = np.asarray(params.get("gamma", 1.0), np.float64)
    beta = np.asarray(params.get("beta", 0.0), np.float64)
    scale = gamma / np.sqrt(variance + epsilon)
    return scale, beta - mean * scale


def _into_output(kernel, bias, scale, shift):
    """Rule 1: ``(x W + b) s + t``; the kernel's last axis is its outputs (Dense and HWIO conv alike)."""
    return kernel * scale, bias * scale + shift


def _into_input(kernel, bias, scale, shift):
    """Rules 2 and 3: ``(x s + t) W + b``; the kernel's second-to-last axis is its inputs. Over a "valid" conv's
    window every input is real, so ``t`` adds its sum through the window's weights to each output."""
    repeats = kernel.shape[-2] // scale.size
    scale, shift = np.tile(scale, repeats)[:, None], np.tile(shift, repeats)[:, None]
    return kernel * scale, bias + (kernel * shift).reshape(-1, kernel.shape[-1]).sum(axis=0)


def fold(model: Model, params: dict, state: dict) -> tuple[Model, dict, dict]:
    """The folded model and its params and state, keyed by its own layer names; at inference it computes what
    ``models.apply(model, params, state, x, False)`` does, up to float32 rounding."""
    plan = _plan(model)
    names = [name for name, _ in model.layers]
    weights = {}  # absorber index -> (kernel, bias) in float64, every fold applied in layer order
    for i, (target, into_output) in sorted(plan.items()):
        if target not in weights:
            layer = params[names[target]]
            kernel = np.asarray(layer["kernel"], np.float64)
            weights[target] = kernel, np.asarray(layer.get("bias", np.zeros(kernel.shape[-1])), np.float64)
        scale, shift = inference_affine(model.spec[i]["epsilon"], params[names[i]], state[names[i]])
        weights[target] = (_into_output if into_output else _into_input)(*weights[target], scale, shift)
    result = _folded(model, plan)
    kept = [i for i in range(len(names)) if i not in plan]
    new_params, new_state = {}, {}
    for i, (name, _) in zip(kept, result.layers):
        new_state[name] = state[names[i]]
        if i in weights:
            dtype = params[names[i]]["kernel"].dtype
            new_params[name] = {"kernel": jnp.asarray(weights[i][0].astype(dtype)),
                                "bias": jnp.asarray(weights[i][1].astype(dtype))}
        else:
            new_params[name] = params[names[i]]
    return result, new_params, new_state
