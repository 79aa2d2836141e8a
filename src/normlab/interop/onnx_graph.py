r"""The ONNX graph under construction and the node patterns the layer kinds' translations share.

Each kind's ``Kind.onnx(graph, site, x) -> output`` adds its nodes; ``interop.onnx_export`` walks the model.
Tensors stay NHWC, as in normlab, so ``Flatten`` keeps its order; ``Conv`` and the pools (NCHW in ONNX) see
theirs through a pair of ``Transpose`` nodes, which onnxruntime's optimizer cancels between neighbours.
Imports numpy only: the ``onnx`` module is the graph's.
"""

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from normlab.interop.frameworks import same_padding


@dataclass
class Graph:
    """The nodes and weights so far; each layer's tensors and weights are named under its Keras name."""
    onnx: object
    nodes: list = field(default_factory=list)
    initializers: list = field(default_factory=list)

    def const(self, name: str, value) -> str:
        self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def ints(self, name: str, values) -> str:
        """An int64 constant: a ``Reshape``'s target shape."""
        self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(values, np.int64), name))
        return name

    def op(self, scope: str, op_type: str, *inputs: str, **attributes) -> str:
        output = f"{scope}/{op_type}_{len(self.nodes)}"
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), [output], output, **attributes))
        return output


@dataclass(frozen=True)
class Site:
    """One layer as its translation sees it: its name, spec options, input shape (without the batch; a tuple of
    them for a layer that merges) and weights."""
    name: str
    options: dict
    in_shape: tuple
    params: dict
    state: dict


def _unary(op_type: str, **attributes) -> Callable:
    return lambda graph, scope, x, rank: graph.op(scope, op_type, x, **attributes)


def _swish(graph: Graph, scope: str, x: str, rank: int) -> str:
    """jax.nn.silu: x * sigmoid(x)."""
    return graph.op(scope, "Mul", x, graph.op(scope, "Sigmoid", x))


def _gelu(graph: Graph, scope: str, x: str, rank: int) -> str:
    r"""The exact gelu normlab uses, :math:`\tfrac x2 \operatorname{erfc}(-x/\sqrt2) = \tfrac x2 (1 + \operatorname{erf}
    (x/\sqrt2))`; ONNX has no Erfc, and 1 + erf differs from it by float32 rounding of 1 (~1e-7 absolute)."""
    erf = graph.op(scope, "Erf", graph.op(scope, "Mul", x, graph.const(f"{scope}/sqrt_half", math.sqrt(0.5))))
    one_plus = graph.op(scope, "Add", erf, graph.const(f"{scope}/one", 1.0))
    return graph.op(scope, "Mul", graph.op(scope, "Mul", x, graph.const(f"{scope}/half", 0.5)), one_plus)


def _softmax(graph: Graph, scope: str, x: str, rank: int) -> str:
    """Over the last axis: before opset 13 Softmax flattens the axes before ``axis`` into rows, the same thing."""
    return graph.op(scope, "Softmax", x, axis=rank - 1)


ACTIVATIONS = {  # normlab.nn.activations' functions: (graph, scope, x, rank) -> output
    "linear": lambda graph, scope, x, rank: x,
    "relu": _unary("Relu"),
    "leaky_relu": _unary("LeakyRelu", alpha=0.2),  # the function's 0.2, not the layer's 0.3
    "elu": _unary("Elu", alpha=1.0),
    "selu": _unary("Selu", alpha=1.6732632423543772848170429916717, gamma=1.0507009873554804934193349852946),
    "gelu": _gelu,
    "sigmoid": _unary("Sigmoid"),
    "tanh": _unary("Tanh"),
    "swish": _swish,
    "softmax": _softmax,
}


def activate(graph: Graph, site: Site, x: str, rank: int) -> str:
    """The layer's ``activation`` option on ``x`` of ``rank`` axes (the batch's included)."""
    return ACTIVATIONS[site.options["activation"]](graph, site.name, x, rank)


def pads(in_shape: tuple, window: tuple, strides: tuple, padding: str) -> list[int]:
    """ONNX's [top, left, bottom, right]: TF's "same" padding, the odd one after; "valid" none."""
    if padding == "valid":
        return [0, 0, 0, 0]
    totals = same_padding(in_shape[:2], window, strides)
    return [total // 2 for total in totals] + [total - total // 2 for total in totals]


def channels_first(graph: Graph, scope: str, x: str, op_type: str, *inputs: str, **attributes) -> str:
    """``op_type`` (which wants NCHW) on an NHWC tensor."""
    y = graph.op(scope, op_type, graph.op(scope, "Transpose", x, perm=[0, 3, 1, 2]), *inputs, **attributes)
    return graph.op(scope, "Transpose", y, perm=[0, 2, 3, 1])


def normalized(graph: Graph, site: Site, x: str, axes: list[int], centre: bool = True) -> str:
    """``norms.batch_norm.normalize`` with statistics over ``axes``: (x - mean) / sqrt(variance + epsilon), or
    x / sqrt(mean square + epsilon) without the centring (rms norm)."""
    scope = site.name
    if centre:
        x = graph.op(scope, "Sub", x, graph.op(scope, "ReduceMean", x, axes=axes, keepdims=1))
    variance = graph.op(scope, "ReduceMean", graph.op(scope, "Mul", x, x), axes=axes, keepdims=1)
    std = graph.op(scope, "Sqrt", graph.op(scope, "Add", variance, graph.const(f"{scope}/epsilon",
                                                                               site.options["epsilon"])))
    return graph.op(scope, "Mul", x, graph.op(scope, "Reciprocal", std))


def affine(graph: Graph, site: Site, y: str, scale: str = "gamma", offset: str | None = "beta") -> str:
    """The learned per-feature scale and offset, those the layer has."""
    if scale in site.params:
        y = graph.op(site.name, "Mul", y, graph.const(f"{site.name}/{scale}", site.params[scale]))
    if offset in site.params:
        y = graph.op(site.name, "Add", y, graph.const(f"{site.name}/{offset}", site.params[offset]))
    return y
