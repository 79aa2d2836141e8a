"""significance.py against scipy.stats: quantiles, intervals, Welch's test and effect sizes on fixed data."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special, stats

from normlab.report.significance import (betainc, epochs_to_reach, hedges_g, reach_summary, summarize, t_cdf,
                                         t_ppf, welch)

PROBABILITIES = (1e-6, 0.001, 0.025, 0.1, 0.5, 0.6, 0.9, 0.975, 0.995, 0.9995)
# Final accuracies shaped like a study's: two seeds, unequal n, very unequal spreads, near-identical values.
SAMPLES = {
    "n2": [0.8712, 0.8694],
    "n3": [0.8402, 0.8391, 0.8433],
    "n5": [0.8715, 0.8741, 0.8690, 0.8722, 0.8702],
    "wide6": [0.80, 0.86, 0.83, 0.78, 0.88, 0.84],
    "tight4": [0.8500, 0.8501, 0.8499, 0.8500],
}
# scipy warns about catastrophic cancellation on (near-)identical samples; those cases are the point here.
NEAR_IDENTICAL = pytest.mark.filterwarnings("ignore:Precision loss occurred:RuntimeWarning")
PAIRS = [("n2", "n3"), ("n3", "n5"), ("n5", "wide6"), ("tight4", "wide6"), ("n2", "n2"), ("wide6", "tight4")]


@pytest.mark.parametrize("p", PROBABILITIES)
def test_t_quantile_matches_scipy_for_df_1_to_200(p):
    for df in range(1, 201):
        expected = stats.t.ppf(p, df)
        assert t_ppf(p, df) == pytest.approx(expected, rel=1e-9, abs=1e-6), df


@pytest.mark.parametrize("df", [1.0, 1.7, 2.5, 3.52, 9.9, 57.3, 199.5])
def test_t_quantile_and_cdf_at_fractional_df(df):
    for p in PROBABILITIES:
        assert t_ppf(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-9, abs=1e-6)
    for t in (-40.0, -3.0, -0.2, 0.0, 0.7, 1.96, 12.0):
        assert t_cdf(t, df) == pytest.approx(stats.t.cdf(t, df), rel=1e-10, abs=1e-14)


def test_incomplete_beta_matches_scipy():
    for a, b in ((0.5, 0.5), (1.0, 0.5), (3.5, 0.5), (100.0, 0.5), (2.0, 7.0)):
        for x in (0.0, 1e-6, 0.1, 0.5, 0.9, 0.999999, 1.0):
            assert betainc(a, b, x) == pytest.approx(special.betainc(a, b, x), rel=1e-12, abs=1e-15)


def test_t_quantile_rejects_probabilities_outside_0_1():
    for p in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError):
            t_ppf(p, 5)


@pytest.mark.parametrize("name", SAMPLES)
def test_summary_matches_numpy_and_scipy_interval(name):
    x = np.array(SAMPLES[name])
    s = summarize(x)
    assert s.n == len(x) and s.mean == pytest.approx(x.mean(), rel=1e-15)
    assert s.std == pytest.approx(x.std(ddof=1), rel=1e-12)
    low, high = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    assert s.ci == pytest.approx((low, high), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("a, b", PAIRS)
def test_welch_matches_scipy(a, b):
    ours, scipy = welch(SAMPLES[a], SAMPLES[b]), stats.ttest_ind(SAMPLES[a], SAMPLES[b], equal_var=False)
    assert ours.t == pytest.approx(scipy.statistic, rel=1e-10, abs=1e-12)
    assert ours.df == pytest.approx(scipy.df, rel=1e-10)
    assert ours.p == pytest.approx(scipy.pvalue, rel=1e-8, abs=1e-14)


@pytest.mark.parametrize("a, b", PAIRS)
def test_hedges_g_is_corrected_cohens_d(a, b):
    x, y = np.array(SAMPLES[a]), np.array(SAMPLES[b])
    nu = len(x) + len(y) - 2
    pooled = math.sqrt(((len(x) - 1) * x.var(ddof=1) + (len(y) - 1) * y.var(ddof=1)) / nu)
    j = special.gamma(nu / 2) / (math.sqrt(nu / 2) * special.gamma((nu - 1) / 2))
    g = hedges_g(x, y)
    assert g == pytest.approx(j * (x.mean() - y.mean()) / pooled, rel=1e-10, abs=1e-12)
    assert g == pytest.approx(-hedges_g(y, x), rel=1e-12, abs=1e-15)
    assert j == pytest.approx(1 - 3 / (4 * nu - 1), abs=0.01)


@NEAR_IDENTICAL
def test_zero_variance_is_defined_and_never_nan():
    same = summarize([0.8, 0.8, 0.8])
    assert (same.mean, same.std, same.ci) == (0.8, 0.0, (0.8, 0.8))
    assert welch([0.8, 0.8, 0.8], [0.8, 0.8]) is None and hedges_g([0.8] * 3, [0.7] * 3) is None
    # One group without spread still has a defined test: the other group carries the variance (as in scipy).
    w, ref = welch([0.8, 0.8, 0.8], SAMPLES["n3"]), stats.ttest_ind([0.8, 0.8, 0.8], SAMPLES["n3"], equal_var=False)
    assert (w.t, w.df, w.p) == pytest.approx((ref.statistic, ref.df, ref.pvalue), rel=1e-10)
    assert all(math.isfinite(v) for v in (w.t, w.df, w.p))


def test_single_and_no_values_leave_spread_interval_and_tests_undefined():
    assert summarize([0.81]) == summarize([0.81]).__class__(1, 0.81, None, None)
    assert summarize([]).mean is None
    assert welch([0.81], SAMPLES["n3"]) is None and hedges_g(SAMPLES["n3"], [0.81]) is None


@NEAR_IDENTICAL
@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.5, 0.95), min_size=2, max_size=8), st.lists(st.floats(0.5, 0.95), min_size=2, max_size=8))
def test_welch_matches_scipy_on_random_samples(a, b):
    ours = welch(a, b)
    if ours is None:
        assert min(a) == max(a) and min(b) == max(b)
        return
    scipy = stats.ttest_ind(a, b, equal_var=False)
    if np.isfinite(scipy.pvalue):
        assert ours.p == pytest.approx(scipy.pvalue, rel=1e-6, abs=1e-9)


def test_epochs_to_reach_and_its_summary():
    histories = [[0.80, 0.85, 0.90], [0.84, 0.849, 0.851], [0.70, 0.75, 0.80]]
    assert [epochs_to_reach(h, 0.85) for h in histories] == [2, 3, None]
    assert reach_summary(histories, 0.85) == (2.5, 2, 3)
    assert reach_summary(histories, 0.99) == (None, 0, 3) and reach_summary([], 0.85) == (None, 0, 0)
