"""The MNIST family (Fashion-MNIST, MNIST, KMNIST): four IDX files each, found, fetched, verified and split alike.

A dataset of the family is an ``IdxSpec`` (its files with shapes and digests, a mirror, class names); this module
does the rest. Every file is checked against the SHA-256 of its *decompressed* content, published (Fashion-MNIST)
or recorded when a download's archive matched the published one (``records``), so the publisher's archives,
Debian's recompressed ones and uncompressed copies are all accepted exactly when they hold the same bytes. The
study holds out the first ``n_val`` training images (5,000 for every member) as validation.
"""

import gzip
import hashlib
import io
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from normlab.data import folders, records
from normlab.data.dataset import Dataset, Shape
from normlab.data.download import fetch
from normlab.data.idx import REFETCH, archive_cap, read_idx, read_idx_file
from normlab.errors import DataError
from normlab.files import write_bytes


@dataclass(frozen=True)
class IdxFile:
    """One of the four files: its name, the shape the study needs and its checksums."""

    name: str
    shape: tuple[int, ...]
    sha256: str | None  # of the decompressed IDX bytes, checked on every load; None: recorded at download
    gz_sha256: str  # of the publisher's archive, checked only on download

    @property
    def size(self) -> int:
        """Bytes of the decompressed file: the 4-byte magic, one uint32 per dimension, one byte per element."""
        return 4 + 4 * len(self.shape) + math.prod(self.shape)


@dataclass(frozen=True)
class IdxSpec:
    """A dataset of the family: everything that differs between Fashion-MNIST, MNIST and KMNIST."""

    name: str  # registry name and cache folder
    title: str  # in messages
    files: tuple[IdxFile, ...]  # train images, train labels, test images, test labels
    class_names: tuple[str, ...]
    base_url: str
    url_env: str  # an environment variable that replaces base_url (a mirror, a test server)
    n_val: int = 5000
    debian: tuple[Path, str] | None = None  # a Debian package's folder and name

    @property
    def shape(self) -> Shape:
        return Shape(self.files[0].shape[1:], len(self.class_names))

    @property
    def splits(self) -> dict[str, int]:
        return {"train": self.files[0].shape[0] - self.n_val, "validation": self.n_val,
                "test": self.files[2].shape[0]}

    @property
    def elsewhere(self) -> str:
        return folders.elsewhere("the four files", self.debian[1] if self.debian else None)


def cache_dir(spec: IdxSpec) -> Path:
    return folders.cache_dir(spec.name)


def candidate_dirs(spec: IdxSpec, data_dir: str | Path | None = None) -> list[tuple[Path, str]]:
    return folders.candidate_dirs(spec.name, data_dir, spec.debian)


def _find(folder: Path, f: IdxFile) -> Path | None:
    """The file as .gz or plain; anything by that name counts, so a directory or a FIFO is reported, not skipped."""
    return next((p for p in (folder / f"{f.name}.gz", folder / f.name) if os.path.lexists(p)), None)


def _lacks(spec: IdxSpec, folder: Path) -> str | None:
    missing = [f.name for f in spec.files if _find(folder, f) is None]
    return f"{', '.join(missing)} (as .gz or uncompressed)" if missing else None


def _check(what: str, got: str, want: str, fix: str) -> None:
    if got != want:
        raise DataError(f"{what}: SHA-256 {got[:12]}… differs from the expected {want[:12]}…; {fix}")


def _checked(spec: IdxSpec, array: np.ndarray, f: IdxFile, where: str) -> np.ndarray:
    if array.shape != f.shape:
        raise DataError(f"{where}: shape {array.shape}, expected {f.shape}; {REFETCH}")
    if array.ndim == 1 and array.size and array.max() >= len(spec.class_names):
        raise DataError(f"{where}: label {array.max()} outside 0..{len(spec.class_names) - 1}; {REFETCH}")
    return array


def _fetch(spec: IdxSpec, folder: Path, f: IdxFile, base: str) -> None:
    """Download one archive; keep it (written atomically) only if it is the published one, whole and readable."""
    url = f"{base}/{f.name}.gz"
    gz = fetch(url, archive_cap(f.size), f.gz_sha256, spec.title, spec.elsewhere)
    bad = f"the download is not the published file; retry later or {spec.elsewhere}"
    try:
        raw = gzip.GzipFile(fileobj=io.BytesIO(gz), mode="rb").read(f.size + 1)
    except (EOFError, OSError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{url}: not a readable gzip archive ({error}); {bad}") from None
    sha = hashlib.sha256(raw).hexdigest()
    if f.sha256:
        _check(url, sha, f.sha256, bad)
    try:
        _checked(spec, read_idx(raw, url), f, url)
    except DataError as error:
        raise DataError(f"{str(error).removesuffix(REFETCH)}{bad}") from None
    if f.sha256 is None:
        records.record(folder, f.name, sha, f.gz_sha256)  # before the file: a kept file always has its record
    write_bytes(folder / f"{f.name}.gz", gz)


def locate(spec: IdxSpec, data_dir: str | Path | None = None, download: bool = True) -> Path:
    """The first candidate folder holding all four files (NAME.gz or NAME); else download into the cache."""
    dirs = candidate_dirs(spec, data_dir)
    found = folders.search(dirs, lambda folder: _lacks(spec, folder), f"the four {spec.title} files")
    if found is not None:
        return found
    if not download:
        raise folders.not_found(spec.name, spec.title, dirs, spec.elsewhere)
    folder = cache_dir(spec)
    folder.mkdir(parents=True, exist_ok=True)
    base = os.environ.get(spec.url_env, spec.base_url).rstrip("/")
    for f in spec.files:
        if _find(folder, f) is None:
            _fetch(spec, folder, f, base)
    return folder


def _expected(spec: IdxSpec, folder: Path) -> dict[str, str]:
    """Each file's content SHA-256 as published, else as recorded at download from the same published archive."""
    known = {f.name: f.sha256 for f in spec.files if f.sha256}
    if len(known) < len(spec.files):
        archives = {f.name: f.gz_sha256 for f in spec.files if not f.sha256}
        known |= {name: e["sha256"] for name, e in records.recorded(folder).items()
                  if archives.get(name) == e["archive_sha256"]}
    return known


def _read(spec: IdxSpec, folder: Path, f: IdxFile, want: str | None) -> np.ndarray:
    path = _find(folder, f)
    array, sha = read_idx_file(path, f.size)
    if want:
        _check(str(path), sha, want, REFETCH)
    return _checked(spec, array, f, str(path))


def load(spec: IdxSpec, data_dir: str | Path | None = None, download: bool = True, verify: bool = True) -> Dataset:
    """Locate (or fetch), verify and split: validation is the first ``spec.n_val`` training examples.

    ``verified`` is true only if every file matched a published or download-recorded digest.
    """
    folder = locate(spec, data_dir, download)
    want = _expected(spec, folder) if verify else {}
    x, y, x_test, y_test = (_read(spec, folder, f, want.get(f.name)) for f in spec.files)
    verified = verify and all(f.name in want for f in spec.files)
    return Dataset(x, y, x_test, y_test, val_split=spec.n_val, class_names=spec.class_names, name=spec.name,
                   source=str(folder), verified=verified, every_class=False)
