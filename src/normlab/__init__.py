"""normlab: batch normalization, reproduced, measured and explained."""

__version__ = "0.1.0"
