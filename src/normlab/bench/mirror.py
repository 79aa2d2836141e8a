"""The one mirror generator: a normlab model (as ``nn.summary.describe`` writes it) rebuilt in Keras or PyTorch.

Keras needs no per-kind code: a layer's options already carry Keras' names, so each layer is
``keras.layers.<class>(**options)``. PyTorch gets one small translation per Keras class below, with Keras'
initializers and BN conventions. A class a framework lacks (normlab's own ``CovariateNoise``, or one without a
translation) raises ``Unsupported`` naming it, so that framework's peer skips the model.
Imports neither JAX nor a framework: each bench child passes in the one it runs.
"""

import math

TRUNCATED_NORMAL_STD = 0.87962566103423978  # as normlab.nn.initializers: keeps he_normal's std after truncation
TORCH_ACTIVATIONS = {"linear": "Identity", "relu": "ReLU", "elu": "ELU", "selu": "SELU", "sigmoid": "Sigmoid",
                     "tanh": "Tanh", "swish": "SiLU", "gelu": "GELU"}  # leaky_relu and softmax: see _torch_activation


class Unsupported(Exception):
    """The model has a layer this framework's mirror cannot build."""


def keras_model(keras, description: dict):
    """A ``keras.Sequential`` of the same layers; it ends in the softmax normlab folds into its loss."""
    if missing := [layer["class"] for layer in description["layers"] if not hasattr(keras.layers, layer["class"])]:
        raise Unsupported(f"Keras has no layer class {missing[0]} (a normlab layer)")
    layers = [getattr(keras.layers, layer["class"])(**layer["options"]) for layer in description["layers"]]
    return keras.Sequential([keras.Input(tuple(description["input_shape"])), *layers], name=description["name"])


def torch_model(nn, description: dict):
    """A ``torch.nn.Sequential`` that emits logits (a final softmax is left to ``F.cross_entropy``), initialised
    like Keras. ``BatchNorm1d(momentum=1 - m)`` is Keras' ``momentum=m``: PyTorch weights the *new* statistic."""
    layers = description["layers"]
    modules = []
    for index, layer in enumerate(layers):
        options, last = layer["options"], index == len(layers) - 1
        build = TORCH.get(layer["class"])
        if build is None:
            raise Unsupported(f"no PyTorch mirror for the Keras class {layer['class']}")
        modules += build(nn, options, layer["in_shape"], last)
    return nn.Sequential(*modules)


def _torch_activation(nn, name: str, last: bool) -> list:
    if name == "softmax":
        return [] if last else [nn.Softmax(dim=-1)]
    if name == "leaky_relu":
        return [nn.LeakyReLU(0.2)]  # Keras' leaky_relu function (its LeakyReLU layer defaults to 0.3)
    return [getattr(nn, TORCH_ACTIVATIONS[name])()]


def _torch_dense(nn, options: dict, in_shape: list, last: bool) -> list:
    layer = nn.Linear(in_shape[-1], options["units"], bias=options["use_bias"])
    if options["kernel_initializer"] == "he_normal":
        std = math.sqrt(2.0 / in_shape[-1]) / TRUNCATED_NORMAL_STD
        nn.init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std)
    elif options["kernel_initializer"] == "random_normal":
        nn.init.normal_(layer.weight, std=0.05)  # Keras' RandomNormal default
    else:
        nn.init.xavier_uniform_(layer.weight)  # glorot_uniform; symmetric in fan_in/fan_out
    if options["use_bias"]:
        nn.init.zeros_(layer.bias)
    return [layer, *_torch_activation(nn, options["activation"], last)]


def _torch_batch_norm(nn, options: dict, in_shape: list, last: bool) -> list:
    if options["center"] != options["scale"]:
        raise Unsupported("PyTorch's BatchNorm1d has gamma and beta both or neither (center != scale)")
    return [nn.BatchNorm1d(in_shape[-1], eps=options["epsilon"], momentum=1.0 - options["momentum"],
                           affine=options["center"])]


TORCH = {
    "Flatten": lambda nn, options, in_shape, last: [nn.Flatten()],
    "Dense": _torch_dense,
    "BatchNormalization": _torch_batch_norm,
    "Activation": lambda nn, options, in_shape, last: _torch_activation(nn, options["activation"], last),
    "LeakyReLU": lambda nn, options, in_shape, last: [nn.LeakyReLU(options["negative_slope"])],
}
