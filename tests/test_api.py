"""The Python API (``import normlab``) beyond its doctests: results as arrays and frames, errors named the way the
caller spelled them, and the CLI and Python reaching the same functions."""

import json
import signal
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.figure import Figure

import normlab
from normlab.errors import ConfigError, DataError
from report.test_diverged import diverged_run, ok_run, study

MIXED = study([ok_run("baseline", 0), diverged_run("baseline", 1, 3), ok_run("bn-after", 0, start=0.8)])


def test_importing_normlab_imports_nothing_heavy():
    code = "import sys, normlab; print(sorted(m for m in ('jax', 'numpy', 'matplotlib', 'rich') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


@pytest.mark.parametrize("name", ["train", "data", "report"])
def test_a_public_function_is_not_hidden_by_its_namesake_subpackage(name):
    __import__(f"normlab.{name}")  # the subpackage normlab/NAME/ is loaded now
    assert callable(getattr(normlab, name)) and getattr(normlab, name).__module__.startswith("normlab.api")


def test_history_is_seeds_by_epochs_with_nan_after_divergence():
    results = normlab.Results(MIXED)
    history = results.history["baseline"]["val_accuracy"]
    assert history.shape == (2, 4) and results.seeds == {"baseline": [0, 1], "bn-after": [0]}
    np.testing.assert_allclose(history[0], [0.7, 0.72, 0.74, 0.76])
    np.testing.assert_allclose(history[1, :2], [0.71, 0.73])
    assert np.isnan(history[1, 2:]).all()  # diverged at epoch 3: epochs 1-2 kept
    assert np.isnan(results.test["baseline"]["accuracy"][1]) and results.test["bn-after"]["accuracy"][0] == 0.75


def test_tables_plots_and_frames():
    pandas = pytest.importorskip("pandas")
    results = normlab.Results(MIXED)
    frame = results.to_pandas()
    assert isinstance(frame, pandas.DataFrame) and len(frame) == 4 + 2 + 4  # every epoch each run has
    assert set(frame.columns) >= {"preset", "seed", "epoch", "status", "loss", "val_accuracy"}
    assert "Final accuracy" in str(results) and "<table" in results._repr_html_()
    assert all(isinstance(results.plot(metric), Figure) for metric in ("curves", "loss", "val_accuracy"))
    with pytest.raises(ConfigError, match="metric must be"):
        results.plot("val_acc")


@pytest.mark.parametrize("call, keyword", [
    (lambda: normlab.config(epochs=0), "epochs"),
    (lambda: normlab.config(learning_rate=float("inf")), "learning_rate"),
    (lambda: normlab.train("bn-after", batch_size=-1, out="never"), "batch_size"),
    (lambda: normlab.reproduce(seeds=0, out="never"), "seeds"),
    (lambda: normlab.diagnose(etas=[], out="never"), "etas"),
    (lambda: normlab.model("bn-afterr"), "did you mean 'bn-after'"),
    (lambda: normlab.export("no-such-run", format="pdf"), "format must be one of"),
    (lambda: normlab.load(123), "folder must be a path"),
    (lambda: normlab.run(None), "study must be a path"),
    (lambda: normlab.evaluate(None), "target must be a path"),
    (lambda: normlab.report(["runs", 3]), "folders must be a path"),
    (lambda: normlab.train("bn-after", out="a\0b"), "out must be a path"),
    (lambda: normlab.train("bn-after", config=5, out="never"), "config must be a StudyConfig"),
    (lambda: normlab.model(None), "a model is a preset's or study model's name"),
    # A flag is True or False: "no" would resume, 0 would not verify, without a word.
    (lambda: normlab.train("bn-after", resume="no", out="never"), "resume must be True or False, got 'no'"),
    (lambda: normlab.reproduce(verify=1, out="never"), "verify must be True or False, got 1"),
    (lambda: normlab.diagnose(progress=None, out="never"), "progress must be True or False, got None"),
    (lambda: normlab.run("seed", verify="yes", out="never"), "verify must be True or False"),
    (lambda: normlab.data(download=0), "download must be True or False"),
    (lambda: normlab.export("no-such-run", fold_bn="no"), "fold_bn must be True or False"),
    (lambda: normlab.evaluate("no-such-run", verify=[]), "verify must be True or False"),
    # What the command sets itself is refused, not dropped.
    (lambda: normlab.train("bn-after", presets=["baseline"], out="never"), "train trains one preset"),
    (lambda: normlab.train("bn-after", seeds=3, out="never"), "train trains one seed"),
    (lambda: normlab.train("bn-after", seed=1, first_seed=2, out="never"), "first_seed cannot be given here"),
    # Every argument is checked before the run folder is made.
    (lambda: normlab.train("bn-after", data_dir=123, out="never"), "data_dir must be a path"),
    (lambda: normlab.reproduce(data_dir=123, out="never"), "data_dir must be a path"),
    (lambda: normlab.diagnose(data_dir=123, out="never"), "data_dir must be a path"),
    (lambda: normlab.run("seed", data_dir=123, out="never"), "data_dir must be a path"),
])
def test_a_python_callers_mistake_is_a_one_line_error_naming_the_keyword(call, keyword, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as error:
        call()
    assert keyword in str(error.value) and "--" not in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "never").exists()


def test_a_call_that_fails_in_its_run_folder_leaves_no_folder_it_made(tmp_path):
    """The data folder is read once the run folder is claimed: its error leaves no folder holding only a lock."""
    with pytest.raises(DataError, match="missing"):
        normlab.train("bn-after", data_dir=tmp_path / "no-data", out=tmp_path / "runs" / "x", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_load_tells_what_a_folder_holds(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text(json.dumps(MIXED))
    assert isinstance(normlab.load(tmp_path / "run"), normlab.Results)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no results.json"):
        normlab.load(tmp_path / "empty")
    with pytest.raises(ConfigError, match="not a folder"):
        normlab.load(tmp_path / "missing")
    (tmp_path / "bad" / "results.json").parent.mkdir()
    (tmp_path / "bad" / "results.json").write_text("{")
    with pytest.raises(ConfigError):
        normlab.load(tmp_path / "bad")


def test_the_cli_names_flags_where_python_names_keywords(capsys):
    from normlab.cli import main
    assert main(["train", "bn-after", "--batch-size", "-1"]) == 2
    assert "--batch-size" in capsys.readouterr().err


@pytest.mark.full_data
def test_an_interrupted_call_keeps_its_epochs_and_says_how_to_resume(tmp_path, cli_env, real_data):
    """A notebook's interrupt (SIGINT) while the first epoch's checkpoint is written: the write completes, the call
    ends with a KeyboardInterrupt that names the resume call, and that call finishes the run from there."""
    stages, out = tmp_path / "stages", tmp_path / "run"
    call = f"import normlab; normlab.train('bn-after', epochs=2, subset=2000, out={str(out)!r}, progress=False)"
    env = {**cli_env, "NORMLAB_TEST_STAGES": str(stages), "NORMLAB_TEST_PAUSE_AT": "checkpoint-write"}
    proc = subprocess.Popen([sys.executable, "-c", call], env=env, stderr=subprocess.PIPE, text=True)
    from test_signals import wait_for_stage
    wait_for_stage(stages, "checkpoint-write", proc)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=600)[1]
    last = err.strip().splitlines()[-1]
    assert last.startswith("KeyboardInterrupt: interrupted by SIGINT; finished epochs are checkpointed"), err
    assert f"normlab.train(..., out={str(out)!r}, resume=True)" in last
    resumed = subprocess.run([sys.executable, "-c", call.replace("progress=False", "progress=False, resume=True")],
                             env=cli_env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    record = json.loads((out / "results.json").read_text())
    assert record["runs"][0]["time"]["resumed_from_epoch"] == 1 and len(record["runs"][0]["history"]["loss"]) == 2
