r"""A normlab model as an ONNX graph of its inference forward pass, built op by op from its spec and weights.

One small translation per layer kind (its record's ``Kind.onnx``, beside its builder; ``interop.onnx_graph`` holds
the graph and the patterns they share), as for the Keras and PyTorch mirrors. The graph takes
``images`` (batch, *the data's image shape) float32: the raw pixel values (uint8 images cast to float32), which its
first nodes preprocess as training did (``interop.preprocessing``: ``Mul`` by the scale, then ``Sub`` the mean and
``Div`` by the std per channel, if normalized). It gives ``probabilities`` (batch, classes): the spec's last
activation (softmax), which normlab's engine folds into its loss. The batch is dynamic.

Tensors stay NHWC, as in normlab, so ``Flatten`` keeps its order; ``Conv`` and ``MaxPool`` (NCHW in ONNX) see
theirs through a pair of ``Transpose`` nodes, which onnxruntime's optimizer cancels between neighbours. A residual
block's layers read the outputs they read in normlab (``nn.models.Node``), joined by ``Add``. At inference:

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

from pathlib import Path

from normlab.atomic import write_atomically
from normlab.errors import ConfigError
from normlab.interop.frameworks import Unsupported
from normlab.interop.onnx_graph import Graph, Site
from normlab.interop.preprocessing import UINT8, channels, checked
from normlab.nn.models import INPUT as MODEL_INPUT, Model, abstract
from normlab.nn.registry import KINDS
from normlab.nn.summary import concrete

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
    first = _preprocess(graph, preprocessing, INPUT)
    values = []  # each layer's output tensor

    def read(source: int) -> tuple[str, tuple]:
        return (first, tuple(model.data.image)) if source == MODEL_INPUT else (values[source], shapes[source])

    for (name, layer), node, out_shape in zip(model.layers, model.graph, shapes):
        translate = KINDS[node.spec["kind"]].onnx
        if translate is None:
            raise ConfigError(f"ONNX export: layer {name} ({node.spec['kind']}) has no ONNX translation; "
                              f"supported kinds: {', '.join(k for k, kind in KINDS.items() if kind.onnx)}")
        tensors, in_shapes = zip(*map(read, node.inputs))
        x, in_shape = (tensors, in_shapes) if layer.merges else (tensors[0], in_shapes[0])
        site = Site(name, concrete(node.spec, out_shape), in_shape, params[name], state[name])
        try:
            values.append(translate(graph, site, x))
        except Unsupported as error:
            raise ConfigError(f"ONNX export: layer {name}: {error}") from None
    x = values[-1]
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
