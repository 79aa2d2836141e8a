"""The layer protocol: a name for summaries and two pure functions (Flax/Equinox style, without a framework).

``init(key) -> (params, state)``: params are trained, state (e.g. BN moving statistics) is carried, not trained.
``apply(params, state, x, train, mask=None) -> (y, state)``: ``mask`` marks the real rows of a padded batch;
only layers that mix rows (batch norm) look at it.
"""

from typing import Any, Callable, NamedTuple


class Layer(NamedTuple):
    kind: str  # the Keras class name, shown by `normlab summary`
    init: Callable[[Any], tuple[dict, dict]]
    apply: Callable[..., tuple[Any, dict]]


def stateless(kind: str, fn: Callable) -> Layer:
    """A layer with no params and no state, e.g. an activation."""
    return Layer(kind, lambda key: ({}, {}), lambda params, state, x, train, mask=None: (fn(x), state))
