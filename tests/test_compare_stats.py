"""Tests of the base-vs-head comparison statistics on synthetic latencies with known shifts."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from harness.bench.compare_stats import (
    PAIRED_TEST,
    POWER,
    ComparisonError,
    compare_entries,
    hodges_lehmann_ci_pct,
    holm,
    paired_change,
    paired_rounds_needed,
)
from harness.errors import HarnessError


def latencies(rng: np.random.Generator, n: int, cv: float, median: float = 10.0) -> np.ndarray:
    """Lognormal latencies in ms with the given median and coefficient of variation."""
    sigma = math.sqrt(math.log1p(cv**2))
    return median * np.exp(sigma * rng.standard_normal(n))


def compare_one(base, head, **kwargs):
    (result,) = compare_entries({"vit": (base, head)}, **kwargs)
    return result


def test_a_a_is_unchanged():
    rng = np.random.default_rng(1)
    result = compare_one(latencies(rng, 30, 0.02), latencies(rng, 30, 0.02))
    assert result.decision == "unchanged"
    assert result.ci95_pct[0] < 0 < result.ci95_pct[1]
    assert abs(result.delta_pct) < 2
    assert (result.n_base, result.n_head) == (30, 30)


def test_ten_percent_slowdown_is_regression():
    rng = np.random.default_rng(2)
    result = compare_one(latencies(rng, 30, 0.02), latencies(rng, 30, 0.02, median=11.0))
    assert result.decision == "regression"
    assert 0 < result.ci95_pct[0] <= 10 <= result.ci95_pct[1]
    assert result.delta_pct == pytest.approx(10, abs=1.5)
    assert result.p_adjusted < 0.01


def test_ten_percent_speedup_is_improvement():
    rng = np.random.default_rng(3)
    result = compare_one(latencies(rng, 30, 0.02), latencies(rng, 30, 0.02, median=9.0))
    assert result.decision == "improvement"
    assert result.ci95_pct[0] <= -10 <= result.ci95_pct[1] < 0


def test_real_shift_below_threshold_is_not_a_regression():
    rng = np.random.default_rng(4)
    base, head = latencies(rng, 30, 0.02), latencies(rng, 30, 0.02, median=10.3)
    result = compare_one(base, head)
    # The 3% shift is statistically clear but smaller than the 5% threshold.
    assert result.p_adjusted < 0.01
    assert result.decision in {"unchanged", "noisy"}
    # With a per-entry threshold below the shift, the same data is a regression.
    assert compare_one(base, head, thresholds={"vit": 2.0}).decision == "regression"


def test_high_noise_small_shift_is_noisy_with_its_interval():
    rng = np.random.default_rng(5)
    result = compare_one(latencies(rng, 8, 0.20), latencies(rng, 8, 0.20, median=10.2))
    assert result.decision == "noisy"
    assert result.ci95_pct[0] < -5 or result.ci95_pct[1] > 5
    assert result.p_adjusted >= 0.01


def test_holm_hand_computed():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.6]) == [1.0, 1.0]  # capped at 1
    assert holm([]) == []


def test_compare_entries_adjusts_across_entries():
    rng = np.random.default_rng(6)
    # Five fully separated samples per side give the smallest p for 5 v 5, 2/252 < 0.01: a
    # regression on its own, but not once Holm doubles it for a second entry.
    separated = (latencies(rng, 5, 0.02), latencies(rng, 5, 0.02, median=12.0))
    assert max(separated[0]) < min(separated[1])
    alone = compare_one(*separated)
    assert alone.p_value == pytest.approx(2 / 252)
    assert alone.decision == "regression"

    entries = {"separated": separated, "same": (latencies(rng, 30, 0.02), latencies(rng, 30, 0.02))}
    together = compare_entries(entries)
    assert [r.name for r in together] == ["separated", "same"]
    assert [r.p_adjusted for r in together] == holm([r.p_value for r in together])
    assert together[0].decision == "noisy"  # a 20% slowdown is shown, with a wide interval
    assert together[0].ci95_pct[1] > 5


@pytest.mark.parametrize("n_base, n_head", [(12, 15), (60, 60)])  # exact and normal U
def test_interval_covers_the_true_shift(n_base, n_head):
    rng = np.random.default_rng(7)
    trials = 200
    covered = 0
    for _ in range(trials):
        low, high = hodges_lehmann_ci_pct(latencies(rng, n_base, 0.05),
                                          latencies(rng, n_head, 0.05, median=11.0))
        covered += low <= 10 <= high
    # Nominal 95%: well above 90%, and not so wide that it always covers.
    assert 0.90 * trials <= covered <= 0.99 * trials


@pytest.mark.parametrize("n, method", [(10, "exact"), (60, "asymptotic")])
def test_interval_is_the_set_of_shifts_mann_whitney_accepts(n, method):
    rng = np.random.default_rng(8)
    base, head = latencies(rng, n, 0.05), latencies(rng, n, 0.05, median=10.5)
    low, high = (math.log1p(x / 100) for x in hodges_lehmann_ci_pct(base, head))

    def p_value(shift: float) -> float:
        return stats.mannwhitneyu(np.log(head) - shift, np.log(base), method=method).pvalue

    eps = 1e-9
    assert p_value(low + eps) > 0.05 and p_value(high - eps) > 0.05
    assert p_value(low - eps) <= 0.05 and p_value(high + eps) <= 0.05


def test_large_samples_subsample_deterministically_and_closely():
    rng = np.random.default_rng(9)
    base, head = latencies(rng, 2100, 0.02), latencies(rng, 2100, 0.02, median=10.1)
    ci = hodges_lehmann_ci_pct(base, head)
    assert hodges_lehmann_ci_pct(base, head) == ci

    diffs = np.sort((np.log(head)[:, None] - np.log(base)[None, :]).ravel())
    n_pairs = len(diffs)  # 4.41e6, above the subsampling limit
    k = math.floor(n_pairs / 2 + 0.5 - stats.norm.isf(0.025) * math.sqrt(n_pairs * 4201 / 12))
    full = 100 * np.expm1(diffs[[k - 1, n_pairs - k]])
    assert ci == pytest.approx(tuple(full), abs=0.01)  # in percent; the interval is ~0.25 wide


@pytest.mark.parametrize("base, head, problem", [
    ([1.0] * 4, [1.0] * 30, "base has 4 samples"),
    ([1.0] * 30, [1.0, 1.0, 1.0, 1.0, -1.0], "head has a sample that is not a positive"),
    ([1.0] * 29 + [math.nan], [1.0] * 30, "base has a sample that is not a positive"),
    ([1.0] * 29 + [0.0], [1.0] * 30, "base has a sample that is not a positive"),
])
def test_invalid_samples_raise(base, head, problem):
    with pytest.raises(ComparisonError, match=f"'deit_tiny/bs1'.*{problem}") as info:
        compare_entries({"deit_tiny/bs1": (base, head)})
    assert isinstance(info.value, HarnessError)


def test_interval_needs_enough_samples():
    with pytest.raises(ValueError, match="too few"):
        hodges_lehmann_ci_pct([1.0, 2.0, 3.0], [1.5, 2.5, 3.5])


def test_invalid_threshold_raises():
    samples = list(np.linspace(1, 2, 10))
    with pytest.raises(ComparisonError, match="'vit'.*threshold"):
        compare_entries({"vit": (samples, samples)}, thresholds={"vit": 0.0})


def test_to_dict_is_plain_json():
    rng = np.random.default_rng(10)
    result = compare_one(latencies(rng, 10, 0.02), latencies(rng, 10, 0.02))
    values = result.to_dict()
    assert json.loads(json.dumps(values)) == values
    assert all(type(v) in (str, float, int, list, type(None)) for v in values.values())  # no numpy scalars
    assert values["ci95_pct"] == list(result.ci95_pct)
    assert values["decision"] == result.decision


def test_paired_change_is_the_t_test_of_the_log_ratios_by_hand():
    base = np.array([10.0, 12.0, 9.5, 11.0, 9.0, 11.5])
    ratios = np.array([1.04, 1.06, 1.05, 1.03, 1.07, 1.05])
    delta, (low, high), p_value = paired_change(base, base * ratios)
    logs = np.log(ratios)
    mean, se = logs.mean(), logs.std(ddof=1) / np.sqrt(6)
    t = mean / se
    assert p_value == pytest.approx(2 * stats.t.sf(t, 5))
    assert delta == pytest.approx(100 * (np.exp(mean) - 1))
    half = stats.t.ppf(0.975, 5) * se
    assert (low, high) == pytest.approx((100 * (np.exp(mean - half) - 1),
                                         100 * (np.exp(mean + half) - 1)))


def test_paired_change_of_identical_ratios_and_of_unequal_sides():
    base = np.array([10.0, 12.0, 9.0, 11.0, 10.5])
    assert paired_change(base, base) == (0.0, (0.0, 0.0), 1.0)
    delta, interval, p_value = paired_change(base, 1.1 * base)
    assert delta == pytest.approx(10.0) and p_value < 1e-12
    with pytest.raises(ComparisonError, match="paired samples differ in number: 5 base, 4 head"):
        paired_change(base, base[:4])


def test_paired_entries_are_tested_paired_and_holm_corrected_with_the_rest():
    rng = np.random.default_rng(3)
    drift = rng.uniform(0.8, 1.2, size=6)  # the host between rounds
    base, head = 10 * drift, 10.5 * drift * rng.normal(1, 0.005, size=6)
    unpaired, paired = compare_entries({"a": (base, head), "b": (base, head)}, paired={"b"})
    assert (unpaired.test, paired.test) == ("Mann-Whitney U", PAIRED_TEST)
    assert paired.decision == "regression" and unpaired.decision != "regression"
    assert paired.p_adjusted == pytest.approx(min(1.0, 2 * paired.p_value))


@pytest.mark.parametrize(("ratio_sd", "threshold_pct"), [(0.02, 5.0), (0.06, 5.0), (0.03, 3.0)])
def test_paired_rounds_needed_find_the_change_with_the_promised_power(ratio_sd, threshold_pct):
    rounds = paired_rounds_needed(ratio_sd, threshold_pct, alpha=0.01)
    rng = np.random.default_rng(7)

    def power(n: int) -> float:
        ratios = rng.normal(math.log1p(threshold_pct / 100), ratio_sd, size=(4000, n))
        return float(np.mean(stats.ttest_1samp(ratios, 0.0, axis=1).pvalue < 0.01))

    assert power(rounds) >= POWER - 0.03  # simulated: the advice holds
    assert power(rounds - 1) < POWER + 0.03  # and is not far more than needed
    assert paired_rounds_needed(0.5, 1.0) is None  # beyond what is worth advising
