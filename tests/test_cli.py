"""The command line as a user meets it: exact Keras-style totals, one-line errors, and a real reproduce run."""

import json
import subprocess
import sys

import pytest

from normlab.cli import main

TOTALS = {
    "baseline": ("266,610", "266,610", "0"),
    "bn-after": ("271,346", "268,978", "2,368"),
    "bn-before": ("270,946", "268,578", "2,368"),
}


@pytest.mark.parametrize("preset", TOTALS)
def test_summary_ends_with_keras_totals(preset, capsys):
    assert main(["summary", preset]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    total, trainable, non_trainable = TOTALS[preset]
    assert lines[-3:] == [f"Total params: {total}", f"Trainable params: {trainable}",
                          f"Non-trainable params: {non_trainable}"]


def test_inspect_marks_moving_statistics_non_trainable(capsys):
    assert main(["inspect", "bn-after"]) == 0
    out = capsys.readouterr().out
    flags = {line.split()[0]: line.split()[-1] for line in out.splitlines()}
    assert flags["batch_normalization_2/moving_variance"] == "non-trainable"
    # 3 dense layers x (kernel, bias) + 3 BN x (gamma, beta) are trained; 3 BN x (moving mean, variance) are not
    assert sorted(flags.values()).count("trainable") == 3 * 2 + 3 * 2
    assert sorted(flags.values()).count("non-trainable") == 3 * 2


@pytest.mark.parametrize("argv,message", [
    (["summary", "bn-aftr"], "did you mean 'bn-after'"),
    (["reproduce", "--presets", "baseline,nope"], "unknown preset 'nope'"),
])
def test_user_errors_are_one_line_with_exit_code_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_a_bad_number_is_refused_by_the_config_naming_the_option():
    run = subprocess.run([sys.executable, "-m", "normlab.cli", "reproduce", "--seeds", "0"],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "--seeds: seeds must be an int in 1..1000" in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.full_data
def test_reproduce_writes_results_and_report(real_data, tmp_path):
    out = tmp_path / "run"
    assert main(["reproduce", "--presets", "baseline,bn-after", "--seeds", "2", "--epochs", "1",
                 "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert {"git_commit", "versions", "device", "timestamp"} <= set(results["provenance"])
    assert [(r["preset"], r["seed"]) for r in results["runs"]] == [("baseline", 0), ("baseline", 1),
                                                                  ("bn-after", 0), ("bn-after", 1)]
    run = results["runs"][3]
    assert run["params"] == {"total": 271_346, "trainable": 268_978, "non_trainable": 2_368}
    assert set(run["history"]) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert 0.75 < run["history"]["val_accuracy"][0] < 0.9  # epoch 1 of bn-after: about 0.82 in the study
    assert set(run["test"]) == {"loss", "accuracy"} and set(run["time"]) >= {"compile_s", "train_s"}
    for name in ("history.csv", "report.md", "learning_curves.png", "val_accuracy.png"):
        assert (out / name).stat().st_size > 0
    assert len(list((out / "tensorboard").rglob("events.out.tfevents.*"))) == 4
