"""Data layer: the IDX reader and Fashion-MNIST lookup, download, verification and split."""

from normlab.data.fashion_mnist import CLASS_NAMES, FashionMNIST, cache_dir, candidate_dirs, load, locate
from normlab.data.idx import read_idx, read_idx_file

__all__ = ["CLASS_NAMES", "FashionMNIST", "cache_dir", "candidate_dirs", "load", "locate",
           "read_idx", "read_idx_file"]
