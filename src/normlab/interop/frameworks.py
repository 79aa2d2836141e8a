"""The pieces the layer kinds' Keras and PyTorch translations share (each kind's ``Kind`` record holds its own).

Tensors stay channels-last (NHWC) in every mirror, as in Keras, so ``Flatten`` gives Keras' order: the PyTorch
modules that want NCHW (Conv2d, MaxPool2d, BatchNorm2d, GroupNorm) see their input through a permute, which is a
view of the same memory (``channels_last``), not a copy. Imports neither JAX nor a framework: each translation is
given the framework (``nn``, ``keras``) it builds with.
"""

import functools
import math

TRUNCATED_NORMAL_STD = 0.87962566103423978  # as normlab.nn.initializers: keeps he_normal's std after truncation
TORCH_ACTIVATIONS = {"linear": "Identity", "relu": "ReLU", "elu": "ELU", "selu": "SELU", "sigmoid": "Sigmoid",
                     "tanh": "Tanh", "swish": "SiLU", "gelu": "GELU"}  # leaky_relu and softmax: see torch_activation


class Unsupported(Exception):
    """The model has a layer this framework (or format) cannot express."""


def cannot(reason: str):
    """A translation for a kind the framework has no equivalent of."""
    def translate(*args):
        raise Unsupported(reason)
    return translate


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


def channels_first(nn, module, in_shape: list):
    """``module`` (which wants the channels on axis 1) on this mirror's channels-last tensors."""
    return module if len(in_shape) == 1 else _channels_last(nn)(module)


def torch_activation(nn, name: str, last: bool) -> list:
    if name == "softmax":
        return [] if last else [nn.Softmax(dim=-1)]
    if name == "leaky_relu":
        return [nn.LeakyReLU(0.2)]  # Keras' leaky_relu function (its LeakyReLU layer defaults to 0.3)
    return [getattr(nn, TORCH_ACTIVATIONS[name])()]


def keras_init(nn, layer, options: dict) -> None:
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


def same_padding(in_shape, window: tuple, strides: tuple) -> list[int]:
    """TF's "same" padding per axis, (ceil(n / s) - 1) s + k - n, the odd one after (``nn.window``)."""
    return [max((-(-n // s) - 1) * s + k - n, 0) for n, k, s in zip(in_shape, window, strides)]


def torch_padding(kind: str, options: dict, in_shape: list, window: tuple, strides: tuple) -> tuple:
    """PyTorch pads both sides alike: an even total of TF's "same" (an odd kernel at stride 1, say) is PyTorch's
    padding = total / 2; an odd one has no equivalent."""
    if options["padding"] == "valid":
        return 0, 0
    totals = same_padding(in_shape, window, strides)
    if any(total % 2 for total in totals):
        raise Unsupported(f"PyTorch pads both sides alike; {kind} padding \"same\" (window {window}, strides "
                          f"{strides}) on {in_shape[0]}x{in_shape[1]} pads one more after")
    return totals[0] // 2, totals[1] // 2


def torch_padded(nn, kind: str, options: dict, in_shape, window: tuple, strides: tuple,
                 fill: float) -> tuple[list, tuple]:
    """``(modules before the layer, its padding argument)``: PyTorch's own padding where TF's "same" pads both sides
    alike, else TF's padding as a ``ConstantPad2d`` of ``fill`` (the odd pixel after), so that a strided "same"
    window on an even image (a ResNet's downsampling conv) is mirrored too."""
    totals = same_padding(in_shape, window, strides)
    if options["padding"] == "valid" or not any(total % 2 for total in totals):
        return [], torch_padding(kind, options, in_shape, window, strides)
    rows, cols = totals
    return [nn.ConstantPad2d((cols // 2, cols - cols // 2, rows // 2, rows - rows // 2), fill)], (0, 0)


def torch_affine(options: dict, module: str) -> bool:
    """PyTorch's norms have gamma and beta both or neither."""
    if options["center"] != options["scale"]:
        raise Unsupported(f"PyTorch's {module} has gamma and beta both or neither (center != scale)")
    return options["center"]
