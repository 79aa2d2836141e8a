"""Data layer: the dataset registry (``registry``), each source in a module of its own (built-ins, ``npz``,
``image_folder``), and ``Dataset``: the checked arrays every source ends as (``arrays``: the checks)."""

from normlab.data.dataset import Dataset, Shape, content_digest
from normlab.data.fashion_mnist import cache_dir, candidate_dirs, locate
from normlab.data.idx import read_idx, read_idx_file
from normlab.data.registry import BUILTIN, DEFAULT, load, shape

__all__ = ["BUILTIN", "DEFAULT", "Dataset", "Shape", "cache_dir", "candidate_dirs", "content_digest", "load",
           "locate", "read_idx", "read_idx_file", "shape"]
