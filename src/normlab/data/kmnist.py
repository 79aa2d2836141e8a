"""Kuzushiji-MNIST (Clanuwat et al., 2018): one cursive hiragana per row of the syllabary, 28x28, 10 classes.

Class names are the characters of the publisher's kmnist_classmap.csv (U+304A お ... U+3092 を; romanized o, ki,
su, tsu, na, ha, ma, ya, re, wo). The archives' SHA-256 are tensorflow_datasets' (url_checksums/kmnist.txt;
ankane/torchvision-ruby's datasets/kmnist.rb lists the same four); no digest of the decompressed files is
published, so a download records its own (``records``). Validation is the first 5,000 training images, the
study's convention for every dataset.
"""

from pathlib import Path

from normlab.data import idx_dataset
from normlab.data.dataset import Dataset
from normlab.data.idx_dataset import IdxFile, IdxSpec

SPEC = IdxSpec(
    name="kmnist", title="KMNIST", class_names=("お", "き", "す", "つ", "な", "は", "ま", "や", "れ", "を"),
    base_url="https://codh.rois.ac.jp/kmnist/dataset/kmnist", url_env="NORMLAB_KMNIST_URL",
    files=(
        IdxFile("train-images-idx3-ubyte", (60000, 28, 28), None,
                "51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4"),
        IdxFile("train-labels-idx1-ubyte", (60000,), None,
                "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17"),
        IdxFile("t10k-images-idx3-ubyte", (10000, 28, 28), None,
                "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5"),
        IdxFile("t10k-labels-idx1-ubyte", (10000,), None,
                "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c"),
    ))


def load(data_dir: str | Path | None = None, download: bool = True, verify: bool = True) -> Dataset:
    return idx_dataset.load(SPEC, data_dir, download, verify)
