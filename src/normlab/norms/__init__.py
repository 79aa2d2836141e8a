"""Normalization layers, each a few lines on top of `moments`."""

from normlab.norms.batch_norm import batch_norm
from normlab.norms.batch_renorm import batch_renorm
from normlab.norms.ghost_batch_norm import ghost_batch_norm
from normlab.norms.group_norm import group_norm
from normlab.norms.layer_norm import layer_norm
from normlab.norms.moments import moments
from normlab.norms.rms_norm import rms_norm

__all__ = ["batch_norm", "batch_renorm", "ghost_batch_norm", "group_norm", "layer_norm", "moments", "rms_norm"]
