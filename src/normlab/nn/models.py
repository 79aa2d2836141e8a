"""Models as data: a name and a list of layer specs (``nn.spec``), built into graphs of our layers.

The study's presets are specs too (``presets.toml``); a study file adds its own under ``[models.NAME]``. A spec is
a list whose entries run one after the other; a block (``nn.residual``) becomes its branches' layers and the
layers that join them, so the built model is a graph (``Node``: each layer's spec and the layers it reads), as a
Keras functional model is. Layers are named the way Keras names them (``dense``, ``dense_1``,
``batch_normalization``, ...) and their params and state are dicts keyed by those names, so `normlab inspect`
reads like Keras.
"""

import functools
import json
import math
import re
import tomllib
from importlib import resources
from typing import NamedTuple

import jax

from normlab.data.dataset import Shape
from normlab.errors import ConfigError, did_you_mean, shown
from normlab.layer import Layer
from normlab.nn import residual, spec as specs
from normlab.nn.registry import KINDS

MAX_SIDE = 1 << 14  # an image's side, its channels or a class count: beyond any dataset normlab trains on
MAX_PARAMS = 50_000_000  # 200 MB of float32 weights per seed, before the optimizer's copies: a typo, not a study
NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")  # a model's name is a folder name (checkpoints, TensorBoard)


INPUT = -1  # a node input that is the model's input


class Node(NamedTuple):
    """One layer of the graph: its kind and options, the nodes whose outputs it takes (``INPUT``: the model's
    input), and where the spec holds it (list indices and ``"layers"``/``"shortcut"`` keys; a block's merge and
    activation end in ``"merge"`` and ``"activation"``)."""
    spec: dict
    inputs: tuple[int, ...]
    path: tuple


class Model(NamedTuple):
    name: str
    layers: tuple[tuple[str, Layer], ...]  # (layer name, layer), one per node, in an order that computes
    spec: tuple[dict, ...]  # the layer tables (blocks nested), defaults filled in: what the user wrote, checked
    data: Shape  # the images it takes and the classes it scores, from the dataset it is built for
    graph: tuple[Node, ...] = ()  # one per layer: its spec and inputs; the last one's output is the model's

    def is_sequential(self) -> bool:
        """Each layer takes the one before: a ``keras.Sequential``."""
        return all(node.inputs == (i - 1 if i else INPUT,) for i, node in enumerate(self.graph))

    def is_random(self) -> bool:
        """A layer draws in training (``Layer.random``, dropout): its training passes take a key. A model without
        one is given none, so its programs hold no key work at all."""
        return any(layer.random for _, layer in self.layers)


def _nodes(tables, source: int, graph: list, path: tuple = ()) -> int:
    """Appends the layers of ``tables`` to ``graph``, the first reading node ``source``; the index of the last."""
    for index, table in enumerate(tables):
        at = (*path, index)
        if table["kind"] == residual.KIND:
            branch = _nodes(table["layers"], source, graph, (*at, "layers"))
            shortcut = _nodes(table["shortcut"], source, graph, (*at, "shortcut"))
            graph.append(Node(residual.MERGES[table["merge"]], (shortcut, branch), (*at, "merge")))
            if table["activation"] != "linear":
                graph.append(Node({"kind": "activation", "activation": table["activation"]}, (len(graph) - 1,),
                                  (*at, "activation")))
        else:
            graph.append(Node(table, (source,), at))
        source = len(graph) - 1
    return source


def graph(spec) -> tuple[Node, ...]:
    found: list[Node] = []
    _nodes(spec, INPUT, found)
    return tuple(found)


def rewritten(spec, change) -> list[dict]:
    """``spec`` with each layer table replaced by ``change(path, table)``: a table, or None to drop it. What
    folding and ``diagnose`` use to derive models."""

    def walk(tables, path):
        out = []
        for index, table in enumerate(tables):
            at = (*path, index)
            if table["kind"] == residual.KIND:
                out.append({**table, "layers": walk(table["layers"], (*at, "layers")),
                            "shortcut": walk(table["shortcut"], (*at, "shortcut"))})
            elif (new := change(at, table)) is not None:
                out.append(new)
        return out

    return walk(spec, ())


@functools.cache
def presets() -> dict[str, list[dict]]:
    """The study's models, name -> layer tables, read from presets.toml."""
    text = resources.files("normlab.nn").joinpath("presets.toml").read_text(encoding="utf-8")
    return {name: table["layers"] for name, table in tomllib.loads(text)["models"].items()}


def check_name(name, where: str) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ConfigError(f"{where}: a model name must be a folder name of at most 100 letters, digits, '.', '_', "
                          f"'-', not starting with '.', got {shown(name)}")
    return name


def unknown(name: str, known) -> ConfigError:
    """The one wording for a model name that is neither a preset nor defined by the study."""
    return ConfigError(f"unknown preset {name!r}: {did_you_mean(name, known)}choose from {', '.join(known)}"
                       + ("" if set(known) - set(presets()) else "; a study file can define more under [models.NAME]"))


def _snake(kind: str) -> str:
    """Keras' ``to_snake_case``: LeakyReLU -> leaky_re_lu, Conv2D -> conv2d, RMSNormalization -> rms_normalization."""
    return re.sub("([a-z])([A-Z])", r"\1_\2", re.sub("(.)([A-Z][a-z]+)", r"\1_\2", kind)).lower()


def _keras_names(layers: list[Layer]) -> tuple[tuple[str, Layer], ...]:
    """The first of a kind gets the plain snake-case name, later ones ``_1``, ``_2``..."""
    seen: dict[str, int] = {}
    named = []
    for layer in layers:
        base = _snake(layer.kind)
        count = seen.get(base, 0)
        seen[base] = count + 1
        named.append((base if count == 0 else f"{base}_{count}", layer))
    return tuple(named)


def build(name: str, layers, defaults: dict | None = None, *, data: Shape | None = None) -> Model:
    """The model a spec describes for ``data``'s images and classes (None: the default dataset's), its shapes
    checked; ``defaults`` (kind -> options) as in ``spec.check_layer``.

    The model emits logits: a softmax that ends it is folded into the loss (log-softmax, see ``losses``). Its name
    is checked like a study's model names: it may come from a model file, and it names folders and is printed.
    """
    check_name(name, "model")
    data = _shape(data)
    key = json.dumps([name, layers, defaults, data], sort_keys=True, default=str)
    return _build(key)


def _shape(data) -> Shape:
    """``data`` as a ``Shape`` of ints, however it arrived (a JSON list from a file or a worker's job)."""
    if data is None:
        from normlab.data.registry import DEFAULT, shape
        return shape(DEFAULT)
    image, classes = data
    if not (isinstance(image, (list, tuple)) and 1 <= len(image) <= 3 and all(_side(n) for n in image)
            and _side(classes)):
        raise ConfigError(f"a model's input must be an image shape of 1 to 3 sizes and a class count, each an int in "
                          f"1..{MAX_SIDE:,}, got {shown(image)} and {shown(classes)}")
    return Shape(tuple(image), classes)


def with_classes(layers, classes: int):
    """``layers`` with ``units = "classes"`` (a dense layer scoring every class) as the data's class count, so one
    spec fits Fashion-MNIST's 10 classes and CIFAR-100's 100; the built model's spec holds the number."""
    if not isinstance(layers, list):
        return layers  # ``spec.check`` says what is wrong with it
    return [{**layer, "units": classes} if isinstance(layer, dict) and layer.get("kind") == "dense"
            and layer.get("units") == "classes" else layer for layer in layers]


def _side(n) -> bool:
    return type(n) is int and 1 <= n <= MAX_SIDE


@functools.lru_cache(maxsize=64)
def _build(key: str) -> Model:
    name, layers, defaults, data = json.loads(key)
    where = f"model {name}"
    data = _shape(data)
    spec = specs.check(with_classes(layers, data.classes), where, defaults)
    nodes = graph(spec)
    engine = [node.spec for node in nodes]
    if engine[-1].get("activation") == "softmax":
        engine[-1] = {**engine[-1], "activation": "linear"}
    model = Model(name, _keras_names([specs.build_layer(s) for s in engine]), spec, data, nodes)
    try:
        params, state, shapes = abstract(model)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
    if shapes[-1] != (data.classes,):
        raise ConfigError(f"{where} outputs shape {shapes[-1]}, but the loss needs {data.classes} class scores; "
                          f"end it with {{kind = \"dense\", units = \"classes\", activation = \"softmax\"}}")
    count = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves((params, state)))
    if count > MAX_PARAMS:
        raise ConfigError(f"{where} has {count:,} parameters, more than {MAX_PARAMS:,}")
    return model


def _inputs(node: Node, layer: Layer, values: list, x):
    """What a layer reads: its input's value, or a tuple of them for a layer that merges."""
    found = tuple(x if i == INPUT else values[i] for i in node.inputs)
    return found if layer.merges else found[0]


def _init(model: Model, key, shapes: list | None = None):
    keys = jax.random.split(key, len(model.layers))
    params, state, out_shapes = {}, {}, []
    for layer_key, (name, layer), node in zip(keys, model.layers, model.graph):
        try:
            params[name], state[name], shape = layer.init(layer_key, _inputs(node, layer, out_shapes,
                                                                             tuple(model.data.image)))
        except ConfigError as error:
            raise ConfigError(f"layer {name}: {error}") from None
        out_shapes.append(tuple(shape))
    if shapes is not None:
        shapes += out_shapes
    return params, state


def abstract(model: Model):
    """``(params, state, output shape per layer)`` without computing a weight: arrays as ``ShapeDtypeStruct``."""
    shapes: list[tuple] = []
    params, state = jax.eval_shape(lambda: _init(model, jax.random.key(0), shapes))
    return params, state, shapes


def init(model: Model, key):
    """Params and state of every layer; each layer draws from its own key and learns its input shape."""
    return _init(model, key)


def outputs(model: Model, params, state, x, train: bool, mask=None, until: int | None = None, key=None):
    """Every layer's output (the first ``until`` layers': their inputs are all computed) and the new state of
    those layers; ``mask`` marks real rows of a padded batch. ``key`` is the random layers' (``Layer.random``):
    each gets it folded with its index, so two dropouts draw apart; other layers never see it."""
    values, new_state = [], {}
    for index, ((name, layer), node) in enumerate(zip(model.layers[:until], model.graph[:until])):
        draw = {"key": _layer_key(name, key, index, train)} if layer.random else {}
        y, new_state[name] = layer.apply(params[name], state[name], _inputs(node, layer, values, x), train, mask,
                                         **draw)
        values.append(y)
    return values, new_state


def _layer_key(name: str, key, index: int, train: bool):
    """A random layer's key; in training there must be one: a made-up draw would be the same at every step."""
    if key is None:
        if train:
            raise ValueError(f"layer {name} draws in training: pass a key (the training step's)")
        return None
    return jax.random.fold_in(key, index)


def input_of(model: Model, index: int, values: list, x):
    """What layer ``index`` reads, from ``outputs``' values and the model's input ``x``."""
    return _inputs(model.graph[index], model.layers[index][1], values, x)


def apply(model: Model, params, state, x, train: bool, mask=None, key=None):
    """Logits and the new state; ``mask`` marks real rows of a padded batch, ``key`` as in ``outputs``."""
    values, new_state = outputs(model, params, state, x, train, mask, key=key)
    return values[-1], new_state


def check_batch(model: Model, batch_size: int) -> None:
    """A training step's shapes traced at ``batch_size`` rows, computing nothing: a layer for which that batch is
    undefined (PyTorch-convention BN at batch 1, a ghost batch size that does not divide it) raises its ConfigError
    when the study is read, not hours into a sweep. Only models with such a layer (``Kind.batch_limited``) are
    traced."""
    if not any((limited := KINDS[node.spec["kind"]].batch_limited) and limited(node.spec) for node in model.graph):
        return
    _check_batch(json.dumps([model.name, model.spec, model.data], sort_keys=True, default=str), batch_size)


@functools.lru_cache(maxsize=256)
def _check_batch(key: str, batch_size: int) -> None:
    name, spec, data = json.loads(key)
    model = build(name, spec, data=data)
    params, state, _ = abstract(model)
    x = jax.ShapeDtypeStruct((batch_size, *model.data.image), jax.numpy.float32)
    try:
        jax.eval_shape(lambda p, s, x: apply(model, p, s, x, True, key=jax.random.key(0)), params, state, x)
    except ConfigError as error:
        raise ConfigError(f"model {model.name} at batch size {batch_size}: {error}") from None


def preset(name: str, defaults: dict | None = None, *, data: Shape | None = None) -> Model:
    """One of the study's presets, for ``data``."""
    if name not in presets():
        raise unknown(name, presets())
    return build(name, presets()[name], defaults, data=data)
