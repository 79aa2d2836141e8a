"""Shared fixtures: a small synthetic Fashion-MNIST-shaped data set, full-size synthetic IDX files, the real data,
and the environment of the `normlab` processes the tests start."""

import contextlib
import functools
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

# The engine of the `normlab` processes the tests start (they inherit it): XLA's GEMM and flags, not a tuned choice.
# Tuning measures a minute of timings, so on a busy machine it picks one engine one day and another the next: the
# end-to-end tests would then run a different program from one run to the next. The engines users get are tested
# where they matter, in-process and without tuning: every test that asks for the ``engine`` fixture runs on each
# GEMM that loads here (the reference comparisons of layers and training steps), and tests/engine/ tests the
# BLAS GEMMs and tuning themselves.
os.environ.setdefault("NORMLAB_ENGINE", "gemm=xla,flags=no-library-fusion")


@functools.cache
def gemms_here() -> tuple[str, ...]:
    """XLA's GEMM and each BLAS GEMM that loads in this process (``engine.gemm.usable``): every GEMM the tuned engine
    can choose here. Which load depends on what is installed, not on timing."""
    from normlab.engine import gemm
    return tuple(gemm.usable())


def pytest_generate_tests(metafunc):
    if "engine" in metafunc.fixturenames:
        metafunc.parametrize("engine", gemms_here(), indirect=True)


@pytest.fixture
def engine(request):
    """The GEMM (one of ``gemms_here``) the test's programs compute their matrix products with; XLA's again after.

    JAX's trace caches are cleared at both switches to a BLAS and back: a jitted function keeps the GEMM it was
    first traced with, so one traced in another test would otherwise run that test's GEMM here. Plain SGD takes
    its step inside the GEMM on a BLAS (``train.loop.seeds_epoch``): a test training with it passes
    ``sgd_rate(engine, rate)``.
    """
    import jax
    from normlab.engine import gemm
    if request.param == "xla":  # every other test's GEMM too: nothing to clear
        yield request.param
        return
    gemm.use(request.param)
    jax.clear_caches()
    yield request.param
    gemm.use("xla")
    jax.clear_caches()


def sgd_rate(engine: str, learning_rate: float) -> float | None:
    """``make_train_step``'s ``sgd_rate`` as fit's program chooses it for plain SGD (``train.loop.seeds_epoch``):
    the kernels' steps folded into their weight-gradient GEMMs on a BLAS, after them on XLA's."""
    return None if engine == "xla" else learning_rate


def synthetic_data(n_train=600, n_val=200, n_test=200, seed=0):
    """Ten noisy uint8 templates: learnable in a few epochs, shaped and typed like the real data."""
    rng = np.random.default_rng(seed)
    templates = rng.uniform(0, 255, (10, 28, 28))

    def draw(n):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = np.clip(templates[labels] + rng.normal(0, 60, (n, 28, 28)), 0, 255).astype(np.uint8)
        return images, labels

    from normlab.data import Dataset
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = draw(n_train), draw(n_val), draw(n_test)
    return Dataset(x_train, y_train, x_test, y_test, x_val, y_val, class_names=[str(c) for c in range(10)],
                   name="synthetic", every_class=False)


def preset_data(name: str):
    """The images and classes a preset is built for: CIFAR-10's for the ResNets (their 8x8 average pooling fits
    32x32 images only, as in Keras' example), the default dataset's (None) for the others."""
    from normlab.data.registry import shape
    from normlab.nn import resnets
    return shape(resnets.DATA) if name in resnets.PRESETS else None


@pytest.fixture(scope="session")
def small_data():
    return synthetic_data()


@pytest.fixture(scope="session")
def real_data():
    from normlab.data import load
    from normlab.errors import DataError
    try:
        return load(download=False)
    except DataError as error:
        pytest.skip(f"real Fashion-MNIST not found ({error}); `make test` fetches it")


def cache_home(folder):
    """``folder`` made a ``$XDG_CACHE_HOME`` for `normlab` processes: a Fashion-MNIST the user downloaded is linked
    in, so it is found as before, and so are the built GEMM extension (``make setup``) and matplotlib's font list,
    which a process would otherwise rebuild, saying so on stderr."""
    import matplotlib.font_manager  # builds matplotlib's font list if it is missing
    from normlab.data.fashion_mnist import cache_dir
    from normlab.engine.build import build_dir
    from normlab.files import cache_root
    (folder / "normlab").mkdir(parents=True, exist_ok=True)
    links = {folder / "normlab" / "fashion-mnist": cache_dir() if cache_dir().is_dir() else None,
             build_dir(folder / "normlab"): build_dir(cache_root()) if build_dir(cache_root()).is_dir() else None,
             folder / "matplotlib": Path(matplotlib.get_cachedir())}
    for link, target in links.items():
        if target is not None:
            with contextlib.suppress(FileExistsError):  # made by another test worker meanwhile
                link.symlink_to(target)
    return folder


@pytest.fixture(scope="session")
def cli_env(tmp_path_factory):
    """For `normlab` subprocesses: one XLA compile cache for the whole session (``$XDG_CACHE_HOME/normlab/xla``),
    so a program that many test processes need is compiled once (bn-after's ~30 programs: 11 s cold, 2 s from the
    cache), and the user's own cache is left alone."""
    return {**os.environ, "XDG_CACHE_HOME": str(cache_home(shared_folder(tmp_path_factory, "xdg-cache")))}


def shared_folder(tmp_path_factory, name: str) -> Path:
    """A folder of this test session that every pytest-xdist worker shares (each has its own basetemp below
    one root), so a program one worker compiled is not compiled again by the other."""
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / name
    folder.mkdir(exist_ok=True)
    return folder


NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def idx_bytes(array: np.ndarray) -> bytes:
    """An independent IDX writer: magic 0x0000, type 0x08 (uint8), ndim, big-endian sizes, data."""
    return struct.pack(f">HBB{array.ndim}I", 0, 8, array.ndim, *array.shape) + array.astype(np.uint8).tobytes()


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory):
    """Well-formed files of the right shapes but synthetic content (so their SHA-256 is not Fashion-MNIST's)."""
    folder = tmp_path_factory.mktemp("synthetic")
    rng = np.random.default_rng(0)
    for name, n in zip(NAMES, (60000, 60000, 10000, 10000)):
        shape = (n, 28, 28) if "images" in name else (n,)
        high = 256 if "images" in name else 10
        (folder / name).write_bytes(idx_bytes(rng.integers(0, high, shape)))
    return folder


@pytest.fixture
def data_dir(synthetic_dir, tmp_path):
    folder = tmp_path / "data"
    shutil.copytree(synthetic_dir, folder)
    return folder


# The example of a study with a model of its own: Keras counts it 412,234 / 409,642 / 2,592.
WIDE_BN_STUDY = """
[models.wide-bn]
layers = [
  {kind = "flatten"},
  {kind = "batch_norm"},
  {kind = "dense", units = 512, activation = "relu"},
  {kind = "batch_norm", momentum = 0.9},
  {kind = "dense", units = 10, activation = "softmax"},
]

[config]
presets = ["wide-bn", "bn-after"]
"""


# The longest files (1-3 minutes each on 2 cores; --durations=0 of the suite at this commit), handed to the workers
# first: a long one taken last would leave the other worker idle at the end (the CI run at a560bb8 spent its last 8
# minutes on two of them).
LONGEST_FIRST = ("tests/experiments/test_workers.py", "tests/bench/test_bench.py", "tests/test_safe_writes.py",
                 "tests/test_hostile.py", "tests/experiments/test_ray_pool.py", "tests/test_crash_safety.py",
                 "tests/test_notebook.py", "tests/test_api_reference.py", "tests/train/test_parallel.py",
                 "tests/test_processes_hostile.py", "tests/engine/test_tune.py")


def pytest_collection_modifyitems(config, items):
    """Under `make test` (pytest-xdist, ``--dist loadfile``: a file's tests stay on one worker, so the fixtures a
    file shares, a trained run or a diagnosis, are made once) the longest files are handed out first."""
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable: file order kept
