"""CIFAR-10 and CIFAR-100 (Krizhevsky, 2009) from the publisher's binary version: found, fetched, verified, split.

Only the binary version is read (``cifar_records``): the Python and MATLAB versions are serialized objects whose
reading can run code, and are never opened. A data folder may hold the archive as published or the folder
extracted from it; the cache keeps the archive. Every batch file is checked against the SHA-256 of its content,
as listed by ankane/torchvision-ruby (lib/torchvision/datasets/cifar10.rb, cifar100.rb); the archive's SHA-256 on
download, as tensorflow_datasets lists it (url_checksums/cifar10.txt, cifar100.txt; torchvision-ruby agrees).
CIFAR-100 is labelled by its 100 fine classes. Validation is the first 5,000 training images, the study's
convention for every dataset.
"""

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from normlab.data import folders
from normlab.data.cifar_records import CHANNELS, NAMES_MAX, PIXELS, SIDE, SLACK, class_names, read_archive, \
    read_records
from normlab.data.dataset import Dataset, Shape
from normlab.data.download import fetch
from normlab.data.idx import archive_cap
from normlab.errors import DataError
from normlab.files import FileProblem, open_regular, read_bytes, write_bytes


@dataclass(frozen=True)
class Batch:
    name: str
    records: int
    sha256: str  # of the file's content, checked on every load


@dataclass(frozen=True)
class CifarSpec:
    name: str  # registry name and cache folder
    title: str
    archive: str  # the published .tar.gz, whose SHA-256 and size are checked on download
    archive_size: int
    archive_sha256: str
    folder: str  # the archive's one folder
    train: tuple[Batch, ...]
    test: tuple[Batch, ...]
    names_file: str  # class names, one a line
    classes: tuple[int, ...]  # classes of each label byte of a record; the last one is used
    url_env: str  # an environment variable that replaces base_url (a mirror, a test server)
    base_url: str = "https://www.cs.toronto.edu/~kriz"
    n_val: int = 5000

    @property
    def shape(self) -> Shape:
        return Shape((SIDE, SIDE, CHANNELS), self.classes[-1])

    @property
    def splits(self) -> dict[str, int]:
        train = sum(b.records for b in self.train)
        return {"train": train - self.n_val, "validation": self.n_val, "test": sum(b.records for b in self.test)}

    @property
    def sizes(self) -> dict[str, int]:
        return {b.name: b.records * (len(self.classes) + PIXELS) for b in self.train + self.test}

    @property
    def elsewhere(self) -> str:
        return folders.elsewhere(f"{self.archive} or the folder {self.folder} extracted from it")

    @property
    def refetch(self) -> str:
        return f"replace it with a fresh copy (`{folders.command(self.name)}` downloads one)"


CIFAR10 = CifarSpec(
    name="cifar10", title="CIFAR-10", archive="cifar-10-binary.tar.gz", archive_size=170052171,
    archive_sha256="c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
    folder="cifar-10-batches-bin", names_file="batches.meta.txt", classes=(10,), url_env="NORMLAB_CIFAR10_URL",
    train=(Batch("data_batch_1.bin", 10000, "cee916563c9f80d84e3cc88e17fdc0941787f1244f00a67874d45b261883ada5"),
           Batch("data_batch_2.bin", 10000, "a591ca11fa1708a91ee40f54b3da4784ccd871ecf2137de63f51ada8b3fa57ed"),
           Batch("data_batch_3.bin", 10000, "bbe8596564c0f86427f876058170b84dac6670ddf06d79402899d93ceea26f67"),
           Batch("data_batch_4.bin", 10000, "014e562d6e23c72197cc727519169a60359f5eccd8945ad5a09d710285ff4e48"),
           Batch("data_batch_5.bin", 10000, "755304fc0b379caeae8c14f0dac912fbc7d6cd469eb67a1029a08a39453a9add")),
    test=(Batch("test_batch.bin", 10000, "8e2eb146ae340b09e24670f29cabc6326dba54da8789dab6768acf480273f65b"),))

CIFAR100 = CifarSpec(
    name="cifar100", title="CIFAR-100", archive="cifar-100-binary.tar.gz", archive_size=168513733,
    archive_sha256="58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec",
    folder="cifar-100-binary", names_file="fine_label_names.txt", classes=(20, 100), url_env="NORMLAB_CIFAR100_URL",
    train=(Batch("train.bin", 50000, "f31298fc616915fa142368359df1c4ca2ae984d6915ca468b998a5ec6aeebf29"),),
    test=(Batch("test.bin", 10000, "d8b1e6b7b3bee4020055f0699b111f60b1af1e262aeb93a0b659061746f8224a"),))


def _source(spec: CifarSpec, folder: Path) -> Path | None:
    """What to read in ``folder``: the extracted folder (or ``folder`` itself, if it is one), else the archive."""
    needed = [*spec.sizes, spec.names_file]
    for d in (folder / spec.folder, folder):
        if all(os.path.lexists(d / n) for n in needed):
            return d
    return folder / spec.archive if os.path.lexists(folder / spec.archive) else None


def _members(spec: CifarSpec, source: Path) -> dict[str, bytes]:
    """The batch files' and the names file's bytes, from an extracted folder or the archive."""
    sizes = spec.sizes
    try:
        if source.is_dir():
            found = {n: read_bytes(source / n, s) for n, s in {**sizes, spec.names_file: NAMES_MAX}.items()}
        else:
            with open_regular(source, archive_cap(sum(sizes.values()) + NAMES_MAX + SLACK)) as f:
                return read_archive(f, spec.folder, sizes, spec.names_file, str(source), spec.refetch)
    except FileProblem as error:
        raise DataError(f"{error}; {spec.refetch}") from None
    for name, size in sizes.items():
        if len(found[name]) != size:
            raise DataError(f"{source / name}: {len(found[name]):,} bytes, expected {size:,}; {spec.refetch}")
    return found


def _split(spec: CifarSpec, members: dict[str, bytes], where: str, fix: str, verify: bool) -> tuple:
    """``(x, y, x_test, y_test, class names)`` from the members' bytes (each dropped once decoded: loading
    CIFAR-10 peaked at 417 MB RSS instead of 563 MB), each batch checked if ``verify``."""
    parts = {}
    for b in spec.train + spec.test:
        raw, at = members.pop(b.name), f"{where}: {b.name}"
        if verify and (got := hashlib.sha256(raw).hexdigest()) != b.sha256:
            raise DataError(f"{at}: SHA-256 {got[:12]}… differs from the expected {b.sha256[:12]}…; {fix}")
        parts[b.name] = read_records(raw, spec.classes, at, fix)
    x, y = (np.concatenate([parts[b.name][i] for b in spec.train]) for i in (0, 1))
    x_test, y_test = (np.concatenate([parts[b.name][i] for b in spec.test]) for i in (0, 1))
    names = class_names(members[spec.names_file], spec.classes[-1], f"{where}: {spec.names_file}", fix)
    return x, y, x_test, y_test, names


def locate(spec: CifarSpec, data_dir: str | Path | None = None, download: bool = True) -> Path:
    """The extracted folder or the archive to read; else the archive, downloaded (and checked) into the cache."""
    dirs = folders.candidate_dirs(spec.name, data_dir)
    lacks = f"{spec.archive} (or the folder {spec.folder} extracted from it)"
    found = folders.search(dirs, lambda d: None if _source(spec, d) else lacks, f"the {spec.title} archive")
    if found is not None:
        return _source(spec, found)
    if not download:
        raise folders.not_found(spec.name, spec.title, dirs, spec.elsewhere)
    url = f"{os.environ.get(spec.url_env, spec.base_url).rstrip('/')}/{spec.archive}"
    blob = fetch(url, spec.archive_size, spec.archive_sha256, spec.title, spec.elsewhere)
    bad = f"the download is not the published file; retry later or {spec.elsewhere}"
    _split(spec, read_archive(io.BytesIO(blob), spec.folder, spec.sizes, spec.names_file, url, bad), url, bad, True)
    return write_bytes(folders.cache_dir(spec.name) / spec.archive, blob)


def load(spec: CifarSpec, data_dir: str | Path | None = None, download: bool = True, verify: bool = True) -> Dataset:
    """Locate (or fetch), verify and split: validation is the first ``spec.n_val`` training images."""
    source = locate(spec, data_dir, download)
    x, y, x_test, y_test, names = _split(spec, _members(spec, source), str(source), spec.refetch, verify)
    return Dataset(x, y, x_test, y_test, val_split=spec.n_val, class_names=names, name=spec.name, source=str(source),
                   verified=verify, every_class=False)


def load_cifar10(data_dir: str | Path | None = None, download: bool = True, verify: bool = True) -> Dataset:
    return load(CIFAR10, data_dir, download, verify)


def load_cifar100(data_dir: str | Path | None = None, download: bool = True, verify: bool = True) -> Dataset:
    return load(CIFAR100, data_dir, download, verify)
