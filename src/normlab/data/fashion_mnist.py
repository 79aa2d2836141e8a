"""Fashion-MNIST (Xiao et al., 2017): Zalando's 28x28 clothing, 10 classes, loaded by ``idx_dataset``.

Both checksums of every file are published: the content's (checked on every load, so Debian's recompressed
copy passes too) and the archive's (checked on download; they match tensorflow_datasets'
url_checksums/fashion_mnist.txt). The study holds out the first 5,000 training images as validation and trains
on the other 55,000.
"""

from pathlib import Path

from normlab.data import idx_dataset
from normlab.data.dataset import Dataset
from normlab.data.folders import ARG, ENV  # noqa: F401 (callers name them)
from normlab.data.idx_dataset import IdxFile, IdxSpec

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

SPEC = IdxSpec(
    name="fashion-mnist", title="Fashion-MNIST", class_names=CLASS_NAMES,
    base_url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com", url_env="NORMLAB_DATA_URL",
    debian=(Path("/usr/share/datasets/fashion-mnist"), "dataset-fashion-mnist"),
    files=(
        IdxFile("train-images-idx3-ubyte", (60000, 28, 28),
                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
        IdxFile("train-labels-idx1-ubyte", (60000,),
                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
        IdxFile("t10k-images-idx3-ubyte", (10000, 28, 28),
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
        IdxFile("t10k-labels-idx1-ubyte", (10000,),
                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
    ))
SHAPE = SPEC.shape


def cache_dir() -> Path:
    """Where downloads go: `$XDG_CACHE_HOME/normlab/fashion-mnist`, else under `~/.cache` (``files.cache_root``)."""
    return idx_dataset.cache_dir(SPEC)


def candidate_dirs(data_dir: str | Path | None = None) -> list[tuple[Path, str]]:
    """The folders `locate` searches, in order, each with where it came from (``folders.candidate_dirs``)."""
    return idx_dataset.candidate_dirs(SPEC, data_dir)


def locate(data_dir: str | Path | None = None, download: bool = True) -> Path:
    """The first candidate folder holding all four files (NAME.gz or NAME); else download into the cache."""
    return idx_dataset.locate(SPEC, data_dir, download)


def load(data_dir: str | Path | None = None, download: bool = True, verify: bool = True) -> Dataset:
    """Locate (or fetch), verify and split Fashion-MNIST: validation is the first 5,000 training examples."""
    return idx_dataset.load(SPEC, data_dir, download, verify)
