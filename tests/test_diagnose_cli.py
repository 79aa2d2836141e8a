"""`normlab diagnose` end to end on tiny models (a study's own) and synthetic data files: what it writes, how it
resumes, and that bad options and folders are one-line errors that write nothing."""

import json
import shutil

import pytest

from clitools import tree
from normlab.cli import main
from normlab.data import content_digest, load

TINY_STUDY = """
[models.tiny]
layers = [{kind = "flatten"}, {kind = "dense", units = 8, activation = "relu"},
          {kind = "dense", units = 10, activation = "softmax"}]

[models.tiny-bn]
layers = [{kind = "flatten"}, {kind = "batch_norm"}, {kind = "dense", units = 8, activation = "relu"},
          {kind = "batch_norm"}, {kind = "dense", units = 10, activation = "softmax"}]

[config]
epochs = 2
subset = 200
batch_size = 16

[diagnose]
presets = ["tiny", "tiny-bn"]
seeds = 2
every = 5
etas = [0.01, 0.1]
precise_batches = 3
"""


@pytest.fixture
def study(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_STUDY)
    return path


def diagnose(study, data_dir, out, *extra) -> int:
    return main(["diagnose", "--study", str(study), "--data-dir", str(data_dir), "--no-verify", "--out", str(out),
                 *extra])


@pytest.fixture(scope="module")
def diagnosed(tmp_path_factory, synthetic_dir):
    """One diagnosis of both tiny models, shared: the study file and the run folder."""
    folder = tmp_path_factory.mktemp("diagnosed")
    (folder / "tiny.toml").write_text(TINY_STUDY)
    assert diagnose(folder / "tiny.toml", synthetic_dir, folder / "out") == 0
    return folder / "tiny.toml", folder / "out"


def test_diagnose_writes_the_issues_schema_per_seed_and_step(diagnosed):
    _, out = diagnosed
    found = json.loads((out / "diagnostics.json").read_text())
    assert set(found) == {"schema", "provenance", "config", "data", "preprocessing", "presets"}
    assert set(found["presets"]) == {"tiny", "tiny-bn"}
    assert found["config"]["every"] == 5 and found["config"]["etas"] == [0.01, 0.1]
    steps_per_epoch = 13  # 200 images in batches of 16
    for name, entry in found["presets"].items():
        assert entry["seeds"] == [0, 1]
        assert entry["steps"] == [e * steps_per_epoch + s for e in range(2) for s in (0, 5, 10)]
        per_seed_and_step = [entry["val_accuracy"], entry["beta_smoothness"],
                             *(entry["percentiles"][f"p{q}"] for q in (15, 50, 85)),
                             *entry["landscape"].values(), *entry["gradient_predictiveness"].values(),
                             *(v for layer in entry["ics"].values() for v in layer.values())]
        for series in per_seed_and_step:
            assert len(series) == 2 and all(len(row) == 6 for row in series)
        assert set(entry["ics"]) == {"dense", "dense_1"}
        p15, p50, p85 = (entry["percentiles"][f"p{q}"] for q in (15, 50, 85))
        assert all(a <= b <= c for rows in zip(p15, p50, p85) for a, b, c in zip(*rows))
        low, high = entry["landscape"]["loss_min"], entry["landscape"]["loss_max"]
        assert all(a <= b for x, y in zip(low, high) for a, b in zip(x, y))
    assert found["presets"]["tiny"]["train_eval_gap"] is None
    gap = found["presets"]["tiny-bn"]["train_eval_gap"]
    assert set(gap) == {"batch_stats", "moving", "precise"} and all(len(rows) == 2 for rows in gap.values())
    assert gap["moving"] == found["presets"]["tiny-bn"]["history"]["val_accuracy"]
    assert {p.name for p in (out / "figures").iterdir()} >= {"accuracy.png", "landscape.png", "ics.png"}
    assert "Why BN helps here" in (out / "report.html").read_text()
    assert sorted(p.name for p in (out / "tensorboard" / "tiny-bn").iterdir()) == ["seed0", "seed1"]


def test_diagnose_records_the_data_it_trained_on(diagnosed, synthetic_dir):
    """As results.json: the 200 training images of the study's subset, and the digest of exactly those arrays."""
    _, out = diagnosed
    found = json.loads((out / "diagnostics.json").read_text())
    data = load(data_dir=synthetic_dir, download=False, verify=False)
    used = (data.x_train[:200], data.y_train[:200], data.x_val, data.y_val, data.x_test, data.y_test)
    assert found["data"]["sha256"] == content_digest(*used)
    assert (found["data"]["name"], found["data"]["verified"], found["data"]["subset"]) == ("fashion-mnist", False, 200)
    assert found["data"]["splits"] == {"train": 200, "validation": 5000, "test": 10000}
    assert found["preprocessing"] == {"scale": 1 / 255}
    assert "200 training (a subset), 5,000 validation, 10,000 test" in (out / "report.html").read_text()


def test_resume_keeps_finished_presets_and_a_rerun_needs_it(diagnosed, synthetic_dir, tmp_path, capsys):
    study, finished = diagnosed
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    first = json.loads((out / "presets" / "tiny.json").read_text())
    assert diagnose(study, synthetic_dir, out) == 2
    assert "add --resume" in capsys.readouterr().err
    (out / "diagnostics.json").unlink()  # as if interrupted after its presets
    assert diagnose(study, synthetic_dir, out, "--resume") == 0
    said = capsys.readouterr().out
    assert "tiny: kept from presets/tiny.json" in said and "tiny-bn: kept from presets/tiny-bn.json" in said
    assert json.loads((out / "presets" / "tiny.json").read_text()) == first
    assert set(json.loads((out / "diagnostics.json").read_text())["presets"]) == {"tiny", "tiny-bn"}


@pytest.mark.parametrize("options, differ", [
    (["--seeds", "1"], "seeds"), (["--every", "4"], "every"), (["--etas", "0.01"], "etas"), (["--unit", "3"], "unit"),
    (["--precise-batches", "2"], "precise_batches"), (["--lr", "0.01"], "learning_rate"), (["--epochs", "3"], "epochs"),
    (["--presets", "tiny"], "presets")])
@pytest.mark.parametrize("finished", [True, False], ids=["finished", "interrupted"])
def test_resume_with_other_settings_is_refused_before_anything_is_replaced(diagnosed, synthetic_dir, tmp_path, capsys,
                                                                           options, differ, finished):
    """Kept beside presets diagnosed anew, or replaced by them, finished presets would mix two configurations in
    diagnostics.json, its figures and TensorBoard."""
    study, done = diagnosed
    out = tmp_path / "out"
    shutil.copytree(done, out)
    if not finished:
        (out / "diagnostics.json").unlink()  # as if interrupted after its presets
    before = tree(out)
    code = diagnose(study, synthetic_dir, out, *options, "--resume")
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1 and "belongs to a different configuration (" in err, err
    assert differ in err.split("(")[1].split(" differ)")[0].split(", "), err
    assert tree(out) == before


@pytest.mark.parametrize("options, message", [
    (["--etas", "0.1,x"], "--etas: 'x' is not a number"),
    (["--etas", "0.1,-1"], "--etas: etas must be a list of 1..64 step sizes"),
    (["--etas", "inf"], "--etas: etas must be a list"),
    (["--every", "0"], "--every: every must be an int in 1.."),
    (["--unit", "8"], "unit 8: model tiny's last hidden layer has 8 units (0..7)"),
    (["--seeds", "0"], "--seeds: seeds must be an int in 1.."),
    (["--presets", "tiny,nope"], "unknown preset 'nope'"),
    (["--precise-batches", "-1"], "--precise-batches: precise_batches must be an int in 1.."),
])
def test_bad_options_are_one_line_errors(study, data_dir, tmp_path, options, message, capsys):
    out = tmp_path / "out"
    assert diagnose(study, data_dir, out, *options) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (out / "presets").exists()


def test_a_bad_diagnose_table_is_a_one_line_error(study, data_dir, tmp_path, capsys):
    for edit, message in ((("every = 5", "evry = 5"), "unknown diagnose key 'evry'; did you mean 'every'?"),
                          (("presets = [\"tiny\", \"tiny-bn\"]", "presets = [\"tiny\", \"tiny\"]"), "distinct"),
                          (("\"tiny-bn\"]\nseeds", "\"tiny-bm\"]\nseeds"), "unknown preset 'tiny-bm'")):
        study.write_text(TINY_STUDY.replace(*edit))
        assert diagnose(study, data_dir, tmp_path / "out") == 2
        err = capsys.readouterr().err.strip()
        assert "[diagnose]" in err and message in err and len(err.splitlines()) == 1, err


def test_diagnose_refuses_a_folder_of_another_kind(study, data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert diagnose(study, data_dir, out) == 2
    assert "not a normlab run folder" in capsys.readouterr().err
    run = tmp_path / "r"  # a train or reproduce run's folder, as rundir recognizes one
    run.mkdir()
    (run / ".normlab-lock").write_text("")
    (run / "results.json").write_text("{}")
    assert diagnose(study, data_dir, run, "--resume") == 2
    assert "already holds a run; choose another --out" in capsys.readouterr().err
