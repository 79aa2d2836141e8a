"""Normalization layers, each a few lines on top of `moments`."""

from normlab.norms.batch_norm import batch_norm
from normlab.norms.moments import moments

__all__ = ["batch_norm", "moments"]
