"""Every report writer when some or all runs diverged: a normal outcome, written up, never a crash.

Runs are shaped like experiments/reproduce.py's records: a run that diverged at epoch E keeps the E - 1 epochs
before it, has status "diverged" and no test result; one that diverged at epoch 1 has empty history lists.
"""

import csv
import json

import numpy as np
import pytest

from normlab.report import write_all
from normlab.report.hparams import write_hparams
from normlab.report.html import report_command, write_html, write_markdown_summary
from normlab.report.results_json import HISTORY_KEYS
from normlab.report.stats import group_runs
from normlab.report.summary import terminal_table

EPOCHS = 4


def ok_run(preset: str, seed: int, epochs: int = EPOCHS, start: float = 0.7) -> dict:
    val = [start + 0.02 * e + 0.01 * seed for e in range(epochs)]
    return {"preset": preset, "seed": seed, "status": "ok", "diverged_epoch": None,
            "setting": {"preset": preset, "learning_rate": 0.1},
            "history": {"loss": [1 - a for a in val], "accuracy": val, "val_loss": [1.1 - a for a in val],
                        "val_accuracy": val},
            "test": {"loss": 0.4, "accuracy": 0.75}, "time": {"compile_s": 1.0, "train_s": 2.0}}


def diverged_run(preset: str, seed: int, epoch: int) -> dict:
    run = ok_run(preset, seed, epochs=epoch - 1)
    run.update(status="diverged", diverged_epoch=epoch, test=None)
    return run


def study(runs: list[dict], trial: str = "t0") -> dict:
    return {"provenance": {"git_commit": "abc1234"}, "config": {"epochs": EPOCHS}, "study": {"trial": trial},
            "runs": runs}


ALL_DIVERGED = study([diverged_run("baseline", 0, 1), diverged_run("baseline", 1, 3), diverged_run("bn-after", 0, 1)])
# bn-after seed 1 ran 6 epochs where the others ran 4 (two studies merged): means use the 4 all of them have.
MIXED = study([ok_run("baseline", 0), diverged_run("baseline", 1, 1), ok_run("bn-after", 0, start=0.8),
               ok_run("bn-after", 1, epochs=6, start=0.8), diverged_run("bn-before", 0, 2)])
CASES = {"all diverged": ALL_DIVERGED, "mixed": MIXED}


def diverged_lines(results: dict, suffix: str = "") -> list[str]:
    """How the reports name diverged runs; the HTML page and its twin name settings ("baseline lr=0.1")."""
    return [f"{r['preset']}{suffix} seed {r['seed']} diverged at epoch {r['diverged_epoch']} (non-finite loss)"
            for r in results["runs"] if r["status"] == "diverged"]


@pytest.mark.parametrize("case", CASES)
def test_write_all_writes_every_file(case, tmp_path):
    results = CASES[case]
    paths = write_all(results, tmp_path)
    assert {p.name for p in paths} >= {"history.csv", "learning_curves.png", "val_accuracy.png", "report.md"}
    for name in ("learning_curves.png", "val_accuracy.png"):
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    with open(tmp_path / "history.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == sum(len(r["history"]["loss"]) for r in results["runs"])
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    for line in diverged_lines(results):
        assert f"- {line}" in report


def test_report_md_says_that_all_runs_diverged_and_has_no_table(tmp_path):
    write_all(ALL_DIVERGED, tmp_path)
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "Every run diverged (3 of 3)" in report
    assert "|" not in report and "val_accuracy.png" not in report  # no table of nothing, no empty figure
    assert "abc1234" in report


def test_report_md_of_a_mixed_study_averages_the_common_epochs(tmp_path):
    write_all(MIXED, tmp_path)
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    after = [r["history"]["val_accuracy"][EPOCHS - 1] for r in MIXED["runs"][2:4]]
    row = next(line for line in report.splitlines() if line.startswith("| bn-after | 2 |"))
    assert f"{100 * np.mean(after):.2f} ± {100 * np.std(after, ddof=1):.2f}" in row
    assert "| baseline | 1 |" in report and "| bn-before |" not in report  # bn-before never completed


def test_terminal_table_skips_presets_without_a_completed_run():
    assert terminal_table(group_runs(ALL_DIVERGED)).rows == ()
    rows = {row[0]: row for row in terminal_table(group_runs(MIXED)).rows}
    assert list(rows) == ["baseline", "bn-after"]
    assert rows["baseline"][1] == "1" and rows["bn-after"][1] == "2"
    baseline_final = MIXED["runs"][0]["history"]["val_accuracy"][EPOCHS - 1]
    after_final = np.mean([r["history"]["val_accuracy"][EPOCHS - 1] for r in MIXED["runs"][2:4]])
    assert rows["bn-after"][5] == f"{100 * (after_final - baseline_final):+.2f}"  # gain final
    for row in rows.values():
        assert "—" not in row and all(row)


@pytest.mark.parametrize("case", CASES)
def test_html_and_its_markdown_twin(case, tmp_path):
    results = CASES[case]
    page = write_html([results], tmp_path / "r.html").read_text(encoding="utf-8")
    summary = write_markdown_summary([results], tmp_path / "r.md").read_text(encoding="utf-8")
    for line in diverged_lines(results, " lr=0.1"):
        assert line in page and line in summary
    completed = any(r["status"] == "ok" for r in results["runs"])
    assert ("Every run diverged" in summary) is not completed and ("Every run diverged" in page) is not completed
    assert page.count("<img") == (1 if completed else 0)  # learning curves; one learning rate: no sweep plot


def test_sweep_plot_skips_a_swept_value_whose_runs_all_diverged(tmp_path):
    runs = [ok_run("baseline", 0), diverged_run("baseline", 0, 2)]
    runs[1]["setting"]["learning_rate"] = 10.0
    page = write_html([study(runs)], tmp_path / "r.html").read_text(encoding="utf-8")
    assert "Sweep over learning_rate" in page and page.count("<img") == 2
    everything_diverged = [diverged_run("baseline", 0, 2), diverged_run("baseline", 0, 1)]
    everything_diverged[1]["setting"]["learning_rate"] = 10.0
    page = write_html([study(everything_diverged)], tmp_path / "r.html").read_text(encoding="utf-8")
    assert "Sweep over" not in page and "<img" not in page


@pytest.mark.parametrize("case", CASES)
def test_report_command_on_saved_results(case, tmp_path):
    (tmp_path / "results.json").write_text(json.dumps(CASES[case]), encoding="utf-8")
    page = report_command([tmp_path])
    assert page == tmp_path / "summary.html" and page.with_suffix(".md").exists()


@pytest.mark.parametrize("case", CASES)
def test_hparams(case, tmp_path):
    results = CASES[case]
    write_hparams([results], tmp_path)
    seeds = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.glob("*/*/*"))
    assert seeds == sorted({f"t0/{r['preset']}/seed{r['seed']}" for r in results["runs"]})
    assert all(any(p.iterdir()) for p in tmp_path.glob("*/*/*"))


def test_history_keys_of_a_run_diverged_at_epoch_1_are_empty():
    """The fixture itself: what reproduce.run_records writes for a seed whose first epoch was non-finite."""
    run = diverged_run("x", 0, 1)
    assert all(run["history"][k] == [] for k in HISTORY_KEYS) and run["test"] is None
