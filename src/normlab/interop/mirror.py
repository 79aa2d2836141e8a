"""The one mirror generator: a normlab model (as ``nn.summary.describe`` writes it) rebuilt in Keras or PyTorch.

Each layer kind's record (``layer.Kind``, beside its builder) holds its translations: Keras needs little, as most
options already carry Keras' names (a layer is ``keras.layers.<class>(**options)`` unless the record's ``keras``
says otherwise); PyTorch gets one small translation per kind, with Keras' initializers and BN conventions
(``interop.frameworks``). A chain of layers becomes ``keras.Sequential``/``torch.nn.Sequential``; a graph (residual
blocks) a Keras functional model and a PyTorch module that walks the same nodes. A kind a framework lacks raises
``Unsupported`` saying why, so that framework's peer skips the model. Imports neither JAX nor a framework: each
bench child passes in the one it runs.
"""

from normlab.interop.frameworks import Unsupported
from normlab.nn.registry import KINDS

__all__ = ["Unsupported", "keras_layers", "keras_model", "torch_model"]


def keras_layers(description: dict) -> list[tuple[str, dict]]:
    """Each layer's Keras class and keyword arguments."""
    found = []
    for layer in description["layers"]:
        translate = KINDS[layer["kind"]].keras
        found.append(translate(layer["options"]) if translate else (layer["class"], layer["options"]))
    return found


def keras_model(keras, description: dict, head: tuple = ()):
    """A ``keras.Sequential`` of the same layers (a functional model of the same graph), after the Keras layers
    ``head`` (an export's preprocessing); each layer under its normlab (Keras) name. It ends in the softmax
    normlab folds into its loss."""
    layers = keras_layers(description)
    if missing := [name for name, _ in layers if not hasattr(keras.layers, name)]:
        raise Unsupported(f"Keras has no layer class {missing[0]} (a normlab layer)")
    built = [getattr(keras.layers, name)(**options, name=layer["name"])
             for (name, options), layer in zip(layers, description["layers"])]
    inputs = keras.Input(tuple(description["input_shape"]))
    if description.get("sequential", True):
        return keras.Sequential([inputs, *head, *built], name=description["name"])
    x = inputs
    for layer in head:
        x = layer(x)
    values = []
    for layer, node in zip(built, description["layers"]):
        sources = [x if i < 0 else values[i] for i in node["inputs"]]
        values.append(layer(sources if len(sources) > 1 else sources[0]))
    return keras.Model(inputs, values[-1], name=description["name"])


def torch_model(nn, description: dict):
    """A ``torch.nn.Sequential`` (a module that walks the same graph) that emits logits (a final softmax is left
    to ``F.cross_entropy``), initialised like Keras. ``BatchNorm1d(momentum=1 - m)`` is Keras' ``momentum=m``:
    PyTorch weights the *new* statistic."""
    layers = description["layers"]
    stages = []
    for index, layer in enumerate(layers):
        build = KINDS[layer["kind"]].torch
        if build is None:
            raise Unsupported(f"no PyTorch mirror for {layer['kind']} (the Keras class {layer['class']})")
        stages.append(build(nn, layer["options"], layer["in_shape"], index == len(layers) - 1))
    if description.get("sequential", True):
        return nn.Sequential(*(module for modules in stages for module in modules))
    return _graph_module(nn)([nn.Sequential(*modules) for modules in stages], [layer["inputs"] for layer in layers])


def _graph_module(nn):
    class Graph(nn.Module):
        """Layers run in order, each on the outputs of those it reads (-1: the input), as ``nn.models.apply``."""

        def __init__(self, stages, inputs):
            super().__init__()
            self.stages, self.inputs = nn.ModuleList(stages), inputs

        def forward(self, x):
            values = []
            for stage, sources in zip(self.stages, self.inputs):
                found = [x if i < 0 else values[i] for i in sources]
                values.append(stage[0](*found) if len(found) > 1 else stage(found[0]))
            return values[-1]

    return Graph
