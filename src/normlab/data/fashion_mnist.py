"""Fashion-MNIST (Xiao et al., 2017): find it, fetch it if asked, verify it, split it like the study.

Every file is checked against the SHA-256 of its *decompressed* content, so the publisher's archives, the
Debian package's recompressed ones and uncompressed copies are all accepted exactly when they hold the same
bytes. The study holds out the first 5,000 training images as validation and trains on the other 55,000.
"""

import gzip
import hashlib
import http.client
import math
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from normlab import signals
from normlab.data.dataset import Dataset, Shape, content_digest
from normlab.data.idx import REFETCH, archive_cap, read_idx_file
from normlab.errors import DataError
from normlab.files import cache_root, write_bytes

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
N_VAL = 5000
SHAPE = Shape((28, 28), len(CLASS_NAMES))
SPLITS = {"train": 60000 - N_VAL, "validation": N_VAL, "test": 10000}
BASE_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com"
TIMEOUT_S = 60
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
ARG, ENV = "the data folder given", "$NORMLAB_DATA_DIR"  # no option names: the CLI is not the only caller
ELSEWHERE = ("give a data folder holding the four files (or set $NORMLAB_DATA_DIR to one), "
             "or `apt-get install dataset-fashion-mnist`")


@dataclass(frozen=True)
class IdxFile:
    """One of the four files: its name, the shape the study needs and its two checksums."""

    name: str
    shape: tuple[int, ...]
    sha256: str  # of the decompressed IDX bytes, checked on every load
    gz_sha256: str  # of the publisher's archive, checked only on download

    @property
    def size(self) -> int:
        """Bytes of the decompressed file: the 4-byte magic, one uint32 per dimension, one byte per element."""
        return 4 + 4 * len(self.shape) + math.prod(self.shape)


FILES = (  # order: train images, train labels, test images, test labels
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
)


def cache_dir() -> Path:
    """Where downloads go: `$XDG_CACHE_HOME/normlab/fashion-mnist`, else under `~/.cache` (``files.cache_root``)."""
    return cache_root() / "fashion-mnist"


def candidate_dirs(data_dir: str | Path | None = None) -> list[tuple[Path, str]]:
    """The folders `locate` searches, in order, each with where it came from.

    An explicit folder (argument, else environment) is the only candidate: the user asked for it, so a
    missing file there is their error to hear about, not a reason to quietly read data from elsewhere.
    """
    if data_dir is not None:
        return [(Path(data_dir).expanduser(), ARG)]
    if env := os.environ.get("NORMLAB_DATA_DIR"):
        return [(Path(env).expanduser(), ENV)]
    return [(cache_dir(), "user cache"), (DEBIAN_DIR, "Debian package dataset-fashion-mnist")]


def _find(folder: Path, f: IdxFile) -> Path | None:
    """The file as .gz or plain; anything by that name counts, so a directory or a FIFO is reported, not skipped."""
    return next((p for p in (folder / f"{f.name}.gz", folder / f.name) if os.path.lexists(p)), None)


def _check(what: str, got: str, want: str, fix: str) -> None:
    if got != want:
        raise DataError(f"{what}: SHA-256 {got[:12]}… differs from the expected {want[:12]}…; {fix}")


def _fetch(folder: Path, f: IdxFile, base: str) -> None:
    """Download one archive; keep it (written atomically) only if both checksums match."""
    url = f"{base}/{f.name}.gz"
    try:
        with signals.interruptible(), urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            gz = response.read(archive_cap(f.size) + 1)
    except (OSError, ValueError, http.client.HTTPException) as e:
        raise DataError(f"downloading Fashion-MNIST failed: {url}: {e}; {ELSEWHERE}") from e
    bad = f"the download is not the published file; retry later or {ELSEWHERE}"
    _check(url, hashlib.sha256(gz).hexdigest(), f.gz_sha256, bad)
    raw = gzip.decompress(gz)  # the publisher's own archive (its SHA-256 matched): it expands to the known size
    _check(url, hashlib.sha256(raw).hexdigest(), f.sha256, bad)
    write_bytes(folder / f"{f.name}.gz", gz)


def locate(data_dir: str | Path | None = None, download: bool = True) -> Path:
    """The first candidate folder holding all four files (NAME.gz or NAME); else download into the cache."""
    dirs = candidate_dirs(data_dir)
    for folder, origin in dirs:
        if origin in (ARG, ENV) and not folder.is_dir():
            raise DataError(f"{folder} (from {origin}) is {'not a folder' if folder.exists() else 'missing'}; "
                            f"point {origin} at the folder holding the four Fashion-MNIST files")
        missing = [f.name for f in FILES if _find(folder, f) is None]
        if not missing:
            return folder
        if origin in (ARG, ENV):
            raise DataError(f"{folder} (from {origin}) lacks {', '.join(missing)} (as .gz or uncompressed); "
                            f"put the files there, or give no folder to search the default ones")
    if not download:
        looked = ", ".join(str(d) for d, _ in dirs)
        raise DataError(f"Fashion-MNIST not found in {looked}; run `normlab data` to download it, "
                        f"or {ELSEWHERE}")
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    base = os.environ.get("NORMLAB_DATA_URL", BASE_URL).rstrip("/")
    for f in FILES:
        if _find(folder, f) is None:
            _fetch(folder, f, base)
    return folder


def _read(folder: Path, f: IdxFile, verify: bool) -> np.ndarray:
    path = _find(folder, f)
    array, sha = read_idx_file(path, f.size)
    if verify:
        _check(str(path), sha, f.sha256, REFETCH)
    if array.shape != f.shape:
        raise DataError(f"{path}: shape {array.shape}, expected {f.shape}; {REFETCH}")
    if array.ndim == 1 and array.size and array.max() >= len(CLASS_NAMES):
        raise DataError(f"{path}: label {array.max()} outside 0..{len(CLASS_NAMES) - 1}; {REFETCH}")
    return array


def load(data_dir: str | Path | None = None, download: bool = True, verify: bool = True) -> Dataset:
    """Locate (or fetch), verify and split Fashion-MNIST: validation is the first N_VAL training examples."""
    folder = locate(data_dir, download)
    x, y, x_test, y_test = (_read(folder, f, verify) for f in FILES)
    arrays = (x[N_VAL:], y[N_VAL:], x[:N_VAL], y[:N_VAL], x_test, y_test)
    return Dataset(*arrays, CLASS_NAMES, "fashion-mnist", str(folder), content_digest(*arrays), verify)
