"""Statistics over seeds: the one place where runs become per-preset means and standard deviations.

Every number in the plots, the Markdown report and the CLI summary comes from here, so they always agree.
The spread is the sample standard deviation over seeds (ddof=1; shown as 0 for a single seed), and every
table shows n next to it. Runs that diverged (non-finite loss) are left out of every mean and listed apart; when
every run diverged there is no row, no curve and no mean, and each writer says so instead.
"""

import numpy as np

HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")
BASELINE = "baseline"


def completed(results: dict) -> list[dict]:
    return [run for run in results["runs"] if run.get("status", "ok") != "diverged"]


def diverged(results: dict) -> list[dict]:
    return [run for run in results["runs"] if run.get("status", "ok") == "diverged"]


def group_runs(results: dict) -> dict[str, list[dict]]:
    """Completed runs by preset, in order of first appearance: that order fixes table rows and plot colours."""
    groups: dict[str, list[dict]] = {}
    for run in completed(results):
        groups.setdefault(run["preset"], []).append(run)
    return groups


def num_epochs(results: dict) -> int:
    """Epochs every completed run has: the shortest history, so any epoch below it exists for every preset; 0 when
    no run completed."""
    return min((len(run["history"]["val_accuracy"]) for run in completed(results)), default=0)


def mean_std(values) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample std (ddof=1) over the first axis (seeds); per epoch for histories.

    A single seed, or identical values, give a std of exactly 0 and the value itself as the mean, not a
    rounding residue of either.
    """
    a = np.asarray(values, dtype=np.float64)
    if len(a) == 1:
        return a[0], np.zeros_like(a[0])
    same = a.min(axis=0) == a.max(axis=0)
    return np.where(same, a[0], a.mean(axis=0)), np.where(same, 0.0, a.std(axis=0, ddof=1))


def history_stats(runs: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-epoch mean and spread of one history metric over a preset's seeds, for the epochs all of them have
    (studies merged from runs of different lengths)."""
    epochs = min(len(run["history"][key]) for run in runs)
    return mean_std([run["history"][key][:epochs] for run in runs])


def test_stats(runs: list[dict], key: str = "accuracy") -> tuple[float, float]:
    """Mean and spread of a test metric over a preset's seeds."""
    mean, std = mean_std([run["test"][key] for run in runs])
    return float(mean), float(std)


def gain_pp(groups: dict[str, list[dict]], preset: str, epoch: int) -> float | None:
    """Mean validation accuracy of `preset` minus the baseline's at a 1-based epoch, in percentage points.

    None when the study has no baseline to compare against.
    """
    if BASELINE not in groups:
        return None
    ours, _ = history_stats(groups[preset], "val_accuracy")
    base, _ = history_stats(groups[BASELINE], "val_accuracy")
    return 100.0 * float(ours[epoch - 1] - base[epoch - 1])


def summary_rows(results: dict) -> list[dict]:
    """One row per preset with a completed run, for the CLI table: accuracies as fractions, gains in pp, times in
    seconds. Empty when every run diverged."""
    groups, final = group_runs(results), num_epochs(results)
    rows = []
    for preset, runs in groups.items():
        val_mean, val_std = history_stats(runs, "val_accuracy")
        test_mean, test_std = test_stats(runs)
        rows.append({
            "preset": preset,
            "n": len(runs),
            "final_val_accuracy_mean": float(val_mean[final - 1]),
            "final_val_accuracy_std": float(val_std[final - 1]),
            "test_accuracy_mean": test_mean,
            "test_accuracy_std": test_std,
            "gain_epoch1_pp": gain_pp(groups, preset, 1),
            "gain_final_pp": gain_pp(groups, preset, final),
            "train_s_mean": float(np.mean([run["time"]["train_s"] for run in runs])),
            "compile_s_mean": float(np.mean([run["time"]["compile_s"] for run in runs])),
        })
    return rows
