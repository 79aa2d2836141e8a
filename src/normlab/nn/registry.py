"""Every layer kind a model spec can name (``{kind = "dense", ...}``), mapped to the function that builds it.

A new kind is one file with its builder (options declared in its signature, see ``normlab.layer``), its test,
and one line here.
"""

from normlab.nn.activations import activation, flatten, leaky_relu
from normlab.nn.dense import dense
from normlab.norms.batch_norm import batch_norm
from normlab.norms.covariate_noise import covariate_noise

KINDS = {
    "flatten": flatten,
    "dense": dense,
    "activation": activation,
    "leaky_relu": leaky_relu,
    "batch_norm": batch_norm,
    "covariate_noise": covariate_noise,
}
