"""Data-parallel training (``train.parallel``) on 4 CPU devices against the same batch on one device.

``--bn-sync`` on 4 x 8 rows must give one device's loss, gradients and moving statistics at 32 rows; ``--bn-local``
one device's with ghost batch norm of virtual batch 8 (itself checked against NumPy float64 in the norm tests);
each with every row real and with a padded last batch whose last device holds padding only; and fit's whole epoch
program (2 vmapped seeds, 10 steps, a partial last batch, also normalized and augmented) the single-device
program's weights.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agreement import TRAINING_FLIPS, assert_counts_agree
from clitools import free_port

CHECK = Path(__file__).with_name("data_parallel_check.py")
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def differences(cli_env):
    done = subprocess.run([sys.executable, str(CHECK)], env=cli_env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("check", ["sync-keras-full", "sync-keras-partial", "sync-pytorch-full",
                                   "sync-pytorch-partial", "local-full", "local-partial",
                                   "sync-residual-partial"])
def test_one_step_matches_one_device(differences, check):
    assert differences[check] == pytest.approx({"loss": 0, "gradients": 0, "moving": 0}, abs=TOLERANCE)


def test_an_epoch_of_fit_matches_one_device(differences):
    epoch = dict(differences["epoch"])
    assert epoch.pop("accuracy_images") <= TRAINING_FLIPS  # predictions rounding may tip (``agreement``)
    assert epoch == pytest.approx({"weights": 0, "moving": 0, "loss": 0}, abs=TOLERANCE)


def test_an_augmented_epoch_matches_one_device(differences):
    """Normalized, cropped and flipped in the step: the draws are made for the whole batch, then split."""
    epoch = dict(differences["augmented-epoch"])
    assert epoch.pop("accuracy_images") <= TRAINING_FLIPS
    assert epoch == pytest.approx({"weights": 0, "moving": 0, "loss": 0}, abs=TOLERANCE)


def test_an_epoch_through_a_blas_gemm_matches_one_device_on_xlas(differences):
    """The engine's BLAS custom calls inside the sharded program (to float32 rounding, as ``engine/test_gemm``)."""
    blas = {name: got for name, got in differences.items() if name.startswith("epoch-")}
    if not blas:
        pytest.skip("no BLAS GEMM extension here")
    for got in map(dict, blas.values()):
        assert got.pop("accuracy_images") <= TRAINING_FLIPS
        assert got == pytest.approx({"weights": 0, "loss": 0}, abs=2e-5)


@pytest.mark.full_data
def test_two_processes_train_like_one(tmp_path, cli_env):
    """`normlab train --processes 2`: two local processes joined by ``jax.distributed`` (gloo), one CPU device
    each, batch 32 split 16 + 16 with synchronized BN: each writes the history one process writes alone."""
    common = ["train", "bn-after", "--subset", "640", "--epochs", "1"]
    address = f"127.0.0.1:{free_port()}"
    processes = [subprocess.Popen([sys.executable, "-m", "normlab.cli", *common, "--coordinator", address,
                                   "--processes", "2", "--process-id", str(index), "--join-timeout", "120",
                                   "--out", str(tmp_path / f"process-{index}")], env=cli_env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for index in (0, 1)]
    outputs = [process.communicate(timeout=600) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], [err for _, err in outputs]
    subprocess.run([sys.executable, "-m", "normlab.cli", *common, "--out", str(tmp_path / "one")], env=cli_env,
                   check=True, capture_output=True)
    want = json.loads((tmp_path / "one" / "results.json").read_text())["runs"][0]
    for index in (0, 1):
        results = json.loads((tmp_path / f"process-{index}" / "results.json").read_text())
        assert results["config"]["devices"] == 2 and results["config"]["bn_sync"] is True
        run = results["runs"][0]
        for metric in ("loss", "val_loss"):
            np.testing.assert_allclose(run["history"][metric], want["history"][metric], rtol=1e-5, atol=1e-6)
        for metric, n in (("accuracy", 640), ("val_accuracy", 5000)):  # counts of predictions rounding may tip
            for mine, theirs in zip(run["history"][metric], want["history"][metric], strict=True):
                assert_counts_agree(mine, theirs, n)
        assert_counts_agree(run["test"]["accuracy"], want["test"]["accuracy"], 10_000)


@pytest.mark.full_data
def test_a_study_file_asks_for_devices_before_jax_starts(tmp_path, cli_env):
    """`devices` set in a study's [config], not on the command line: the sweep still gets its virtual CPU devices
    (asked for before anything starts JAX), and trains its trials one at a time on them."""
    study = tmp_path / "dp.toml"
    study.write_text('name = "dp"\n[config]\npresets = ["bn-after"]\nseeds = 1\nepochs = 1\nsubset = 320\n'
                     'devices = 2\n[sweep]\nbn_sync = [true, false]\n')
    done = subprocess.run([sys.executable, "-m", "normlab.cli", "run", str(study), "--out", str(tmp_path / "dp")],
                          env=cli_env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    histories = {}
    for trial in ("000-bn_sync=True", "001-bn_sync=False"):
        results = json.loads((tmp_path / "dp" / "trials" / trial / "results.json").read_text())
        assert results["config"]["devices"] == 2
        histories[trial] = results["runs"][0]["history"]["loss"]
    assert histories["000-bn_sync=True"] != histories["001-bn_sync=False"]  # 2 x 16 rows normalized apart
