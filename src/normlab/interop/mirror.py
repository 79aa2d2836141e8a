"""The one mirror generator: a normlab model (as ``nn.summary.describe`` writes it) rebuilt in Keras or PyTorch.

Keras needs little per-kind code: most options already carry Keras' names, so a layer is
``keras.layers.<class>(**options)``; the kinds whose options are not Keras' keywords translate in ``KERAS``.
PyTorch gets one small translation per kind (``TORCH``), with Keras' initializers and BN conventions. Tensors
stay channels-last (NHWC) throughout, as in Keras, so ``Flatten`` gives Keras' order: the layers that want NCHW
(Conv2d, MaxPool2d, BatchNorm2d, GroupNorm) see their input through a permute, which is a view of the same
memory (``channels_last``), not a copy. A kind a framework lacks (normlab's own ``CovariateNoise``, or one
without a translation) raises ``Unsupported`` saying why, so that framework's peer skips the model.
Imports neither JAX nor a framework: each bench child passes in the one it runs.
"""

import functools
import math

from normlab.nn.window import pair

TRUNCATED_NORMAL_STD = 0.87962566103423978  # as normlab.nn.initializers: keeps he_normal's std after truncation
TORCH_ACTIVATIONS = {"linear": "Identity", "relu": "ReLU", "elu": "ELU", "selu": "SELU", "sigmoid": "Sigmoid",
                     "tanh": "Tanh", "swish": "SiLU", "gelu": "GELU"}  # leaky_relu and softmax: see _torch_activation


class Unsupported(Exception):
    """The model has a layer this framework's mirror cannot build."""


def _cannot(reason: str):
    """A translation for a kind the framework has no equivalent of."""
    def translate(*args):
        raise Unsupported(reason)
    return translate


def _keras_batch_norm(options: dict) -> tuple[str, dict]:
    if options["convention"] == "pytorch":
        raise Unsupported("Keras' BatchNormalization cannot keep an unbiased running variance "
                          "(batch_norm convention \"pytorch\")")
    return "BatchNormalization", {k: v for k, v in options.items() if k != "convention"}


def _keras_batch_renorm(options: dict) -> tuple[str, dict]:
    """Keras clips r only from above unless given ``rmin``: the paper's (and normlab's) 1/rmax is passed."""
    if options["warmup_steps"] or options["relax_steps"]:
        raise Unsupported("Keras' batch renormalization has no warm-up or relaxation schedule "
                          "(batch_renorm warmup_steps or relax_steps)")
    clipping = {"rmax": options["rmax"], "rmin": 1.0 / options["rmax"], "dmax": options["dmax"]}
    kept = {k: options[k] for k in ("momentum", "epsilon", "center", "scale", "renorm_momentum")}
    return "BatchNormalization", kept | {"renorm": True, "renorm_clipping": clipping}


KERAS = {  # kind -> options -> (Keras class, keyword arguments); any other kind: its class and options as they are
    "batch_norm": _keras_batch_norm,
    "batch_renorm": _keras_batch_renorm,
    "ghost_batch_norm": _cannot("Keras 3's BatchNormalization has no virtual_batch_size (ghost_batch_norm)"),
}


def keras_layers(description: dict) -> list[tuple[str, dict]]:
    """Each layer's Keras class and keyword arguments."""
    return [KERAS[layer["kind"]](layer["options"]) if layer["kind"] in KERAS else (layer["class"], layer["options"])
            for layer in description["layers"]]


def keras_model(keras, description: dict, head: tuple = ()):
    """A ``keras.Sequential`` of the same layers, after the Keras layers ``head`` (an export's preprocessing); it
    ends in the softmax normlab folds into its loss."""
    layers = keras_layers(description)
    if missing := [name for name, _ in layers if not hasattr(keras.layers, name)]:
        raise Unsupported(f"Keras has no layer class {missing[0]} (a normlab layer)")
    return keras.Sequential([keras.Input(tuple(description["input_shape"])), *head,
                             *(getattr(keras.layers, name)(**options) for name, options in layers)],
                            name=description["name"])


def torch_model(nn, description: dict):
    """A ``torch.nn.Sequential`` that emits logits (a final softmax is left to ``F.cross_entropy``), initialised
    like Keras. ``BatchNorm1d(momentum=1 - m)`` is Keras' ``momentum=m``: PyTorch weights the *new* statistic."""
    layers = description["layers"]
    modules = []
    for index, layer in enumerate(layers):
        build = TORCH.get(layer["kind"])
        if build is None:
            raise Unsupported(f"no PyTorch mirror for {layer['kind']} (the Keras class {layer['class']})")
        modules += build(nn, layer["options"], layer["in_shape"], index == len(layers) - 1)
    return nn.Sequential(*modules)


@functools.cache
def _channels_last(nn):
    """The wrapper class (one per ``torch.nn``) that runs a channels-first module on a channels-last tensor."""
    class ChannelsLast(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x.movedim(-1, 1)).movedim(1, -1)

    return ChannelsLast


def _channels_first(nn, module, in_shape: list):
    """``module`` (which wants the channels on axis 1) on this mirror's channels-last tensors."""
    return module if len(in_shape) == 1 else _channels_last(nn)(module)


def _torch_activation(nn, name: str, last: bool) -> list:
    if name == "softmax":
        return [] if last else [nn.Softmax(dim=-1)]
    if name == "leaky_relu":
        return [nn.LeakyReLU(0.2)]  # Keras' leaky_relu function (its LeakyReLU layer defaults to 0.3)
    return [getattr(nn, TORCH_ACTIVATIONS[name])()]


def _keras_init(nn, layer, options: dict) -> None:
    """Keras' kernel initializer and zero bias. ``weight[0]`` spans one output's inputs: its size is Keras' fan_in
    (in, or in * kh * kw); ``xavier_uniform_`` computes both fans as Keras' ``compute_fans`` does."""
    if options["kernel_initializer"] == "he_normal":
        std = math.sqrt(2.0 / layer.weight[0].numel()) / TRUNCATED_NORMAL_STD
        nn.init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std)
    elif options["kernel_initializer"] == "random_normal":
        nn.init.normal_(layer.weight, std=0.05)  # Keras' RandomNormal default
    else:
        nn.init.xavier_uniform_(layer.weight)  # glorot_uniform
    if options["use_bias"]:
        nn.init.zeros_(layer.bias)


def _torch_dense(nn, options: dict, in_shape: list, last: bool) -> list:
    layer = nn.Linear(in_shape[-1], options["units"], bias=options["use_bias"])
    _keras_init(nn, layer, options)
    return [layer, *_torch_activation(nn, options["activation"], last)]


def _torch_padding(kind: str, options: dict, in_shape: list, window: tuple, strides: tuple) -> tuple:
    """PyTorch pads both sides alike. TF's "same" pads (out - 1) s + k - n per axis, the odd one after: an even
    total (an odd kernel at stride 1, say) is PyTorch's padding = total / 2, an odd one has no equivalent."""
    if options["padding"] == "valid":
        return 0, 0
    totals = [max((-(-n // s) - 1) * s + k - n, 0) for n, k, s in zip(in_shape, window, strides)]
    if any(total % 2 for total in totals):
        raise Unsupported(f"PyTorch pads both sides alike; {kind} padding \"same\" (window {window}, strides "
                          f"{strides}) on {in_shape[0]}x{in_shape[1]} pads one more after")
    return totals[0] // 2, totals[1] // 2


def _torch_conv2d(nn, options: dict, in_shape: list, last: bool) -> list:
    window, strides = pair(options["kernel_size"]), pair(options["strides"])
    layer = nn.Conv2d(in_shape[-1], options["filters"], window, strides, bias=options["use_bias"],
                      padding=_torch_padding("conv2d", options, in_shape, window, strides))
    _keras_init(nn, layer, options)
    return [_channels_first(nn, layer, in_shape), *_torch_activation(nn, options["activation"], last)]


def _torch_max_pool2d(nn, options: dict, in_shape: list, last: bool) -> list:
    window = pair(options["pool_size"])
    strides = window if options["strides"] is None else pair(options["strides"])
    padding = _torch_padding("max_pool2d", options, in_shape, window, strides)  # MaxPool2d pads with -inf, as TF
    return [_channels_first(nn, nn.MaxPool2d(window, strides, padding), in_shape)]


def _affine(options: dict, module: str) -> bool:
    """PyTorch's norms have gamma and beta both or neither."""
    if options["center"] != options["scale"]:
        raise Unsupported(f"PyTorch's {module} has gamma and beta both or neither (center != scale)")
    return options["center"]


def _torch_batch_norm(nn, options: dict, in_shape: list, last: bool) -> list:
    """Keras' momentum m is PyTorch's 1 - m; the "pytorch" convention's momentum is PyTorch's own."""
    momentum = options["momentum"] if options["convention"] == "pytorch" else 1.0 - options["momentum"]
    module = nn.BatchNorm2d if len(in_shape) == 3 else nn.BatchNorm1d
    layer = module(in_shape[-1], eps=options["epsilon"], momentum=momentum, affine=_affine(options, module.__name__))
    return [_channels_first(nn, layer, in_shape)]


def _torch_layer_norm(nn, options: dict, in_shape: list, last: bool) -> list:
    return [nn.LayerNorm(in_shape[-1], eps=options["epsilon"], elementwise_affine=_affine(options, "LayerNorm"))]


def _torch_group_norm(nn, options: dict, in_shape: list, last: bool) -> list:
    layer = nn.GroupNorm(options["groups"], in_shape[-1], eps=options["epsilon"], affine=_affine(options, "GroupNorm"))
    return [_channels_first(nn, layer, in_shape)]


TORCH = {  # kind -> (nn, options, in_shape, last) -> modules
    "flatten": lambda nn, options, in_shape, last: [nn.Flatten()],
    "reshape": lambda nn, options, in_shape, last: [nn.Flatten(), nn.Unflatten(1, tuple(options["target_shape"]))],
    "dense": _torch_dense,
    "conv2d": _torch_conv2d,
    "max_pool2d": _torch_max_pool2d,
    "activation": lambda nn, options, in_shape, last: _torch_activation(nn, options["activation"], last),
    "leaky_relu": lambda nn, options, in_shape, last: [nn.LeakyReLU(options["negative_slope"])],
    "batch_norm": _torch_batch_norm,
    "layer_norm": _torch_layer_norm,
    "group_norm": _torch_group_norm,
    "rms_norm": lambda nn, options, in_shape, last: [nn.RMSNorm(in_shape[-1], eps=options["epsilon"])],
    "batch_renorm": _cannot("PyTorch has no batch renormalization (batch_renorm)"),
    "ghost_batch_norm": _cannot("PyTorch's BatchNorm has no virtual batches (ghost_batch_norm)"),
}
