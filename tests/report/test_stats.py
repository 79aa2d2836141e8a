"""stats.py against references that do not come from SciPy (which it calls): published t tables, closed forms of
Student's t for 1 and 2 degrees of freedom, Wikipedia's worked Welch examples, and the formulas in float64 NumPy."""

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from normlab.report.stats import epochs_to_reach, hedges_g, mean_std, reach_summary, summarize, welch

# t_{0.975, df}, from any printed table of Student's t (two-sided 95%).
T_TABLE = {1: 12.706205, 2: 4.302653, 4: 2.776445, 9: 2.262157, 29: 2.045230}
# Final accuracies shaped like a study's: two seeds, unequal n, very unequal spreads, near-identical values.
SAMPLES = {
    "n2": [0.8712, 0.8694],
    "n3": [0.8402, 0.8391, 0.8433],
    "n5": [0.8715, 0.8741, 0.8690, 0.8722, 0.8702],
    "wide6": [0.80, 0.86, 0.83, 0.78, 0.88, 0.84],
    "tight4": [0.8500, 0.8501, 0.8499, 0.8500],
}
PAIRS = [("n2", "n3"), ("n3", "n5"), ("n5", "wide6"), ("tight4", "wide6"), ("n2", "n2"), ("wide6", "tight4")]
# Welch's t-test on Wikipedia (examples 1–3): the samples, and t, df, p as published there, to their precision.
WIKIPEDIA = [
    ([27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4],
     [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4],
     -2.46, 24.99, 0.021),
    ([17.2, 20.9, 22.6, 18.1, 21.7, 21.4, 23.5, 24.2, 14.7, 21.8],
     [21.5, 22.8, 21.0, 23.0, 21.6, 23.6, 22.5, 20.7, 23.4, 21.8, 20.7, 21.7, 21.5, 22.5, 23.6, 21.5, 22.5, 23.5,
      21.5, 21.8],
     -1.57, 9.9, 0.149),
    ([19.8, 20.4, 19.6, 17.8, 18.5, 18.9, 18.3, 18.9, 19.5, 22.0],
     [28.2, 26.6, 20.1, 23.3, 25.2, 22.1, 17.7, 27.6, 20.6, 13.7, 23.2, 17.5, 20.6, 18.0, 23.9, 21.6, 24.3, 20.4,
      23.9, 13.3],
     -2.22, 24.5, 0.036),
]


def quantile_used(values) -> float:
    """The t quantile inside summarize's interval: half-width / (s / √n)."""
    s = summarize(values)
    return (s.ci[1] - s.mean) / (s.std / math.sqrt(s.n))


@pytest.mark.parametrize("df", T_TABLE)
def test_interval_uses_the_tabulated_t_quantile(df):
    values = np.linspace(0.80, 0.88, df + 1) ** 1.5  # any spread will do; n = df + 1
    assert quantile_used(values) == pytest.approx(T_TABLE[df], abs=1e-6)


def test_interval_quantile_matches_closed_forms_for_df_1_and_2():
    """df 1 is Cauchy: F⁻¹(p) = tan(π(p − ½)); df 2: F⁻¹(p) = (2p − 1)/√(2p(1 − p))."""
    assert quantile_used([0.80, 0.83]) == pytest.approx(math.tan(math.pi * 0.475), rel=1e-12)
    assert quantile_used([0.80, 0.83, 0.81]) == pytest.approx(0.95 / math.sqrt(2 * 0.975 * 0.025), rel=1e-12)
    s = summarize([0.80, 0.83, 0.81], confidence=0.5)  # the 75% quantile of t_2
    assert (s.ci[1] - s.mean) / (s.std / math.sqrt(3)) == pytest.approx(0.5 / math.sqrt(2 * 0.75 * 0.25), rel=1e-12)


@pytest.mark.parametrize("name", SAMPLES)
def test_summary_matches_numpy(name):
    x = np.array(SAMPLES[name])
    s = summarize(x)
    assert s.n == len(x) and s.mean == pytest.approx(x.mean(), rel=1e-15)
    assert s.std == pytest.approx(x.std(ddof=1), rel=1e-12)
    assert s.ci[0] + s.ci[1] == pytest.approx(2 * x.mean(), rel=1e-15)


def hand_welch(a, b) -> tuple[float, float]:
    """t and the Welch–Satterthwaite df, written out in float64 NumPy."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    return (a.mean() - b.mean()) / np.sqrt(va + vb), (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))


def last_digit(published: float) -> float:
    """One unit in the last decimal ``published`` shows: how far Wikipedia's rounding may be from the value."""
    return 10.0 ** -len(repr(published).partition(".")[2])


@pytest.mark.parametrize("a, b, t, df, p", WIKIPEDIA)
def test_welch_reproduces_the_published_examples(a, b, t, df, p):
    ours = welch(a, b)
    for value, published in ((ours.t, t), (ours.df, df), (ours.p, p)):
        assert value == pytest.approx(published, abs=last_digit(published))
    assert (ours.t, ours.df) == pytest.approx(hand_welch(a, b), rel=1e-12)


def test_welch_p_matches_the_closed_form_for_two_degrees_of_freedom():
    """Two values each with equal spread give df = 2 exactly, where P(|T| > t) = 1 − t/√(t² + 2)."""
    ours = welch([1.0, 3.0], [6.0, 8.0])
    t = -5 / math.sqrt(2)
    assert (ours.t, ours.df) == pytest.approx((t, 2.0), rel=1e-14)
    assert ours.p == pytest.approx(1 - abs(t) / math.sqrt(t * t + 2), rel=1e-12)


@pytest.mark.parametrize("a, b", PAIRS)
def test_welch_matches_its_formula_on_study_shaped_samples(a, b):
    ours = welch(SAMPLES[a], SAMPLES[b])
    assert (ours.t, ours.df) == pytest.approx(hand_welch(SAMPLES[a], SAMPLES[b]), rel=1e-10, abs=1e-12)
    assert 0 < ours.p <= 1


@pytest.mark.parametrize("a, b", PAIRS)
def test_hedges_g_is_corrected_cohens_d(a, b):
    x, y = np.array(SAMPLES[a]), np.array(SAMPLES[b])
    nu = len(x) + len(y) - 2
    pooled = math.sqrt(((len(x) - 1) * x.var(ddof=1) + (len(y) - 1) * y.var(ddof=1)) / nu)
    j = math.gamma(nu / 2) / (math.sqrt(nu / 2) * math.gamma((nu - 1) / 2))
    g = hedges_g(x, y)
    assert g == pytest.approx(j * (x.mean() - y.mean()) / pooled, rel=1e-10, abs=1e-12)
    assert g == pytest.approx(-hedges_g(y, x), rel=1e-12, abs=1e-15)
    assert j == pytest.approx(1 - 3 / (4 * nu - 1), abs=0.01)


def test_hedges_correction_for_two_and_three_seeds():
    """J(2) = Γ(1)/Γ(½) = 1/√π for two seeds a group; J(4) = Γ(2)/(√2·Γ(3/2)) = √(2/π) for three."""
    d2 = (2.0 - 5.0) / math.sqrt(2.0)  # [1, 3] vs [4, 6]: pooled s = √2
    assert hedges_g([1.0, 3.0], [4.0, 6.0]) == pytest.approx(d2 / math.sqrt(math.pi), rel=1e-13)
    d3 = (2.0 - 5.0) / 1.0  # [1, 2, 3] vs [4, 5, 6]: pooled s = 1
    assert hedges_g([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]) == pytest.approx(d3 * math.sqrt(2 / math.pi), rel=1e-13)


def test_identical_values_have_zero_spread_and_no_test():
    assert mean_std([0.1, 0.1, 0.1]) == (0.1, 0.0)  # np.mean gives 0.10000000000000002, its std ~1e-17
    same = summarize([0.8, 0.8, 0.8])
    assert (same.mean, same.std, same.ci) == (0.8, 0.0, (0.8, 0.8))
    assert welch([0.8, 0.8, 0.8], [0.8, 0.8]) is None and hedges_g([0.8] * 3, [0.7] * 3) is None
    # SciPy's variance of three 0.1s is a rounding residue (~1e-34): t would be -4.6e15 and p 1e-46, not undefined
    assert welch([0.1] * 3, [0.2] * 3) is None


def test_one_group_without_spread_still_has_a_test():
    """The other group carries the variance."""
    ours = welch([0.8, 0.8, 0.8], SAMPLES["n3"])
    b = np.array(SAMPLES["n3"])
    vb = b.var(ddof=1) / 3
    assert (ours.t, ours.df) == pytest.approx(((0.8 - b.mean()) / math.sqrt(vb), 2.0), rel=1e-10)
    assert 0 < ours.p < 1


@pytest.mark.parametrize("scale", [1e-170, 1e-100])
def test_spreads_too_small_to_square_are_undefined_and_silent(scale):
    """At 1e-170 the variance underflows to 0; at 1e-100 its square does, and SciPy's df would be 1."""
    a, b = [scale, 2 * scale, 3 * scale], [scale, 2 * scale, 4 * scale]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert welch(a, b) is None
        assert (hedges_g(a, b) is None) is (scale == 1e-170)


def test_small_spreads_that_square_keep_their_test_and_near_identical_values_warn_nothing():
    a, b = [1e-70, 2e-70, 3e-70], [1e-70, 2e-70, 4e-70]
    assert (welch(a, b).t, welch(a, b).df) == pytest.approx(hand_welch(a, b), rel=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert welch([0.85, 0.85 + 1e-16, 0.85], SAMPLES["n3"]) is not None  # SciPy warns of precision loss here


def test_single_and_no_values_leave_spread_interval_and_tests_undefined():
    assert summarize([0.81]) == summarize([0.81]).__class__(1, 0.81, None, None)
    assert summarize([]).mean is None
    assert welch([0.81], SAMPLES["n3"]) is None and hedges_g(SAMPLES["n3"], [0.81]) is None


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.5, 0.95), min_size=2, max_size=8), st.lists(st.floats(0.5, 0.95), min_size=2, max_size=8))
def test_welch_on_random_samples(a, b):
    ours = welch(a, b)
    if ours is None:
        return
    assert 0 <= ours.p <= 1  # and Welch's df lies between the smaller group's n − 1 and Student's n_a + n_b − 2
    assert (min(len(a), len(b)) - 1) * (1 - 1e-12) <= ours.df <= (len(a) + len(b) - 2) * (1 + 1e-12)
    t, df = hand_welch(a, b)
    if np.isfinite(t) and abs(t) < 1e6:  # far from the cancellation near identical values
        assert (ours.t, ours.df) == pytest.approx((t, df), rel=1e-6)
    mirror = welch(b, a)
    assert (mirror.t, mirror.df, mirror.p) == pytest.approx((-ours.t, ours.df, ours.p), rel=1e-12)


def test_epochs_to_reach_and_its_summary():
    histories = [[0.80, 0.85, 0.90], [0.84, 0.849, 0.851], [0.70, 0.75, 0.80]]
    assert [epochs_to_reach(h, 0.85) for h in histories] == [2, 3, None]
    assert reach_summary(histories, 0.85) == (2.5, 2, 3)
    assert reach_summary(histories, 0.99) == (None, 0, 3) and reach_summary([], 0.85) == (None, 0, 0)
