"""The CIFAR ResNets of He et al. (2016, Sec. 4.2) by depth: Keras' own ResNet v1 example (keras-team/keras
``examples/cifar10_resnet.py``, ``resnet_v1``) as layer tables, and the variants that ask what BN does there.

Depth 6n + 2: a 3x3 conv of 16 filters, BN, ReLU; three stacks of n basic blocks of 16, 32 and 64 filters, each
block conv3x3 (strides) - BN - ReLU - conv3x3 - BN, added to the block's input, then ReLU; the first block of
stacks 2 and 3 halves the image (strides 2) and projects its shortcut with a strided 1x1 conv, without BN; then
8x8 average pooling (all of a 32x32 image's last 8x8 map), flatten, a softmax Dense. As the example's
``resnet_layer``: every conv "same", he_normal, with a bias (Keras' default, BN or not), and each ReLU its own
Activation layer, so the layers and their names are the example's. Not here: its l2(1e-4) kernel regularizer
(normlab has no weight decay). The pooling fits 32x32 images only, as the example's: the presets are for CIFAR.

Presets are data: ``PRESETS`` holds plain tables (TOML's types), the same a study could write under
``[models.NAME]``; ``nn.models.presets`` serves them beside presets.toml's.
"""

from normlab.errors import ConfigError

DATA = "cifar10"  # the images the presets fit (``data.registry``)
FILTERS = (16, 32, 64)  # per stack
BATCH_NORM = {"kind": "batch_norm"}
# Group norm (Wu & He 2018) in BN's places with 8 groups: it divides every width (16, 32, 64) and keeps at least 2
# channels per group (16 groups would be instance norm in the first stack, which Wu & He find worse); cnn-gn's 8.
GROUP_NORM = {"kind": "group_norm", "groups": 8}
SKIP_INIT = {"kind": "skip_init"}  # De & Smith 2020: the branch times a learnable scalar starting at 0


def _conv(filters: int, kernel_size: int = 3, strides: int = 1) -> dict:
    return {"kind": "conv2d", "filters": filters, "kernel_size": kernel_size, "strides": strides, "padding": "same",
            "kernel_initializer": "he_normal"}


def _resnet_layer(filters: int, strides: int, norm: dict | None, relu: bool) -> list[dict]:
    """The example's ``resnet_layer``: conv, its norm (None: none), ReLU (or not)."""
    return [_conv(filters, strides=strides), *([dict(norm)] if norm else []),
            *([{"kind": "activation", "activation": "relu"}] if relu else [])]


def resnet_v1(depth: int, norm: dict | None = BATCH_NORM, branch_end: tuple[dict, ...] = ()) -> list[dict]:
    """ResNet-``depth`` v1 with ``norm`` wherever the example has BN (None: no norm) and ``branch_end`` ending each
    block's residual branch (SkipInit's scalar)."""
    if type(depth) is not int or depth < 8 or (depth - 2) % 6:
        raise ConfigError(f"a ResNet v1's depth is 6n + 2 for n >= 1 (20, 32, 44, 56, 110), got {depth!r}")
    layers = _resnet_layer(FILTERS[0], 1, norm, relu=True)
    for stack, filters in enumerate(FILTERS):
        for block in range((depth - 2) // 6):
            strides = 2 if stack > 0 and block == 0 else 1  # halve the image, double the filters
            branch = [*_resnet_layer(filters, strides, norm, relu=True),
                      *_resnet_layer(filters, 1, norm, relu=False), *map(dict, branch_end)]
            layers.append({"kind": "residual", "layers": branch,
                           "shortcut": [_conv(filters, 1, strides)] if strides > 1 else [],
                           "merge": "add", "activation": "relu"})
    return [*layers, {"kind": "avg_pool2d", "pool_size": 8}, {"kind": "flatten"},
            {"kind": "dense", "units": "classes", "activation": "softmax", "kernel_initializer": "he_normal"}]


PRESETS = {
    "resnet20": resnet_v1(20),
    "resnet56": resnet_v1(56),
    "resnet20-nobn": resnet_v1(20, norm=None),
    "resnet20-skipinit": resnet_v1(20, norm=None, branch_end=(SKIP_INIT,)),
    "resnet20-gn": resnet_v1(20, norm=GROUP_NORM),
}
