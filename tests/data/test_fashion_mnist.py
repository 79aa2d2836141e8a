"""Fashion-MNIST lookup order, download, verification and split, on small synthetic files; real data last."""

import dataclasses
import gzip
from pathlib import Path

import numpy as np
import pytest

from datafiles import idx_bytes, sha
from normlab.data import fashion_mnist as fm
from normlab.data.idx import read_idx_file
from normlab.errors import DataError

N_TRAIN, N_TEST = 6, 4
RNG = np.random.default_rng(0)
ARRAYS = [RNG.integers(0, 256, (N_TRAIN, 28, 28)), RNG.integers(0, 10, N_TRAIN),
          RNG.integers(0, 256, (N_TEST, 28, 28)), RNG.integers(0, 10, N_TEST)]


RAW = [idx_bytes(a) for a in ARRAYS]
GZ = [gzip.compress(r, mtime=0) for r in RAW]


def write(folder, gz=True, names=None, raw=RAW):
    """Put the synthetic files in `folder` (NAME.gz or NAME), optionally only the files named."""
    folder.mkdir(parents=True, exist_ok=True)
    for f, r in zip(fm.SPEC.files, raw):
        if names is None or f.name in names:
            (folder / (f.name + ".gz" if gz else f.name)).write_bytes(gzip.compress(r) if gz else r)
    return folder


@pytest.fixture
def env(tmp_path, monkeypatch):
    """No real folders, no network: home, cache, Debian folder and mirror all under tmp_path."""
    for var in ("XDG_CACHE_HOME", "NORMLAB_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NORMLAB_DATA_URL", (tmp_path / "mirror").as_uri())
    monkeypatch.setattr(fm, "SPEC", dataclasses.replace(
        fm.SPEC, debian=(tmp_path / "debian", "dataset-fashion-mnist"), n_val=2, files=tuple(
            dataclasses.replace(f, shape=a.shape, sha256=sha(r), gz_sha256=sha(g))
            for f, a, r, g in zip(fm.SPEC.files, ARRAYS, RAW, GZ))))
    return tmp_path


def mirror(tmp_path):
    (tmp_path / "mirror").mkdir()
    for f, g in zip(fm.SPEC.files, GZ):
        (tmp_path / "mirror" / f"{f.name}.gz").write_bytes(g)


def test_default_order(env, monkeypatch):
    cache = env / "home" / ".cache" / "normlab" / "fashion-mnist"
    assert [d for d, _ in fm.candidate_dirs()] == [cache, env / "debian"]
    monkeypatch.setenv("XDG_CACHE_HOME", str(env / "xdg"))
    assert fm.candidate_dirs()[0][0] == env / "xdg" / "normlab" / "fashion-mnist"


def test_explicit_wins(env, monkeypatch):
    monkeypatch.setenv("NORMLAB_DATA_DIR", str(env / "from-env"))
    assert fm.candidate_dirs() == [(env / "from-env", fm.ENV)]
    assert fm.candidate_dirs(env / "arg") == [(env / "arg", fm.ARG)]


def test_cache_before_debian(env):
    write(env / "debian")
    assert fm.locate(download=False) == env / "debian"
    cache = write(fm.cache_dir(), gz=False)
    assert fm.locate(download=False) == cache


def test_mixed_gz_and_plain(env):
    names = [f.name for f in fm.SPEC.files]
    write(env / "d", gz=True, names=names[:2])
    write(env / "d", gz=False, names=names[2:])
    data = fm.load(env / "d")
    assert np.array_equal(data.x_test, ARRAYS[2]) and data.source == str(env / "d")


@pytest.mark.parametrize("use_env", [False, True])
def test_explicit_incomplete_does_not_fall_through(env, monkeypatch, use_env):
    write(env / "debian")
    write(env / "partial", names=[fm.SPEC.files[0].name])
    if use_env:
        monkeypatch.setenv("NORMLAB_DATA_DIR", str(env / "partial"))
    with pytest.raises(DataError, match="lacks train-labels-idx1-ubyte, t10k-images"):
        fm.locate(None if use_env else env / "partial")


def test_not_found_without_download(env):
    with pytest.raises(DataError, match="not found.*apt-get install dataset-fashion-mnist"):
        fm.locate(download=False)


def test_download(env):
    mirror(env)
    write(fm.cache_dir(), names=[fm.SPEC.files[1].name])  # an earlier partial run: only the rest is fetched
    data = fm.load()
    assert data.source == str(fm.cache_dir())
    assert sorted(p.name for p in fm.cache_dir().iterdir()) == sorted(f"{f.name}.gz" for f in fm.SPEC.files)
    assert np.array_equal(data.x_val, ARRAYS[0][:2]) and np.array_equal(data.x_train, ARRAYS[0][2:])
    assert np.array_equal(data.y_val, ARRAYS[1][:2]) and np.array_equal(data.y_train, ARRAYS[1][2:])


@pytest.mark.parametrize("field", ["gz_sha256", "sha256"])
def test_download_rejects_wrong_hash(env, monkeypatch, field):
    mirror(env)
    bad = dataclasses.replace(fm.SPEC.files[0], **{field: "0" * 64})
    monkeypatch.setattr(fm, "SPEC", dataclasses.replace(fm.SPEC, files=(bad,) + fm.SPEC.files[1:]))
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: SHA-256 .* expected 000000000000"):
        fm.locate()
    assert not any(fm.cache_dir().iterdir())  # neither the bad file nor a temp file is kept


def test_download_failure(env):
    with pytest.raises(DataError, match="downloading Fashion-MNIST failed.*data folder.*NORMLAB_DATA_DIR.*apt-get"):
        fm.locate()


def test_corrupt_file_rejected(env):
    raw = list(RAW)
    raw[3] = RAW[3][:-1] + bytes([(RAW[3][-1] + 1) % 10])
    write(env / "d", raw=raw)
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: SHA-256"):
        fm.load(env / "d")
    assert fm.load(env / "d", verify=False).y_test[-1] == raw[3][-1]


@pytest.mark.parametrize("index, array, problem", [
    (0, ARRAYS[0][:, :, :27], r"shape \(6, 28, 27\), expected \(6, 28, 28\)"),
    (1, ARRAYS[1][:5], r"shape \(5,\), expected \(6,\)"),
    (3, ARRAYS[3] + 10, "label 1[0-9] outside 0..9"),
])
def test_bad_content(env, index, array, problem):
    raw = list(RAW)
    raw[index] = idx_bytes(array)
    write(env / "d", raw=raw)
    with pytest.raises(DataError, match=problem):
        fm.load(env / "d", verify=False)


@pytest.fixture(scope="module")
def real():
    try:
        folder = fm.locate(download=False)
    except DataError as e:
        pytest.skip(f"real Fashion-MNIST not found (run `normlab data`): {e}")
    return fm.load(folder, download=False)


@pytest.mark.full_data
def test_real_shapes(real):
    assert real.x_train.shape == (55000, 28, 28) and real.y_train.shape == (55000,)
    assert real.x_val.shape == (5000, 28, 28) and real.y_val.shape == (5000,)
    assert real.x_test.shape == (10000, 28, 28) and real.y_test.shape == (10000,)
    assert all(a.dtype == np.uint8 for a in (real.x_train, real.y_train, real.x_val, real.x_test, real.y_test))
    assert np.array_equal(np.bincount(real.y_test, minlength=10), np.full(10, 1000))


@pytest.mark.full_data
def test_real_split_is_first_5000(real):
    images = read_idx_file(next(Path(real.source).glob("train-images-idx3-ubyte*")))[0]
    labels = read_idx_file(next(Path(real.source).glob("train-labels-idx1-ubyte*")))[0]
    assert np.array_equal(real.x_val, images[:5000]) and np.array_equal(real.x_train, images[5000:])
    assert np.array_equal(real.y_val, labels[:5000]) and np.array_equal(real.y_train, labels[5000:])


def test_val_split_moves_the_first_training_images_to_validation(real):
    """``val_split`` on a built-in: the study's convention (the first N of the 60,000 training images) with another
    N, read against the files themselves; the 5,000 of the study again gives the built-in's arrays and digest."""
    from normlab.data import registry
    images = read_idx_file(next(Path(real.source).glob("train-images-idx3-ubyte*")))[0]
    moved = registry.load("fashion-mnist", val_split=12_000)
    assert np.array_equal(moved.x_val, images[:12_000]) and np.array_equal(moved.x_train, images[12_000:])
    assert moved.splits == {"train": 48_000, "validation": 12_000, "test": 10_000}
    assert registry.load("fashion-mnist", val_split=5_000).digest == real.digest != moved.digest
    with pytest.raises(DataError, match="too few to hold out 60,000"):
        registry.load("fashion-mnist", val_split=60_000)
