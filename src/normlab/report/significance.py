r"""Is a difference between settings larger than the seed-to-seed noise? Intervals, Welch's test, effect sizes.

A study has a handful of seeds, so a mean needs an interval and a difference needs a test that does not assume
equal variances. Student's t distribution comes from the regularized incomplete beta function evaluated with
Lentz's continued fraction (Numerical Recipes, 3rd ed., §6.4), so the report needs nothing beyond NumPy at run
time; tests/report/test_significance.py checks every number here against ``scipy.stats``.

Undefined quantities are ``None``, never NaN: the std, interval, test and effect size of fewer than two values,
and the test and effect size when both groups have zero variance (identical values: the standard error is 0).
"""

import functools
import math
from dataclasses import dataclass

import numpy as np

from normlab.report.stats import mean_std

CONFIDENCE = 0.95
_TINY, _EPS = 1e-300, 1e-16


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of I_x(a, b) by the modified Lentz method; converges fast for x < (a+1)/(a+b+2)."""
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, 1000):
        even = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        odd = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        for coefficient in (even, odd):
            d = 1.0 + coefficient * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + coefficient / c
            c = c if abs(c) > _TINY else _TINY
            h *= c * d
        if abs(c * d - 1.0) < _EPS:
            break
    return h


def betainc(a: float, b: float, x: float, y: float | None = None) -> float:
    r"""Regularized incomplete beta $I_x(a, b) = \frac{1}{B(a,b)}\int_0^x t^{a-1}(1-t)^{b-1}\,dt$.

    ``y`` = 1 − x when the caller knows it more accurately than the subtraction would give it.
    """
    y = 1.0 - x if y is None else y
    if x <= 0.0 or y <= 0.0:
        return 0.0 if x <= 0.0 else 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(y))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, y) / b


def t_sf(t: float, df: float) -> float:
    r"""$P(T_\nu > t)$: for $t \ge 0$ it is $\tfrac12 I_{\nu/(\nu+t^2)}(\nu/2, \tfrac12)$; symmetric for $t < 0$."""
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t), t * t / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


def t_cdf(t: float, df: float) -> float:
    return t_sf(-t, df)


@functools.lru_cache(maxsize=256)
def t_ppf(p: float, df: float) -> float:
    """Quantile of Student's t: bisection on the tail probability (monotone, so it cannot fail to converge).

    Cached: every interval of a report asks for the same few (0.975, n − 1); one bisection costs about 1 ms.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p == 0.5:
        return 0.0
    tail, lo, hi = min(p, 1.0 - p), 0.0, 1.0
    while t_sf(hi, df) > tail:
        lo, hi = hi, 2.0 * hi
    while hi - lo > 1e-14 * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_sf(mid, df) > tail else (lo, mid)
    t = 0.5 * (lo + hi)
    return t if p > 0.5 else -t


@dataclass(frozen=True)
class Summary:
    """n values as mean, sample std and a confidence interval of the mean; None where undefined."""
    n: int
    mean: float | None
    std: float | None
    ci: tuple[float, float] | None


def summarize(values, confidence: float = CONFIDENCE) -> Summary:
    r"""$\bar x$, $s = \sqrt{\sum_i (x_i - \bar x)^2 / (n-1)}$ and $\bar x \pm t_{(1+c)/2,\,n-1}\, s/\sqrt n$.

    Identical values give s = 0 exactly (not a rounding residue) and the interval (x̄, x̄).
    """
    x = np.asarray(values, dtype=np.float64)
    if len(x) == 0:
        return Summary(0, None, None, None)
    mean, std = (float(v) for v in mean_std(x))
    if len(x) == 1:
        return Summary(1, mean, None, None)
    half = t_ppf((1.0 + confidence) / 2.0, len(x) - 1) * std / math.sqrt(len(x))
    return Summary(len(x), mean, std, (mean - half, mean + half))


@dataclass(frozen=True)
class Welch:
    t: float
    df: float
    p: float


def welch(a, b) -> Welch | None:
    r"""Welch's unequal-variance t-test of mean(a) − mean(b), two-sided.

    $t = (\bar a - \bar b)/\sqrt{v_a + v_b}$ with $v_i = s_i^2/n_i$; Welch–Satterthwaite
    $\nu = (v_a + v_b)^2 / \left(v_a^2/(n_a-1) + v_b^2/(n_b-1)\right)$; $p = 2\,P(T_\nu > |t|)$.
    None when a group has fewer than two values or both have zero variance (or spreads too small to square).
    """
    sa, sb = summarize(a), summarize(b)
    if sa.n < 2 or sb.n < 2:
        return None
    va, vb = sa.std**2 / sa.n, sb.std**2 / sb.n
    if va + vb == 0.0:  # identical values, or spreads so small (~1e-162) that their squares underflow
        return None
    t = (sa.mean - sb.mean) / math.sqrt(va + vb)
    share = va / (va + vb)  # df from the shares: the same value, and no underflow of va² for tiny spreads
    df = 1.0 / (share**2 / (sa.n - 1) + (1.0 - share) ** 2 / (sb.n - 1))
    return Welch(t, df, min(1.0, 2.0 * t_sf(abs(t), df)))


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
    if pooled == 0.0:  # as for `welch`
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
