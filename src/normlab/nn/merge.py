"""Keras' ``Add``: the sum of a block's branches (``nn.residual``), the one layer that takes several inputs."""

from normlab.errors import ConfigError
from normlab.layer import Kind, Layer


def add() -> Layer:
    """Inputs of one shape, summed; a shortcut whose shape differs from its branch's says both."""

    def init(key, in_shapes):
        shortcut, *branches = in_shapes
        if any(tuple(shape) != tuple(shortcut) for shape in branches):
            projection = ("{kind = \"dense\", units = N}" if len(branches[0]) == 1 else
                          "{kind = \"conv2d\", filters = N, kernel_size = 1, strides = 2}")
            raise ConfigError(f"the shortcut gives shape {tuple(shortcut)} but the block's layers give "
                              f"{' and '.join(str(tuple(shape)) for shape in branches)}; give the shortcut a "
                              f"projection to that shape (e.g. {projection})")
        return {}, {}, tuple(shortcut)

    def apply(params, state, xs, train, mask=None):
        total = xs[0]
        for x in xs[1:]:
            total = total + x
        return total, state

    return Layer("Add", init, apply, merges=True)


def _torch(nn, options: dict, in_shape: list, last: bool) -> list:
    return [_sum_module(nn)()]


def _sum_module(nn):
    class Sum(nn.Module):
        """Keras' ``Add`` for a PyTorch mirror: the sum of its inputs."""

        def forward(self, *xs):
            total = xs[0]
            for x in xs[1:]:
                total = total + x
            return total

    return Sum


def _onnx(graph, site, xs) -> str:
    total = xs[0]
    for x in xs[1:]:
        total = graph.op(site.name, "Add", total, x)
    return total


KIND = Kind(add, keras_class="Add", torch=_torch, onnx=_onnx)
