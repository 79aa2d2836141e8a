"""The BLAS GEMM custom call against NumPy float64, and training through it against XLA's own GEMM."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from normlab.engine import blas, gemm
from normlab.engine.build import BuildError, build

try:
    build()
    INSTALLED = blas.installed()
except BuildError as error:
    INSTALLED, WHY = [], str(error)
needs_blas = pytest.mark.skipif(not INSTALLED, reason="no BLAS GEMM extension here (no compiler or no BLAS)")


@pytest.fixture
def using():
    """``using(name)``: products through ``name`` for programs traced in the test; XLA's again afterwards."""
    yield gemm.use
    gemm.use("xla")


@needs_blas
@pytest.mark.parametrize("name", INSTALLED)
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("m,k,n", [(32, 784, 300), (33, 70, 129), (1, 5, 1), (7, 0, 9)])
def test_products_match_float64(using, name, trans_a, trans_b, m, k, n):
    """Every orientation, a split product (n >= 128 runs in parts on two cores), odd and empty shapes, and a batch
    of 3 (vmapped seeds) through ``vmap``."""
    using(name)
    rng = np.random.default_rng(m * 1000 + n)
    a = rng.normal(size=(3, k, m) if trans_a else (3, m, k)).astype(np.float32)
    b = rng.normal(size=(3, n, k) if trans_b else (3, k, n)).astype(np.float32)
    want = np.matmul(np.swapaxes(a, 1, 2) if trans_a else a, np.swapaxes(b, 1, 2) if trans_b else b,
                     dtype=np.float64)
    got = np.asarray(jax.jit(jax.vmap(lambda a, b: gemm.product(a, b, trans_a, trans_b)))(a, b))
    assert got.shape == want.shape == (3, m, n)
    np.testing.assert_allclose(got, want, rtol=0, atol=rounding_of_sums(want, k))


@needs_blas
@pytest.mark.parametrize("name", INSTALLED)
def test_the_layer_gradients_match_float64(using, name):
    """``matmul``'s custom VJP through the BLAS: dx = g W^T, dW = x^T g."""
    using(name)
    rng = np.random.default_rng(1)
    x, w, g = (rng.normal(size=s).astype(np.float32) for s in ((32, 300), (300, 100), (32, 100)))
    y, vjp = jax.vjp(gemm.matmul, jnp.asarray(x), jnp.asarray(w))
    dx, dw = vjp(jnp.asarray(g))
    x64, w64, g64 = (v.astype(np.float64) for v in (x, w, g))
    for got, want, k in ((y, x64 @ w64, 300), (dx, g64 @ w64.T, 100), (dw, x64.T @ g64, 32)):
        np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=rounding_of_sums(want, k))


def rounding_of_sums(want, k: int) -> float:
    """A bound on float32 rounding in products whose entries sum k terms, as large as ``want``'s: it grows with
    sqrt(k) (a fixed 1e-4 was 2.6x the 3.8e-5 a 300-term sum rounded by); a wrong operand errs by ~|want|."""
    return 1e-5 * max(1.0, np.abs(want).max()) * np.sqrt(max(k, 1))


@needs_blas
@pytest.mark.parametrize("name", INSTALLED)
def test_a_stepped_product_matches_float64_and_leaves_a_kernel_still_read_intact(using, name):
    """``w + step * x^T g`` in w's buffer, for 3 vmapped seeds each with its own step; ``w`` read again after the
    call (XLA must copy it first, not let the call overwrite it), and a step shared by the seeds (broadcast)."""
    using(name)
    rng = np.random.default_rng(2)
    x, g = rng.normal(size=(3, 32, 784)).astype(np.float32), rng.normal(size=(3, 32, 300)).astype(np.float32)
    w = rng.normal(size=(3, 784, 300)).astype(np.float32)
    steps = np.array([-1e-3, -0.5, 0.0], np.float32)
    stepped, w_after = jax.jit(jax.vmap(lambda w, x, g, s: (gemm.stepped_product(w, x, g, s, trans_a=True), w * 1)))(
        w, x, g, steps)
    want = w + steps[:, None, None] * np.matmul(np.swapaxes(x, 1, 2), g, dtype=np.float64)
    np.testing.assert_allclose(np.asarray(stepped), want, rtol=0, atol=1e-5 * 0.5 * np.sqrt(32) * 4)
    np.testing.assert_array_equal(np.asarray(w_after), w)
    np.testing.assert_array_equal(np.asarray(stepped)[2], w[2])
    shared = jax.jit(jax.vmap(lambda w, x, g: gemm.stepped_product(w, x, g, -0.5, trans_a=True)))(w, x, g)
    np.testing.assert_array_equal(np.asarray(shared)[1], np.asarray(stepped)[1])


@needs_blas
@pytest.mark.parametrize("name", INSTALLED)
def test_training_through_the_blas_follows_xla_to_float32_rounding(using, small_data, name):
    """bn-after, 2 seeds vmapped, one epoch of 19 steps of fit's program (``seeds_epoch``): the same weights as with
    XLA's GEMM, to float32 rounding (the GEMMs sum in different orders, so not bit for bit), whether the kernels
    take their SGD step in the weight-gradient GEMM (fit's program on a BLAS) or after it (``make_epoch``)."""
    from normlab.experiments.config import StudyConfig
    from normlab.train.loop import make_epoch, make_optimizer, seeds_epoch
    from normlab.train.state import create
    config = StudyConfig(epochs=1)
    train, model = config.train_config(), config.model("bn-after")
    optimizer = make_optimizer(train)
    images, labels = jnp.asarray(small_data.x_train), jnp.asarray(small_data.y_train)
    state = jax.vmap(lambda seed: create(model, optimizer, seed))(jnp.arange(2, dtype=jnp.uint32))
    unfolded = jax.jit(jax.vmap(make_epoch(model, optimizer, len(labels), 32), in_axes=(0, None, None, None)))
    arguments = (state, images, labels, 0, jnp.float32(train.learning_rate))
    xla_state, xla_metrics = seeds_epoch(model, train, len(labels))(*arguments)
    using(name)
    fit = seeds_epoch(model, train, len(labels))
    assert gemm.STEP_TARGET in fit.lower(*arguments).as_text()  # the kernels' steps are in their GEMMs
    for program, arguments in ((fit, arguments), (unfolded, arguments[:4])):
        got_state, metrics = program(*arguments)
        for want, got in zip(jax.tree.leaves(xla_state.params), jax.tree.leaves(got_state.params)):
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=2e-5)
        np.testing.assert_allclose(np.asarray(metrics["loss"]), np.asarray(xla_metrics["loss"]), rtol=1e-5)


@needs_blas
def test_a_run_records_its_engine_and_trains_like_xla(tmp_path, cli_env):
    """`normlab train` with NORMLAB_ENGINE=gemm=<a BLAS>: the run's provenance names it; the history is XLA's to
    float32 rounding."""
    histories = {}
    for name in ("xla", INSTALLED[0]):
        out = tmp_path / name
        env = {**cli_env, "NORMLAB_ENGINE": f"gemm={name},flags=no-library-fusion"}
        subprocess.run([sys.executable, "-m", "normlab.cli", "train", "bn-after", "--subset", "2000",
                        "--epochs", "1", "--out", str(out)], env=env, check=True, capture_output=True)
        results = json.loads((out / "results.json").read_text())
        assert results["provenance"]["engine"]["gemm"] == name
        assert results["provenance"]["engine"]["source"] == "NORMLAB_ENGINE"
        histories[name] = results["runs"][0]["history"]
    for metric, values in histories["xla"].items():  # measured: losses 1e-7 apart, the same accuracies; 2e-3 lets
        # an accuracy move by the 5 of 2,000 predictions rounding could tip, far fewer than a wrong product moves
        np.testing.assert_allclose(histories[INSTALLED[0]][metric], values, rtol=2e-3, atol=1e-3)


def test_an_unknown_engine_is_one_line(tmp_path, cli_env):
    done = subprocess.run([sys.executable, "-m", "normlab.cli", "train", "bn-after", "--epochs", "1", "--subset", "100",
                           "--out", str(tmp_path / "run")], env={**cli_env, "NORMLAB_ENGINE": "gemm=cuda"},
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr == "normlab: error: NORMLAB_ENGINE: unknown gemm 'cuda'; choose from xla, mkl, openblas\n"
    assert not (tmp_path / "run").exists()


def test_a_blas_that_cannot_load_falls_back_to_xla(monkeypatch):
    from normlab import runtime
    monkeypatch.setattr(blas, "mkl_library", lambda: None)
    monkeypatch.setattr(gemm, "_loaded", {})  # as in a fresh process
    monkeypatch.setenv("NORMLAB_ENGINE", "gemm=mkl")
    for name in ("XLA_FLAGS", runtime.USER_FLAGS):  # configure sets them: restored after the test
        monkeypatch.setenv(name, os.environ.get(name, ""))
    said = []
    try:
        engine = runtime.configure(say=said.append)
    finally:
        gemm.use("xla")
    assert engine.gemm == "xla" and engine.source == "NORMLAB_ENGINE; mkl unavailable"
    assert said == ["normlab: the mkl GEMM is unavailable here (MKL is not installed (pip install mkl)); "
                    "using XLA's"]


def test_usable_skips_a_blas_that_cannot_load_and_restores_the_choice(monkeypatch):
    monkeypatch.setattr(blas, "mkl_library", lambda: None)
    monkeypatch.setattr(gemm, "_loaded", {})  # as in a fresh process
    seen = [(name, gemm.chosen()) for name in gemm.usable(("mkl", "xla"))]
    assert seen == [("xla", "xla")] and gemm.chosen() == "xla"
    if "openblas" in INSTALLED:
        seen = [(name, gemm.chosen()) for name in gemm.usable(("openblas", "xla"))]
        assert seen == [("openblas", "openblas"), ("xla", "xla")] and gemm.chosen() == "xla"
