"""Models defined in a study file, as every command meets them: summary, inspect, train, run and bench options."""

import json
import tomllib
import subprocess
import sys

import pytest

import normlab
from conftest import WIDE_BN_STUDY
from normlab.cli import main
from normlab.nn.models import build
from normlab.nn.registry import KINDS


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


RESIDUAL_STUDY = """
[models.res]
layers = [
  {kind = "reshape", target_shape = [28, 28, 1]},
  {kind = "conv2d", filters = 4, padding = "same", activation = "relu"},
  {kind = "residual", layers = [{kind = "conv2d", filters = 4, padding = "same"}, {kind = "batch_norm"}]},
  {kind = "flatten"},
  {kind = "dense", units = 10, activation = "softmax"},
]
"""


def test_summary_of_a_graph_shows_what_each_layer_reads_as_keras_functional_summary(tmp_path, capsys, monkeypatch):
    """The input first, then each layer with the layers it reads; a chain's table has no such column (Keras'
    Sequential summary)."""
    monkeypatch.setenv("COLUMNS", "160")  # rich's table width: one line per row
    study = tmp_path / "res.toml"
    study.write_text(RESIDUAL_STUDY)
    assert main(["summary", "res", "--study", str(study)]) == 0
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in capsys.readouterr().out.splitlines()
            if line.startswith("│")]
    assert [(row[0], row[-1]) for row in rows] == [
        ("input_layer (InputLayer)", "-"), ("reshape (Reshape)", "input_layer[0][0]"),
        ("conv2d (Conv2D)", "reshape[0][0]"), ("conv2d_1 (Conv2D)", "conv2d[0][0]"),
        ("batch_normalization (BatchNormalization)", "conv2d_1[0][0]"),
        ("add (Add)", "conv2d[0][0], batch_normalization[0][0]"), ("activation (Activation)", "add[0][0]"),
        ("flatten (Flatten)", "activation[0][0]"), ("dense (Dense)", "flatten[0][0]")]
    notebook = normlab.model("res", study).summary()  # the same rows, as text and as HTML
    assert "conv2d[0][0], batch_normalization[0][0]" in str(notebook) and "<th>Connected to</th>" in (
        notebook._repr_html_())
    assert main(["inspect", "res", "--study", str(study)]) == 0
    assert "batch_normalization/moving_variance" in capsys.readouterr().out
    assert main(["summary", "bn-after"]) == 0
    assert "Connected to" not in capsys.readouterr().out


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


# Every layer kind in one model, so one compiled program trains them all (each preset alone took 8 s to compile).
ZOO_STUDY = """
[models.zoo]
layers = [
  {kind = "reshape", target_shape = [28, 28, 1]},
  {kind = "conv2d", filters = 8, kernel_size = 3, padding = "same", use_bias = false},
  {kind = "batch_norm", convention = "pytorch"},
  {kind = "activation", activation = "relu"},
  {kind = "max_pool2d"},
  {kind = "conv2d", filters = 8, kernel_size = 3},
  {kind = "group_norm", groups = 4},
  {kind = "ghost_batch_norm", virtual_batch_size = 16},
  {kind = "max_pool2d"},
  {kind = "avg_pool2d", pool_size = 3, strides = 1, padding = "same"},
  {kind = "skip_init", init = 0.5},
  {kind = "global_avg_pool2d"},
  {kind = "flatten"},
  {kind = "layer_norm"},
  {kind = "covariate_noise"},
  {kind = "dense", units = 32, activation = "relu"},
  {kind = "residual", layers = [{kind = "dense", units = 32}, {kind = "dropout", rate = 0.5}]},
  {kind = "batch_renorm"},
  {kind = "rms_norm"},
  {kind = "leaky_relu"},
  {kind = "dense", units = 10, activation = "softmax"},
]

[config]
presets = ["zoo"]
seeds = 1
epochs = 1
subset = 96
batch_size = 32
learning_rate = 0.01
workers = 1
"""


def test_every_layer_kind_trains_from_a_study_file(data_dir, tmp_path):
    """One model with every kind, one seed, one short epoch: a finite loss, an accuracy, every norm's state."""
    study = tmp_path / "zoo.toml"
    study.write_text(ZOO_STUDY)
    out = tmp_path / "out"
    assert main(["run", str(study), "--out", str(out), "--data-dir", str(data_dir), "--no-verify"]) == 0
    results = json.loads(next(out.glob("trials/*/results.json")).read_text())
    trained = {run["preset"]: run for run in results["runs"]}
    zoo = build("zoo", tomllib.loads(ZOO_STUDY)["models"]["zoo"]["layers"])
    kinds = {node.spec["kind"] for node in zoo.graph}  # a block's layers, and the add that joins them
    assert kinds == set(KINDS) and set(trained) == {"zoo"}
    for run in trained.values():
        assert all(0 < loss < 10 for loss in run["history"]["loss"]) and 0 <= run["history"]["val_accuracy"][-1] <= 1
