r"""A normlab model as an ONNX graph of its inference forward pass, built op by op from its spec and weights.

One small translation per layer kind (``TRANSLATIONS``), as ``interop.mirror`` has per framework. The graph takes
``images`` (batch, *the data's image shape) float32: the raw pixel values (uint8 images cast to float32), which its
first nodes preprocess as training did (``interop.preprocessing``: ``Mul`` by the scale, then ``Sub`` the mean and
``Div`` by the std per channel, if normalized). It gives ``probabilities`` (batch, classes): the spec's last
activation (softmax), which normlab's engine folds into its loss. The batch is dynamic.

Tensors stay NHWC, as in normlab, so ``Flatten`` keeps its order; ``Conv`` and ``MaxPool`` (NCHW in ONNX) see
theirs through a pair of ``Transpose`` nodes, which onnxruntime's optimizer cancels between neighbours.
At inference:

* ``batch_norm``, ``batch_renorm`` and ``ghost_batch_norm`` all normalize with the moving statistics (renorm's
  other statistics and ghost batches only shape training), folded into one affine map per feature,
  :math:`y = x s + t` with :math:`s = \gamma / \sqrt{\text{moving\_variance} + \epsilon}` and
  :math:`t = \beta - \text{moving\_mean} \cdot s`, computed in float64 and stored as float32;
* ``covariate_noise`` is the identity: no node;
* ``layer_norm``, ``group_norm`` and ``rms_norm`` are spelled out in ``ReduceMean``/``Sub``/``Mul``/``Sqrt``
  over normlab's axes (``LayerNormalization`` is opset 17, ``GroupNormalization`` 18 and ``RMSNormalization`` 23).

``OPSET`` 9 is the lowest with every op used (``Erf``, for the exact gelu) and stamps the lowest IR version that
carries it (4): any onnx >= 1.4 reads the file and onnxruntime >= 0.4 runs it. Opsets up to 17 mean the same for
every op used; 18 moves ``ReduceMean``'s axes from an attribute to an input.
"""

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from normlab.atomic import write_atomically
from normlab.errors import ConfigError
from normlab.interop.preprocessing import UINT8, channels, checked
from normlab.nn.fold import inference_affine
from normlab.nn.models import Model, abstract
from normlab.nn.summary import concrete
from normlab.nn.window import pair

OPSET = 9
MAX_OPSET = 17
INPUT, OUTPUT, BATCH = "images", "probabilities", "batch"
PRODUCER = "normlab"  # the model's producer_name: what tells a file normlab wrote (``export_target``)


def _onnx():
    """The optional ``onnx`` package, or the one-line way to get it."""
    try:
        import onnx
    except ImportError:
        raise ConfigError("ONNX export needs the onnx extra: pip install 'normlab[onnx]'") from None
    return onnx


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
    """One layer as its translation sees it: its name, spec options, input shape (without the batch) and weights."""
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


def _activate(graph: Graph, site: Site, x: str, rank: int) -> str:
    return ACTIVATIONS[site.options["activation"]](graph, site.name, x, rank)


def _dense(graph: Graph, site: Site, x: str) -> str:
    y = graph.op(site.name, "MatMul", x, graph.const(f"{site.name}/kernel", site.params["kernel"]))
    if site.options["use_bias"]:
        y = graph.op(site.name, "Add", y, graph.const(f"{site.name}/bias", site.params["bias"]))
    return _activate(graph, site, y, 2)


def _pads(in_shape: tuple, window: tuple, strides: tuple, padding: str) -> list[int]:
    """ONNX's [top, left, bottom, right]: TF's "same" pads (ceil(n / s) - 1) s + k - n per axis, the odd one after
    (``nn.window``); "valid" none."""
    if padding == "valid":
        return [0, 0, 0, 0]
    totals = [max((-(-n // s) - 1) * s + k - n, 0) for n, k, s in zip(in_shape[:2], window, strides)]
    return [total // 2 for total in totals] + [total - total // 2 for total in totals]


def _channels_first(graph: Graph, scope: str, x: str, op_type: str, *inputs: str, **attributes) -> str:
    """``op_type`` (which wants NCHW) on an NHWC tensor."""
    y = graph.op(scope, op_type, graph.op(scope, "Transpose", x, perm=[0, 3, 1, 2]), *inputs, **attributes)
    return graph.op(scope, "Transpose", y, perm=[0, 2, 3, 1])


def _conv2d(graph: Graph, site: Site, x: str) -> str:
    """HWIO kernel -> ONNX's OIHW."""
    window, strides = pair(site.options["kernel_size"]), pair(site.options["strides"])
    inputs = [graph.const(f"{site.name}/kernel", np.transpose(site.params["kernel"], (3, 2, 0, 1)))]
    if site.options["use_bias"]:
        inputs.append(graph.const(f"{site.name}/bias", site.params["bias"]))
    y = _channels_first(graph, site.name, x, "Conv", *inputs, kernel_shape=list(window), strides=list(strides),
                        pads=_pads(site.in_shape, window, strides, site.options["padding"]))
    return _activate(graph, site, y, 4)


def _max_pool2d(graph: Graph, site: Site, x: str) -> str:
    """MaxPool skips its padding (it never wins the max), as normlab's -inf padding."""
    window = pair(site.options["pool_size"])
    strides = window if site.options["strides"] is None else pair(site.options["strides"])
    return _channels_first(graph, site.name, x, "MaxPool", kernel_shape=list(window), strides=list(strides),
                           pads=_pads(site.in_shape, window, strides, site.options["padding"]))


def _moving_affine(graph: Graph, site: Site, x: str) -> str:
    """Batch norm at inference, with whichever of gamma and beta exist."""
    scale, shift = inference_affine(site.options["epsilon"], site.params, site.state)
    y = graph.op(site.name, "Mul", x, graph.const(f"{site.name}/scale", scale))
    return graph.op(site.name, "Add", y, graph.const(f"{site.name}/shift", shift))


def _normalize(graph: Graph, site: Site, x: str, axes: list[int], centre: bool = True) -> str:
    """``norms.batch_norm.normalize`` with statistics over ``axes``: (x - mean) / sqrt(variance + epsilon), or
    x / sqrt(mean square + epsilon) without the centring (rms norm)."""
    scope = site.name
    if centre:
        x = graph.op(scope, "Sub", x, graph.op(scope, "ReduceMean", x, axes=axes, keepdims=1))
    variance = graph.op(scope, "ReduceMean", graph.op(scope, "Mul", x, x), axes=axes, keepdims=1)
    std = graph.op(scope, "Sqrt", graph.op(scope, "Add", variance, graph.const(f"{scope}/epsilon",
                                                                               site.options["epsilon"])))
    return graph.op(scope, "Mul", x, graph.op(scope, "Reciprocal", std))


def _affine(graph: Graph, site: Site, y: str, scale: str = "gamma", offset: str | None = "beta") -> str:
    """The learned per-feature scale and offset, those the layer has."""
    if scale in site.params:
        y = graph.op(site.name, "Mul", y, graph.const(f"{site.name}/{scale}", site.params[scale]))
    if offset in site.params:
        y = graph.op(site.name, "Add", y, graph.const(f"{site.name}/{offset}", site.params[offset]))
    return y


def _layer_norm(graph: Graph, site: Site, x: str) -> str:
    """Over the last axis alone (each pixel's channels, for an image)."""
    return _affine(graph, site, _normalize(graph, site, x, [len(site.in_shape)]))


def _rms_norm(graph: Graph, site: Site, x: str) -> str:
    return _affine(graph, site, _normalize(graph, site, x, [len(site.in_shape)], centre=False), "scale", None)


def _group_norm(graph: Graph, site: Site, x: str) -> str:
    """Channels split into ``groups`` contiguous groups: statistics per example and group over the group's
    channels and an image's height and width, as normlab reshapes (..., C) to (..., G, C / G)."""
    *spatial, channels = site.in_shape
    groups = site.options["groups"]
    grouped = graph.op(site.name, "Reshape", x, graph.ints(f"{site.name}/grouped_shape",
                                                           [0, *spatial, groups, channels // groups]))
    axes = [*range(1, len(spatial) + 1), len(spatial) + 2]
    y = graph.op(site.name, "Reshape", _normalize(graph, site, grouped, axes),
                 graph.ints(f"{site.name}/shape", [0, *site.in_shape]))
    return _affine(graph, site, y)


TRANSLATIONS = {  # kind -> (graph, site, input) -> output
    "flatten": lambda graph, site, x: graph.op(site.name, "Flatten", x, axis=1),
    "reshape": lambda graph, site, x: graph.op(site.name, "Reshape", x, graph.ints(
        f"{site.name}/shape", [0, *site.options["target_shape"]])),
    "dense": _dense,
    "conv2d": _conv2d,
    "max_pool2d": _max_pool2d,
    "activation": lambda graph, site, x: _activate(graph, site, x, len(site.in_shape) + 1),
    "leaky_relu": lambda graph, site, x: graph.op(site.name, "LeakyRelu", x, alpha=site.options["negative_slope"]),
    "batch_norm": _moving_affine,
    "batch_renorm": _moving_affine,
    "ghost_batch_norm": _moving_affine,
    "covariate_noise": lambda graph, site, x: x,
    "layer_norm": _layer_norm,
    "group_norm": _group_norm,
    "rms_norm": _rms_norm,
}


def _check_opset(opset) -> int:
    if type(opset) is not int or not OPSET <= opset <= MAX_OPSET:
        raise ConfigError(f"ONNX export: opset must be an int in {OPSET}..{MAX_OPSET} (every op used means the same "
                          f"there), got {opset!r}")
    return opset


def _preprocess(graph: Graph, preprocessing: dict, x: str) -> str:
    """``Div`` by the std, not ``Mul`` by its inverse: (x s - m) / d rounded as normlab's step rounds it."""
    x = graph.op("preprocessing", "Mul", x, graph.const("preprocessing/scale", preprocessing["scale"]))
    if preprocessing["mean"] is None:
        return x
    x = graph.op("preprocessing", "Sub", x, graph.const("preprocessing/mean", preprocessing["mean"]))
    return graph.op("preprocessing", "Div", x, graph.const("preprocessing/std", preprocessing["std"]))


def to_onnx(model: Model, params, state, opset: int = OPSET, preprocessing: dict = UINT8):
    """The model's inference pass as an ``onnx.ModelProto``: ``images`` (batch, *its data's image shape), raw
    pixels that ``preprocessing`` (``interop.preprocessing``) turns into the model's input, in; ``probabilities``
    (batch, classes) out; the weights as float32 initializers. A kind without a translation is a ConfigError."""
    onnx = _onnx()
    opset = _check_opset(opset)
    preprocessing = checked(preprocessing, "ONNX export", channels(model.data.image))
    graph = Graph(onnx)
    _, _, shapes = abstract(model)
    x, in_shape = _preprocess(graph, preprocessing, INPUT), model.data.image
    for (name, _), spec, out_shape in zip(model.layers, model.spec, shapes):
        translate = TRANSLATIONS.get(spec["kind"])
        if translate is None:
            raise ConfigError(f"ONNX export: layer {name} ({spec['kind']}) has no ONNX translation; "
                              f"supported kinds: {', '.join(TRANSLATIONS)}")
        options = concrete(spec, out_shape)
        x = translate(graph, Site(name, options, tuple(in_shape), params[name], state[name]), x)
        in_shape = out_shape
    for node in graph.nodes:  # the last layer's output, under its public name
        node.output[:] = [OUTPUT if name == x else name for name in node.output]
    float32 = onnx.TensorProto.FLOAT
    proto = onnx.helper.make_graph(
        graph.nodes, model.name, [onnx.helper.make_tensor_value_info(INPUT, float32, [BATCH, *model.data.image])],
        [onnx.helper.make_tensor_value_info(OUTPUT, float32, [BATCH, model.data.classes])], graph.initializers)
    opsets = [onnx.helper.make_opsetid("", opset)]
    return onnx.helper.make_model(proto, opset_imports=opsets, producer_name=PRODUCER,
                                  ir_version=onnx.helper.find_min_ir_version_for(opsets))


def write_onnx(model: Model, params, state, path, opset: int = OPSET, preprocessing: dict = UINT8) -> None:
    """``to_onnx`` written to ``path`` all at once: a crash leaves the old file or the new one, never a torn one."""
    write_atomically(Path(path), to_onnx(model, params, state, opset, preprocessing).SerializeToString())
