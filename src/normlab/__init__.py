"""normlab: batch normalization, reproduced, measured and explained."""

from normlab.runtime import set_xla_flags

set_xla_flags()

__version__ = "0.1.0"
