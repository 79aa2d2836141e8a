"""Models defined in a study file, as every command meets them: summary, inspect, train, run and bench options."""

import json
import subprocess
import sys

import pytest

from conftest import WIDE_BN_STUDY
from normlab.cli import main


@pytest.fixture
def study(tmp_path):
    path = tmp_path / "wide.toml"
    path.write_text(WIDE_BN_STUDY)
    return path


def test_summary_of_a_study_model_has_keras_totals(study, capsys):
    assert main(["summary", "wide-bn", "--study", str(study)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-3:] == ["Total params: 412,234", "Trainable params: 409,642", "Non-trainable params: 2,592"]


def test_inspect_of_a_study_model(study, capsys):
    assert main(["inspect", "wide-bn", "--study", str(study)]) == 0
    out = capsys.readouterr().out
    assert "dense/kernel" in out and "(784, 512)" in out and "batch_normalization_1/moving_variance" in out


@pytest.mark.parametrize("edit, message", [
    (("wide-bn\", \"bn", "wide-b\", \"bn"), "unknown preset 'wide-b': did you mean 'wide-bn'?"),
    (("{kind = \"flatten\"}", "{kind = \"flaten\"}"), "unknown layer kind 'flaten'; did you mean 'flatten'?"),
    (("units = 512", "unit = 512"), "[models.wide-bn] layer 3 (dense): unknown option 'unit'; did you mean 'units'?"),
    (("units = 512", "units = 512.5"), "units must be an int in 1.."),
    (("momentum = 0.9", "momentum = inf"), "momentum must be a number in [0, 1), got inf"),
    (("momentum = 0.9", "momentum = 1e999"), "momentum must be a number in [0, 1), got inf"),
    (("[models.wide-bn]", "[models.baseline]"), "[models.baseline]: baseline is a built-in preset"),
    (("[models.wide-bn]", "[models.\"../up\"]"), "a model name must be a folder name"),
    (("layers = [", "layerz = ["), "must hold exactly one key, layers = [...]"),
    (("{kind = \"flatten\"},\n", ""), "needs a flat input, got shape (28, 28)"),
    (("units = 10,", "units = 11,"), "outputs shape (11,), but the loss needs 10 class scores"),
])
def test_bad_models_are_one_line_errors_with_exit_code_2(study, edit, message, capsys):
    study.write_text(WIDE_BN_STUDY.replace(*edit))
    for argv in (["summary", "wide-bn", "--study", str(study)], ["run", str(study), "--out", str(study.parent / "o")]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert not (study.parent / "o").exists()


@pytest.mark.full_data
def test_a_study_model_trains_with_run(real_data, study, tmp_path):
    """The issue's study, shortened (one seed, one epoch, 2,000 images) by the same file's [config]."""
    study.write_text(WIDE_BN_STUDY.replace('presets = ["wide-bn", "bn-after"]',
                                     'presets = ["wide-bn", "bn-after"]\nseeds = 1\nepochs = 1\nsubset = 2000'))
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "normlab.cli", "run", str(study), "--out", str(out)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    results = json.loads(next(out.rglob("results.json")).read_text())
    runs = {r["preset"]: r for r in results["runs"]}
    assert set(runs) == {"wide-bn", "bn-after"} and runs["wide-bn"]["params"]["total"] == 412_234
    assert all(0.2 < r["history"]["val_accuracy"][-1] <= 1 for r in runs.values())  # 63 steps: above chance (0.1)


NEW_PRESETS = ["cnn-baseline", "cnn-bn", "cnn-gn", "cnn-ln", "ln-after", "gn-after", "rms-after", "renorm-after",
               "ghost-after", "torch-bn-after"]


def test_every_norm_and_cnn_preset_trains_from_a_study_file(data_dir, tmp_path):
    """One seed, one short epoch each: a finite loss, an accuracy, and a checkpoint with the norms' state."""
    study = tmp_path / "zoo.toml"
    study.write_text(f"[config]\npresets = {json.dumps(NEW_PRESETS)}\nseeds = 1\nepochs = 1\nsubset = 96\n"
                     "batch_size = 32\nlearning_rate = 0.01\nworkers = 1\n")
    out = tmp_path / "out"
    assert main(["run", str(study), "--out", str(out), "--data-dir", str(data_dir), "--no-verify"]) == 0
    results = json.loads(next(out.glob("trials/*/results.json")).read_text())
    trained = {run["preset"]: run for run in results["runs"]}
    assert set(trained) == set(NEW_PRESETS)
    for run in trained.values():
        assert all(0 < loss < 10 for loss in run["history"]["loss"]) and 0 <= run["history"]["val_accuracy"][-1] <= 1
