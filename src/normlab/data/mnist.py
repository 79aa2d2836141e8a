"""MNIST (LeCun et al., 1998): handwritten digits, 28x28, 10 classes, loaded by ``idx_dataset``.

The publisher lists no digest of the decompressed files; the archives' SHA-256 are tensorflow_datasets'
(url_checksums/mnist.txt, for this very mirror; ankane/torchvision-ruby's datasets/mnist.rb lists the same four),
and a download records its content's digest (``records``). Validation is the first 5,000 training images, the
study's convention for every dataset.
"""

from pathlib import Path

from normlab.data import idx_dataset
from normlab.data.dataset import Dataset
from normlab.data.idx_dataset import IdxFile, IdxSpec

SPEC = IdxSpec(
    name="mnist", title="MNIST", class_names=tuple("0123456789"),
    base_url="https://storage.googleapis.com/cvdf-datasets/mnist", url_env="NORMLAB_MNIST_URL",
    files=(
        IdxFile("train-images-idx3-ubyte", (60000, 28, 28), None,
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
        IdxFile("train-labels-idx1-ubyte", (60000,), None,
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
        IdxFile("t10k-images-idx3-ubyte", (10000, 28, 28), None,
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
        IdxFile("t10k-labels-idx1-ubyte", (10000,), None,
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
    ))


def load(data_dir: str | Path | None = None, download: bool = True, verify: bool = True) -> Dataset:
    return idx_dataset.load(SPEC, data_dir, download, verify)
