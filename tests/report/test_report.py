"""The report layer on a synthetic study: every file is read back and checked against numbers computed here."""

import csv

import numpy as np
import pytest

from normlab.experiments.config import StudyConfig
from normlab.report import write_all
from normlab.report.stats import group_runs
from normlab.report.summary import reported_epochs, terminal_table

EPOCHS, SEEDS = 4, (0, 1, 2)
# Validation accuracy at epoch 1 rises 0.03 per epoch; seeds spread ±0.01 around it.
START = {"baseline": 0.70, "bn-after": 0.80}


def make_run(preset: str, seed: int, start: float) -> dict:
    val_acc = [start + 0.03 * e + 0.01 * (seed - 1) for e in range(EPOCHS)]
    return {
        "preset": preset,
        "seed": seed,
        "params": {"total": 10, "trainable": 8, "non_trainable": 2},
        "history": {
            "loss": [1.0 - a for a in val_acc],
            "accuracy": [a + 0.02 for a in val_acc],
            "val_loss": [1.1 - a for a in val_acc],
            "val_accuracy": val_acc,
        },
        "test": {"loss": 0.5 - 0.01 * seed, "accuracy": val_acc[-1] - 0.005},
        "time": {"compile_s": 2.0 + seed, "train_s": 10.0 * (seed + 1)},
    }


def make_results(runs: list[dict]) -> dict:
    return {
        "provenance": {"git_commit": "abc1234", "versions": {"jax": "0.4.30", "numpy": "2.0"},
                       "device": "cpu", "timestamp": "2024-01-01T00:00:00Z"},
        "config": StudyConfig(epochs=EPOCHS).as_dict(),  # the study's settings: report.md compares it with Keras
        "runs": runs,
    }


RESULTS = make_results([make_run(p, s, start) for p, start in START.items() for s in SEEDS])


def val_acc(results: dict, preset: str, epoch: int) -> np.ndarray:
    return np.array([r["history"]["val_accuracy"][epoch - 1] for r in results["runs"] if r["preset"] == preset])


def percent(values: np.ndarray) -> str:
    return f"{100 * np.mean(values):.2f} ± {100 * np.std(values, ddof=1 if len(values) > 1 else 0):.2f}"


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("report")
    paths = write_all(RESULTS, out_dir)
    assert all(p.exists() for p in paths)
    return out_dir


def test_history_csv_has_one_row_per_preset_seed_epoch(out):
    with open(out / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(START) * len(SEEDS) * EPOCHS
    assert list(rows[0]) == ["preset", "seed", "epoch", "loss", "accuracy", "val_loss", "val_accuracy"]
    row = next(r for r in rows if (r["preset"], r["seed"], r["epoch"]) == ("bn-after", "2", "3"))
    history = RESULTS["runs"][5]["history"]
    assert float(row["val_accuracy"]) == history["val_accuracy"][2]
    assert float(row["loss"]) == history["loss"][2]


@pytest.mark.parametrize("name", ["learning_curves.png", "val_accuracy.png"])
def test_figures_are_nontrivial_pngs(out, name):
    data = (out / name).read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 10_000


def test_figures_leave_no_pyplot_state(out):
    import matplotlib.pyplot as plt

    assert plt.get_fignums() == []


def test_report_shows_mean_std_and_gain(out):
    report = (out / "report.md").read_text()
    assert "70.00 ± 1.00" in report  # baseline, epoch 1: 69, 70, 71 %, sample std 1
    for preset in START:
        for epoch in (1, EPOCHS):
            assert percent(val_acc(RESULTS, preset, epoch)) in report
    gain = 100 * (val_acc(RESULTS, "bn-after", EPOCHS).mean() - val_acc(RESULTS, "baseline", EPOCHS).mean())
    assert f"+{gain:.2f} pp" in report and gain > 0
    assert "![validation accuracy](val_accuracy.png)" in report
    assert "| baseline | 71.60 | 70.00 | -1.60 pp | 83.96 | — | — |" in report  # 4 epochs never reach 10
    assert "abc1234" in report and "jax 0.4.30" in report


def test_single_seed_shows_zero_std_and_negative_gain(tmp_path):
    worse = make_run("bn-before", 1, 0.60)
    write_all(make_results([*RESULTS["runs"], worse]), tmp_path)
    report = (tmp_path / "report.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| bn-before | 1 |"))
    assert f"{100 * worse['history']['val_accuracy'][0]:.2f} ± 0.00" in row
    assert "| -10.00 pp |" in row  # 60 % vs the baseline mean of 70 % at epoch 1


def terminal_rows(results: dict) -> dict[str, dict[str, str]]:
    """preset -> {column header: cell} of the table `reproduce` prints."""
    table = terminal_table(group_runs(results))
    return {row[0]: {c.header: cell for c, cell in zip(table.columns, row)} for row in table.rows}


def test_without_baseline_there_is_no_gain():
    results = make_results([r for r in RESULTS["runs"] if r["preset"] != "baseline"])
    assert [(row["gain ep 1"], row["gain final"]) for row in terminal_rows(results).values()] == [("—", "—")]


def test_terminal_table():
    rows = terminal_rows(RESULTS)
    assert list(rows) == list(START)
    assert terminal_table(group_runs(RESULTS)).title.startswith(f"after {EPOCHS} epochs")
    after = rows["bn-after"]
    assert after["n"] == "3" and after["val acc"] == percent(val_acc(RESULTS, "bn-after", EPOCHS))
    tests = np.array([r["test"]["accuracy"] for r in RESULTS["runs"] if r["preset"] == "bn-after"])
    assert after["test acc"] == percent(tests)
    assert after["gain ep 1"] == "+10.00" and rows["baseline"]["gain final"] == "+0.00"
    assert after["train s"] == "20.0" and after["compile s"] == "3.0"


@pytest.mark.parametrize("n_epochs, expected", [(1, [1]), (4, [1, 4]), (10, [1, 5, 10]), (12, [1, 5, 10, 12])])
def test_reported_epochs(n_epochs, expected):
    assert reported_epochs(n_epochs) == expected
