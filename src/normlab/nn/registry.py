"""Every layer kind a model spec can name (``{kind = "dense", ...}``), mapped to the function that builds it.

A new kind is one file with its builder (options declared in its signature, see ``normlab.layer``), its test,
and one line here.
"""

from normlab.nn.activations import activation, flatten, leaky_relu
from normlab.nn.conv import conv2d, patch_values
from normlab.nn.dense import dense
from normlab.nn.pooling import max_pool2d
from normlab.nn.reshape import reshape
from normlab.norms.batch_norm import CONVENTIONS as BATCH_NORM_CONVENTIONS, batch_norm
from normlab.norms.batch_renorm import batch_renorm
from normlab.norms.covariate_noise import covariate_noise
from normlab.norms.ghost_batch_norm import ghost_batch_norm
from normlab.norms.group_norm import group_norm
from normlab.norms.layer_norm import layer_norm
from normlab.norms.rms_norm import rms_norm

KINDS = {
    "flatten": flatten,
    "dense": dense,
    "conv2d": conv2d,
    "max_pool2d": max_pool2d,
    "reshape": reshape,
    "activation": activation,
    "leaky_relu": leaky_relu,
    "batch_norm": batch_norm,
    "covariate_noise": covariate_noise,
    "layer_norm": layer_norm,
    "group_norm": group_norm,
    "rms_norm": rms_norm,
    "batch_renorm": batch_renorm,
    "ghost_batch_norm": ghost_batch_norm,
}

# Kinds whose option defaults depend on a ``convention`` option: convention -> option -> value (``nn.spec``).
CONVENTIONS = {"batch_norm": BATCH_NORM_CONVENTIONS}

# Layers whose training step is undefined at some batch sizes (they raise ConfigError when traced there):
# ``models.check_batch`` traces a model only if one of its layer specs is such a layer.
BATCH_LIMITED = {"batch_norm": lambda spec: spec["convention"] == "pytorch",  # batch 1: no unbiased variance
                 "ghost_batch_norm": lambda spec: True}  # a virtual batch size that does not divide the batch

# Layers that hold more than their output while they run: kind -> (spec, in shape, out shape) -> values per example
# (``memory.activation_bytes``). A convolution is im2col + GEMM: its patch rows are 9x its input for a 3x3 window.
WORKSPACE = {"conv2d": patch_values}
