r"""Statistics over seeds: the one place where runs become means, spreads, intervals, tests and effect sizes.

Every number in the plots, the reports and the CLI tables comes from here, so they always agree. The spread is the
sample standard deviation over seeds (ddof=1), and every table shows n next to it. Runs that diverged are left
out of every statistic (`Run.diverged`) and listed apart; when every run diverged there is no row, no curve and no
mean, and each writer says so instead.

A study has a handful of seeds, so a mean needs an interval and a difference needs a test that does not assume
equal variances: Student's t quantiles and Welch's test come from ``scipy.stats`` (imported where a statistic needs
it: the import takes 1.5 s, and a one-seed run's report needs none). Undefined quantities are
``None``, never NaN: the std, interval, test and effect size of fewer than two values, and the test and effect
size when both groups have zero variance (identical values: the standard error is 0).
"""

import math
import warnings
from dataclasses import dataclass

import numpy as np

from normlab.report.results_json import Run, runs

BASELINE = "baseline"
CONFIDENCE = 0.95


def group_runs(results: dict) -> dict[str, list[Run]]:
    """Completed runs by preset, in order of first appearance: that order fixes table rows and plot colours."""
    groups: dict[str, list[Run]] = {}
    for run in runs(results):
        if not run.diverged:
            groups.setdefault(run.preset, []).append(run)
    return groups


def num_epochs(groups: dict[str, list[Run]]) -> int:
    """Epochs every completed run has: the shortest history, so any epoch below it exists for every preset; 0 when
    no run completed."""
    return min((len(run.history["val_accuracy"]) for group in groups.values() for run in group), default=0)


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


def history_stats(group: list[Run], key: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-epoch mean and spread of one history metric over a preset's seeds, for the epochs all of them have
    (studies merged from runs of different lengths)."""
    epochs = min(len(run.history[key]) for run in group)
    return mean_std([run.history[key][:epochs] for run in group])


def test_stats(group: list[Run]) -> tuple[float, float]:
    """Mean and spread of the test accuracy over a preset's seeds."""
    mean, std = mean_std([run.test["accuracy"] for run in group])
    return float(mean), float(std)


def gain_pp(groups: dict[str, list[Run]], preset: str, epoch: int) -> float | None:
    """Mean validation accuracy of `preset` minus the baseline's at a 1-based epoch, in percentage points.

    None when the study has no baseline to compare against.
    """
    if BASELINE not in groups:
        return None
    ours, _ = history_stats(groups[preset], "val_accuracy")
    base, _ = history_stats(groups[BASELINE], "val_accuracy")
    return 100.0 * float(ours[epoch - 1] - base[epoch - 1])


@dataclass(frozen=True)
class Summary:
    """n values as mean, sample std and a confidence interval of the mean; None where undefined."""
    n: int
    mean: float | None
    std: float | None
    ci: tuple[float, float] | None


def summarize(values, confidence: float = CONFIDENCE) -> Summary:
    r"""$\bar x$, $s = \sqrt{\sum_i (x_i - \bar x)^2 / (n-1)}$ and $\bar x \pm t_{(1+c)/2,\,n-1}\, s/\sqrt n$.

    A single value has a mean only; identical values give s = 0 exactly (not a rounding residue) and the interval
    (x̄, x̄).
    """
    x = np.asarray(values, dtype=np.float64)
    if len(x) == 0:
        return Summary(0, None, None, None)
    mean, std = (float(v) for v in mean_std(x))
    if len(x) == 1:
        return Summary(1, mean, None, None)
    from scipy import stats
    half = float(stats.t.ppf((1.0 + confidence) / 2.0, len(x) - 1)) * std / math.sqrt(len(x))
    return Summary(len(x), mean, std, (mean - half, mean + half))


@dataclass(frozen=True)
class Welch:
    t: float
    df: float
    p: float


def welch(a, b) -> Welch | None:
    r"""Welch's unequal-variance t-test of mean(a) − mean(b), two-sided (``scipy.stats.ttest_ind``).

    $t = (\bar a - \bar b)/\sqrt{v_a + v_b}$ with $v_i = s_i^2/n_i$; Welch–Satterthwaite
    $\nu = (v_a + v_b)^2 / \left(v_a^2/(n_a-1) + v_b^2/(n_b-1)\right)$; $p = 2\,P(T_\nu > |t|)$.
    None when a group has fewer than two values, or when $(v_a + v_b)^2$ is 0: both groups have zero variance
    (judged by `mean_std`: SciPy's own variance of identical values is a rounding residue, 1e-34 for three 0.1s,
    that makes t huge instead of undefined), or spreads are so small (below about 1e-77) that ν underflows to
    0/0, where SciPy puts a placeholder ν = 1. SciPy's precision warning for near-identical values is silenced:
    the cases it warns of are these, or ones where the other group's variance dominates.
    """
    sa, sb = summarize(a), summarize(b)
    if sa.n < 2 or sb.n < 2 or (sa.std**2 / sa.n + sb.std**2 / sb.n) ** 2 == 0.0:
        return None
    from scipy import stats
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.ttest_ind(np.asarray(a, np.float64), np.asarray(b, np.float64), equal_var=False)
    return Welch(float(result.statistic), float(result.df), float(result.pvalue))


def hedges_g(a, b) -> float | None:
    r"""Hedges' g: Cohen's d with the exact small-sample bias correction (Hedges 1981), a minus b.

    $d = (\bar a - \bar b)/s_p$, $s_p^2 = \frac{(n_a-1)s_a^2 + (n_b-1)s_b^2}{n_a+n_b-2}$;
    $g = J d$, $J = \frac{\Gamma(\nu/2)}{\sqrt{\nu/2}\,\Gamma((\nu-1)/2)}$, $\nu = n_a+n_b-2$
    ($J \approx 1 - 3/(4\nu - 1)$; 0.56 for two seeds each, 0.80 for three). None when undefined, as for `welch`.
    """
    sa, sb = summarize(a), summarize(b)
    if sa.n < 2 or sb.n < 2:
        return None
    nu = sa.n + sb.n - 2
    pooled = math.sqrt(((sa.n - 1) * sa.std**2 + (sb.n - 1) * sb.std**2) / nu)
    if pooled == 0.0:  # identical values, or spreads so small (~1e-162) that their squares underflow
        return None
    j = math.exp(math.lgamma(nu / 2) - math.lgamma((nu - 1) / 2)) / math.sqrt(nu / 2)
    return j * (sa.mean - sb.mean) / pooled


def epochs_to_reach(val_accuracy, threshold: float) -> int | None:
    """The first 1-based epoch whose validation accuracy is ≥ threshold; None if the run never got there."""
    return next((epoch for epoch, acc in enumerate(val_accuracy, 1) if acc >= threshold), None)


def reach_summary(histories, threshold: float) -> tuple[float | None, int, int]:
    """(mean epochs over the runs that reached the threshold or None, how many reached it, how many runs)."""
    epochs = [e for e in (epochs_to_reach(h, threshold) for h in histories) if e is not None]
    return (float(np.mean(epochs)) if epochs else None), len(epochs), len(histories)
