"""A Keras model's graph read back as normlab's: a chain whose links are layers and residual blocks.

normlab's models (``nn.models``) are chains of layers and blocks (``nn.residual``): two paths from one tensor, each
a chain itself (the shortcut may be empty), joined by an ``Add`` and optionally an activation. A Keras model,
Sequential or functional, is walked from its output back to its input: a layer of one input is a link; an ``Add``
of two tensors is a block, whose paths are walked back until they meet (their fork). The empty or the shorter
path is the shortcut (on a tie, the ``Add``'s first input, as ``keras.applications``' ``Add()([shortcut, x])``);
the sum is the same either way. Every graph the walk accepts is exactly such a chain, once each layer is found
once: a layer called twice shares its weights, which normlab's layers do not.
"""

from collections import Counter
from typing import Any, NamedTuple

from normlab.errors import ConfigError, shown
from normlab.nn.activations import FUNCTIONS


class Block(NamedTuple):
    """A residual block as Keras computes it: its branch's and shortcut's links, its Add and the Activation after."""
    layers: list
    shortcut: list
    add: Any
    activation: Any = None


def _count(links: list) -> int:
    return sum(_count([*link.layers, *link.shortcut]) + 1 if isinstance(link, Block) else 1 for link in links)


def _activation(layer) -> str | None:
    """A Keras ``Activation``'s function other than linear, or None."""
    name = layer.get_config().get("activation") if type(layer).__name__ == "Activation" else None
    return None if name == "linear" else name


def _after_add(before, link) -> bool:
    """An activation right after a block's Add: the block's own (``nn.residual``'s ``activation``)."""
    return isinstance(before, Block) and before.activation is None and _activation(link) in FUNCTIONS


def _named(layer) -> str:
    return f"layer {shown(layer.name)} ({type(layer).__name__})"


class _Walk:
    """The links of one model. Each tensor's link is found once: the search for a block's fork walks back over
    every block before it."""

    def __init__(self, keras, model):
        self.keras, self.input, self.back = keras, model.inputs[0], {}

    def chain(self, tensor, start) -> list:
        """The links from tensor ``start`` to ``tensor``, in the order they compute."""
        backwards = []
        while tensor is not start:
            link, tensor = self.step(tensor)
            backwards.append(link)
        links = []
        for link in reversed(backwards):
            if _after_add(links[-1] if links else None, link):
                links[-1] = links[-1]._replace(activation=link)
            else:
                links.append(link)
        return links

    def ancestors(self, tensor) -> list:
        found = [tensor]
        while tensor is not self.input:
            tensor = self.step(tensor)[1]
            found.append(tensor)
        return found

    def step(self, tensor) -> tuple[Any, Any]:
        """The link that computes ``tensor`` and the tensor it reads."""
        if id(tensor) not in self.back:
            self.back[id(tensor)] = tensor, self._step(tensor)  # the tensor kept alive: its id stays its own
        return self.back[id(tensor)][1]

    def _step(self, tensor):
        history = tensor._keras_history
        layer = history.operation
        inputs = list(layer._inbound_nodes[history.node_index].input_tensors)
        if not isinstance(layer, self.keras.layers.Layer):  # ``x + y`` on Keras tensors: an operation
            raise ConfigError(f"operation {shown(layer.name)} ({type(layer).__name__}) is not a Keras layer; "
                              f"normlab reads models built of layers (keras.layers.Add for a sum)")
        if type(layer).__name__ == "Add":
            if len(inputs) != 2:
                raise ConfigError(f"{_named(layer)} adds {len(inputs)} tensors; a residual block adds two paths")
            return self._block(layer, *inputs)
        if len(inputs) != 1:
            raise ConfigError(f"{_named(layer)} takes {len(inputs)} inputs; normlab joins two paths only by an Add "
                              f"(a residual block)")
        return layer, inputs[0]

    def _block(self, add, first, second):
        later = self.ancestors(second)
        fork = next(tensor for tensor in self.ancestors(first) if any(tensor is t for t in later))
        shortcut, branch = sorted((self.chain(first, fork), self.chain(second, fork)), key=_count)
        if not branch:
            raise ConfigError(f"{_named(add)} adds a tensor to itself; a residual block adds a branch of layers")
        return Block(branch, shortcut, add), fork


def links(keras, model) -> list:
    """The model's links from its input to its output: Keras layers and ``Block``s."""
    found = _Walk(keras, model).chain(model.outputs[0], model.inputs[0])
    calls = Counter(map(id, layers(found)))
    if shared := next((layer for layer in layers(found) if calls[id(layer)] > 1), None):
        raise ConfigError(f"{_named(shared)} is called {calls[id(shared)]} times; a normlab layer computes once, with "
                          f"weights of its own (no shared layers)")
    return found


def layers(links: list) -> list:
    """The Keras layers of ``links`` in the order of ``nn.models``' graph: a block's branch, its shortcut, its Add,
    its activation."""
    found = []
    for link in links:
        if isinstance(link, Block):
            found += [*layers(link.layers), *layers(link.shortcut), link.add]
            found += [link.activation] if link.activation is not None else []
        else:
            found.append(link)
    return found


def spec(links: list, table) -> list[dict]:
    """The links as normlab layer tables, each Keras layer's by ``table(layer)``."""
    return [{"kind": "residual", "layers": spec(link.layers, table), "shortcut": spec(link.shortcut, table),
             "merge": "add", "activation": _activation(link.activation) if link.activation else "linear"}
            if isinstance(link, Block) else table(link)
            for link in links]
