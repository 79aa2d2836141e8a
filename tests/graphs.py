"""A small residual net (ResNet v1 on 8x8 RGB, 10 classes) and weights drawn in NumPy: the graph model that every
interop path (Keras, ONNX, PyTorch, safetensors, checkpoints, folding) is tested with, beside the presets' chains.

Its identity block adds the stem's output to its branch's; its projection block halves the image with a strided
3x3 "same" conv (TF pads it one pixel more after than before) and projects the shortcut with a strided 1x1 conv and
a batch norm, as He et al.'s option B.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np

from normlab.data.dataset import Shape
from normlab.nn import models

IMAGE = (8, 8, 3)
RELU = {"kind": "activation", "activation": "relu"}
BN = {"kind": "batch_norm"}


def conv(filters: int, **options) -> dict:
    return {"kind": "conv2d", "filters": filters, "padding": "same", **options}


RESNET = [
    conv(16), BN, RELU,
    {"kind": "residual", "layers": [conv(16), BN, RELU, conv(16), BN]},
    {"kind": "residual", "layers": [conv(32, strides=2), BN, RELU, conv(32), BN],
     "shortcut": [conv(32, kernel_size=1, strides=2), BN]},
    {"kind": "flatten"},
    {"kind": "dense", "units": 10, "activation": "softmax"},
]


def resnet(layers=None, name: str = "resnet") -> models.Model:
    return models.build(name, RESNET if layers is None else layers, data=Shape(IMAGE, 10))


def randomized(model, seed=0):
    """Params and state drawn in NumPy (no initializer to compile): kernels scaled by 1/sqrt(fan-in), biases and BN
    betas and means ~N(0, 1), BN gammas of either sign and variances in [0.5, 2], so a fold or a copy that drops or
    misplaces any of them changes the predictions."""
    rng = np.random.default_rng(seed)
    params, state, _ = models.abstract(model)

    def draw(path, value):
        name = path[-1].key
        if not jnp.issubdtype(value.dtype, jnp.floating):
            return jnp.zeros(value.shape, value.dtype)  # batch renorm's step counter
        if name == "kernel":
            drawn = rng.normal(0.0, 1.0 / np.sqrt(np.prod(value.shape[:-1])), value.shape)
        elif name in ("moving_variance", "moving_stddev", "renorm_stddev"):
            drawn = rng.uniform(0.5, 2.0, value.shape)
        elif name == "gamma":
            drawn = rng.uniform(0.5, 2.0, value.shape) * rng.choice([-1.0, 1.0], value.shape)
        else:
            drawn = rng.normal(0.0, 1.0, value.shape)
        return jnp.asarray(drawn, value.dtype)

    return jax.tree_util.tree_map_with_path(draw, (params, state))


def pixels(rows: int, seed: int = 1) -> np.ndarray:
    """Raw uint8 images, as a user's test set is stored."""
    return np.random.default_rng(seed).integers(0, 256, (rows, *IMAGE)).astype(np.uint8)


def toml(value) -> str:
    """A spec as a study file writes it: TOML's inline tables (each on one line, TOML's rule for them)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key} = {toml(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(map(toml, value)) + "]"
    return json.dumps(value)  # a string, number or bool is spelled alike in both
