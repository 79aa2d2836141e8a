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
Every kind whose record says ``Folding("affine")`` (``batch_renorm`` and ``ghost_batch_norm`` infer with batch
norm's map) folds the same way, into a ``"linear"`` kind, through ``"reorder"`` ones. In a graph (a residual block)
only along a chain: a layer whose output also feeds a shortcut absorbs nothing. The arithmetic is float64, cast
back once: folding adds one rounding.
"""

import jax.numpy as jnp
import numpy as np

from normlab.nn import models
from normlab.nn.models import INPUT, Model
from normlab.nn.registry import KINDS
from normlab.norms.batch_norm import inference_affine


def _role(node) -> str | None:
    folding = KINDS[node.spec["kind"]].folding
    return folding and folding.role


def _consumers(model: Model) -> list[list[int]]:
    found = [[] for _ in model.graph]
    for index, node in enumerate(model.graph):
        for source in node.inputs:
            if source != INPUT:
                found[source].append(index)
    return found


def _plan(model: Model) -> dict[int, tuple[int, bool]]:
    """Affine node -> (the node that absorbs it, whether it absorbs the affine map's output: rule 1).

    Only along a chain: the absorber's output must reach nothing but the affine map (rule 1), the affine map's
    nothing but the absorber, through reorders alone (rules 2 and 3). An affine map right after one already folded
    into a linear layer folds into that layer too (the two compose)."""
    _, _, shapes = models.abstract(model)
    graph, consumers, plan = model.graph, _consumers(model), {}
    for i, node in enumerate(graph):
        if _role(node) != "affine":
            continue
        before = node.inputs[0]
        if before != INPUT and consumers[before] == [i]:
            absorber = plan.get(before, (before,))[0]
            if _role(graph[absorber]) == "linear" and graph[absorber].spec["activation"] == "linear":
                plan[i] = (absorber, True)
                continue
        after = i
        while len(consumers[after]) == 1 and _role(graph[consumers[after][0]]) == "reorder":
            after = consumers[after][0]
        if len(consumers[after]) != 1:
            continue
        after = consumers[after][0]
        folding = KINDS[graph[after].spec["kind"]].folding
        if folding and folding.role == "linear" and folding.takes_input(
                graph[after].spec, shapes[graph[after].inputs[0]][-1], shapes[i][-1]):
            plan[i] = (after, False)
    return plan


def _folded(model: Model, plan: dict) -> Model:
    removed = {model.graph[i].path for i in plan}
    absorbers = {model.graph[target].path for target, _ in plan.values()}
    spec = models.rewritten(model.spec, lambda path, table: None if path in removed else
                            {**table, "use_bias": True} if path in absorbers else table)
    return models.build(model.name, spec, data=model.data)


def folded(model: Model) -> Model:
    """The model ``fold`` produces, from the spec alone: folded BNs gone, their absorbers with a bias."""
    return _folded(model, _plan(model))


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
        scale, shift = inference_affine(model.graph[i].spec["epsilon"], params[names[i]], state[names[i]])
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
