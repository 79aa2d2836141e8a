"""Every layer kind a model spec can name (``{kind = "dense", ...}``), each one record (``layer.Kind``).

A kind's module declares its record beside its builder: options, Keras and PyTorch mirrors, ONNX translation,
folding, data-parallel form. A new kind is one file, its test, and one line here; nothing else names it.
"""

from normlab.layer import Kind
from normlab.nn import activations
from normlab.nn.conv import KIND as CONV2D
from normlab.nn.dense import KIND as DENSE
from normlab.nn.dropout import KIND as DROPOUT
from normlab.nn.merge import KIND as ADD
from normlab.nn.pooling import AVG_POOL2D, GLOBAL_AVG_POOL2D, MAX_POOL2D
from normlab.nn.reshape import KIND as RESHAPE
from normlab.nn.skip_init import KIND as SKIP_INIT
from normlab.norms.batch_norm import KIND as BATCH_NORM
from normlab.norms.batch_renorm import KIND as BATCH_RENORM
from normlab.norms.covariate_noise import KIND as COVARIATE_NOISE
from normlab.norms.ghost_batch_norm import KIND as GHOST_BATCH_NORM
from normlab.norms.group_norm import KIND as GROUP_NORM
from normlab.norms.layer_norm import KIND as LAYER_NORM
from normlab.norms.rms_norm import KIND as RMS_NORM

KINDS: dict[str, Kind] = {
    "flatten": activations.FLATTEN,
    "dense": DENSE,
    "conv2d": CONV2D,
    "max_pool2d": MAX_POOL2D,
    "avg_pool2d": AVG_POOL2D,
    "global_avg_pool2d": GLOBAL_AVG_POOL2D,
    "reshape": RESHAPE,
    "activation": activations.ACTIVATION,
    "leaky_relu": activations.LEAKY_RELU,
    "add": ADD,
    "dropout": DROPOUT,
    "skip_init": SKIP_INIT,
    "batch_norm": BATCH_NORM,
    "covariate_noise": COVARIATE_NOISE,
    "layer_norm": LAYER_NORM,
    "group_norm": GROUP_NORM,
    "rms_norm": RMS_NORM,
    "batch_renorm": BATCH_RENORM,
    "ghost_batch_norm": GHOST_BATCH_NORM,
}
