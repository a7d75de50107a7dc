"""The adaptive stopping rule and the statistics, driven by synthetic samples (no wall-clock asserts)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from harness.stats import median_ci, summarize
from harness.timing import MeasurementProtocol, measure_adaptively

NO_WARMUP_TIME = {"warmup_min_s": 0.0, "warmup_min_iters": 3}


def test_steady_samples_stop_on_ci_target_after_min_samples():
    values = itertools.cycle([10.0, 10.01, 9.99])
    protocol = MeasurementProtocol(min_samples=30, target_ci_rel=0.01, time_cap_s=60, **NO_WARMUP_TIME)
    result = measure_adaptively(lambda: next(values), protocol)
    assert result.stop_reason == "ci_target"
    assert result.summary.n == 30 and result.warmup_iterations == 3
    assert result.summary.median == pytest.approx(10.0)
    assert len(result.samples_ms) == 30


def test_noisy_samples_stop_on_the_sample_cap():
    rng = np.random.default_rng(0)
    protocol = MeasurementProtocol(min_samples=10, max_samples=50, target_ci_rel=1e-6,
                                   time_cap_s=60, **NO_WARMUP_TIME)
    result = measure_adaptively(lambda: float(rng.lognormal(2, 0.5)), protocol)
    assert result.stop_reason == "max_samples" and result.summary.n == 50


def test_time_cap_stops_noisy_measurements():
    rng = np.random.default_rng(0)
    protocol = MeasurementProtocol(min_samples=10, max_samples=10**6, target_ci_rel=1e-9,
                                   time_cap_s=0.0, **NO_WARMUP_TIME)
    result = measure_adaptively(lambda: float(rng.lognormal(2, 0.5)), protocol)
    assert result.stop_reason == "time_cap" and result.summary.n == 10


def test_summary_fields():
    summary = summarize([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0])
    assert summary.median == 5.5 and summary.n == 10
    assert summary.p90 is None and summary.p99 is None  # MLPerf: 64 samples for p90, 662 for p99
    assert summary.ci95[0] <= summary.median <= summary.ci95[1]
    assert summary.cv == pytest.approx(np.std(np.arange(1, 11), ddof=1) / 5.5)
    assert set(summary.to_dict()) >= {"median", "p90", "ci95", "cv", "n"}


def test_median_ci_covers_the_true_median_about_95_percent_of_the_time():
    rng = np.random.default_rng(42)
    true_median = np.exp(2.0)  # lognormal(2, 0.5): skewed like latencies
    covered = 0
    trials = 2000
    for _ in range(trials):
        low, high = median_ci(rng.lognormal(2.0, 0.5, size=41))
        covered += low <= true_median <= high
    assert 0.93 <= covered / trials <= 0.985  # order-statistic CIs are slightly conservative


def test_tail_percentiles_appear_once_mlperf_sample_counts_are_met():
    assert summarize(list(range(1, 64))).p90 is None
    enough = summarize([float(v) for v in range(1, 65)])
    assert enough.p90 == pytest.approx(np.percentile(np.arange(1, 65), 90)) and enough.p99 is None
    assert summarize([float(v) for v in range(662)]).p99 == pytest.approx(np.percentile(np.arange(662), 99))
