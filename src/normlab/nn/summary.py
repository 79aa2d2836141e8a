"""What Keras' ``model.summary()`` shows: per layer its output shape and parameter count, then the totals.

Trainable = params (what the optimizer updates); non-trainable = state (BN moving statistics). A PRNG key in
the state (``covariate_noise``) is integer data, not a weight: Keras does not count a seed generator's state either.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from normlab.nn.models import INPUT, Model, abstract
from normlab.nn.registry import KINDS


INPUT_LAYER = "input_layer"  # what Keras names a functional model's input


class LayerRow(NamedTuple):
    name: str
    kind: str
    output_shape: tuple
    params: int
    inputs: tuple[str, ...] = ()  # the layers it reads: Keras' "Connected to"


class Variable(NamedTuple):
    path: str
    shape: tuple
    trainable: bool


def _size(tree) -> int:
    """The number of weights: floating-point entries only."""
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(tree)
                   if jnp.issubdtype(leaf.dtype, jnp.floating)))


def layer_rows(model: Model) -> list[LayerRow]:
    """One row per layer; a graph's (not a Sequential's) start with its input, as Keras' functional summary."""
    params, state, shapes = abstract(model)
    names = [name for name, _ in model.layers]
    rows = [LayerRow(name, layer.kind, (None, *shape), _size(params[name]) + _size(state[name]),
                     tuple(INPUT_LAYER if i == INPUT else names[i] for i in node.inputs))
            for (name, layer), shape, node in zip(model.layers, shapes, model.graph)]
    return rows if model.is_sequential() else [LayerRow(INPUT_LAYER, "InputLayer", (None, *model.data.image), 0),
                                               *rows]


def param_counts(model: Model) -> dict[str, int]:
    params, state, _ = abstract(model)
    trainable, non_trainable = _size(params), _size(state)
    return {"total": trainable + non_trainable, "trainable": trainable, "non_trainable": non_trainable}


KERAS_ORDER = ("kernel", "bias", "gamma", "beta", "scale", "moving_mean", "moving_variance", "moving_stddev",
               "renorm_mean", "renorm_stddev")


def variables(model: Model) -> list[Variable]:
    """Every variable, layer by layer in the graph's order, each layer's in Keras' order (kernel, bias, gamma, beta,
    moving statistics): a Sequential's ``model.weights``; a functional model's list its layers in Keras' own walk of
    the graph (``interop.weights.by_layer``)."""
    params, state, _ = abstract(model)
    found = []
    for name, _ in model.layers:
        named = {k: (v, True) for k, v in params[name].items()} | {k: (v, False) for k, v in state[name].items()}
        found += [Variable(f"{name}/{k}", named[k][0].shape, named[k][1]) for k in KERAS_ORDER if k in named]
    return found


def concrete(spec: dict, out_shape) -> dict:
    """A layer's options as another framework takes them (``Kind.concrete``: a reshape's 0s and -1 resolved)."""
    options = {k: v for k, v in spec.items() if k != "kind"}
    resolve = KINDS[spec["kind"]].concrete
    return resolve(options, out_shape) if resolve else options


def describe(model: Model) -> dict:
    """The model as plain JSON for another framework: per layer (graph node) its Keras name, normlab kind, Keras
    class, options (Keras' names and values, defaults filled in), inputs (earlier layers' indices, -1 the model's
    input) and shapes (a merge's in_shape: one per input). What the bench's Keras and PyTorch mirrors are generated
    from; the kind tells apart layers one Keras class covers (``batch_norm``, ``batch_renorm``)."""
    _, _, shapes = abstract(model)
    image = list(model.data.image)

    def shape_of(source: int) -> list:
        return image if source == INPUT else list(shapes[source])

    return {"name": model.name, "input_shape": image, "classes": model.data.classes,
            "sequential": model.is_sequential(), "layers": [
                {"name": name, "kind": node.spec["kind"], "class": layer.kind,
                 "options": concrete(node.spec, out_shape), "inputs": list(node.inputs),
                 "in_shape": [shape_of(i) for i in node.inputs] if layer.merges else shape_of(node.inputs[0]),
                 "out_shape": list(out_shape)}
                for (name, layer), node, out_shape in zip(model.layers, model.graph, shapes)]}
