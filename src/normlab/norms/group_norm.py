r"""Group normalization (Wu & He 2018), Keras 3's ``GroupNormalization(axis=-1)``.

The C channels (last axis) are split into ``groups`` contiguous groups of C/G; per example and group, the
statistics run over the group's channels and, for an image, its height and width:

.. math::
    y_{hwc} = \gamma_c \, \frac{x_{hwc} - \mu_{g(c)}}{\sqrt{\sigma_{g(c)}^2 + \epsilon}} + \beta_c .

One group is layer norm over all of an example's values; C groups is instance norm. No statistic crosses the
batch: no state, training and inference agree. Keras defaults: 32 groups, epsilon 1e-3.
"""

from normlab.errors import ConfigError
from normlab.interop.frameworks import channels_first, torch_affine
from normlab.interop.onnx_graph import affine, normalized
from normlab.layer import Flag, Kind, Layer, Positive, Units
from normlab.norms.batch_norm import affine_params, normalize
from normlab.norms.moments import moments


def _divisors_near(n: int, target: int, count: int = 3) -> list[int]:
    return sorted(sorted((d for d in range(1, n + 1) if n % d == 0), key=lambda d: abs(d - target))[:count])


def group_norm(groups: Units = 32, epsilon: Positive = 1e-3, center: Flag = True, scale: Flag = True) -> Layer:
    def init(key, in_shape):
        channels = in_shape[-1]
        if channels % groups:
            near = _divisors_near(channels, groups)
            raise ConfigError(f"group_norm: groups {groups} must divide the {channels} channels "
                              f"(try {', '.join(map(str, near))}, ...)")
        return affine_params(channels, center, scale), {}, in_shape

    def apply(params, state, x, train, mask=None):
        grouped = x.reshape(x.shape[:-1] + (groups, x.shape[-1] // groups))
        mean, variance, _ = moments(grouped, tuple(range(1, x.ndim - 1)) + (x.ndim,))
        per_group = {name: value.reshape(groups, -1) for name, value in params.items()}
        return normalize(grouped, mean, variance, epsilon, per_group).reshape(x.shape), state

    return Layer("GroupNormalization", init, apply)


def _torch(nn, options: dict, in_shape: list, last: bool) -> list:
    layer = nn.GroupNorm(options["groups"], in_shape[-1], eps=options["epsilon"], affine=torch_affine(options, "GroupNorm"))
    return [channels_first(nn, layer, in_shape)]


def _onnx(graph, site, x: str) -> str:
    """Channels split into ``groups`` contiguous groups: statistics per example and group over the group's
    channels and an image's height and width, as ``apply`` reshapes (..., C) to (..., G, C / G)
    (``GroupNormalization`` is opset 18)."""
    *spatial, channels = site.in_shape
    groups = site.options["groups"]
    grouped = graph.op(site.name, "Reshape", x, graph.ints(f"{site.name}/grouped_shape",
                                                           [0, *spatial, groups, channels // groups]))
    axes = [*range(1, len(spatial) + 1), len(spatial) + 2]
    y = graph.op(site.name, "Reshape", normalized(graph, site, grouped, axes),
                 graph.ints(f"{site.name}/shape", [0, *site.in_shape]))
    return affine(graph, site, y)


KIND = Kind(group_norm, keras_class="GroupNormalization", torch=_torch, onnx=_onnx)
