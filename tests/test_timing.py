"""The adaptive stopping rule and the statistics, driven by synthetic samples (no wall-clock asserts)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from harness.stats import median_ci, summarize
from harness.timing import (
    PROBE_BLOCK_S,
    WARMUP_WINDOW,
    MeasurementProtocol,
    ProbeInterleave,
    drift_corrected,
    measure_adaptively,
    warm_up,
    warmup_is_steady,
)

NO_WARMUP_TIME = {"warmup_min_s": 0.0, "warmup_min_iters": 3}


def test_steady_samples_stop_on_ci_target_after_min_samples():
    values = itertools.cycle([10.0, 10.01, 9.99])
    protocol = MeasurementProtocol(min_samples=30, target_ci_rel=0.01, time_cap_s=60, **NO_WARMUP_TIME)
    result = measure_adaptively(lambda: next(values), protocol)
    assert result.stop_reason == "ci_target"
    assert result.summary.n == 30 and result.warmup_iterations == 2 * WARMUP_WINDOW  # two steady windows
    assert result.conditions == {"warmup_steady": True}
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


def test_warmup_steadiness_rule():
    flat = [1.0] * 32
    assert warmup_is_steady(flat, [1410] * 32, window=16)
    assert not warmup_is_steady(flat[:31], [1410] * 31, window=16)  # two windows needed
    falling = [2.0] * 16 + [1.5] * 16  # still getting faster
    assert not warmup_is_steady(falling, [1410] * 32, window=16)
    within = [1.0] * 16 + [1.015] * 16  # 1.5% apart
    assert warmup_is_steady(within, [1410] * 32, window=16)
    ramping = [210] * 20 + [1410] * 12  # the clock left idle inside the last window
    assert not warmup_is_steady(flat, ramping, window=16)
    boost_bin = [1980, 1965] * 16  # one 15 MHz boost bin: steady
    assert warmup_is_steady(flat, boost_bin, window=16)
    assert warmup_is_steady(flat, [None] * 32, window=16)  # no NVML: timings alone


def test_warm_up_stops_when_steady_or_at_its_limit():
    protocol = MeasurementProtocol(warmup_min_s=0.0, warmup_min_iters=5)
    timings = iter([3.0] * 20 + [1.0] * 100)
    warm = warm_up(lambda: next(timings), lambda: 1410, protocol)
    # Steady once the earlier window's median is fast too: more than half of it after call 20.
    assert warm.steady and warm.iterations == 20 + WARMUP_WINDOW + WARMUP_WINDOW // 2 + 1
    noisy = itertools.cycle([1.0, 2.0])  # steady medians ...
    clocks = itertools.cycle([1980, 1500])  # ... but a clock that never settles
    capped = MeasurementProtocol(warmup_min_s=0.0, warmup_min_iters=5, warmup_max_s=0.02)
    warm = warm_up(lambda: next(noisy), lambda: next(clocks), capped)
    assert not warm.steady and warm.seconds >= 0.02


def test_the_interval_widens_when_the_host_drifts_during_the_run():
    from harness.stats import batch_median_ci

    rng = np.random.default_rng(1)
    steady = list(10 + rng.normal(0, 0.05, 80))
    drifting = [v + 0.6 * i / 80 for i, v in enumerate(steady)]  # 6% slower by the end
    assert summarize(steady).ci_half_width_rel < 0.01  # no drift: stays tight
    low, high = summarize(drifting).ci95
    order_low, order_high = median_ci(drifting)
    assert low < order_low and high > order_high  # drift shows as a wider interval
    assert (low, high) == pytest.approx(batch_median_ci(drifting))
    assert batch_median_ci(steady[:39]) is None  # too few samples for 8 blocks of 5


def test_the_ci_target_cannot_stop_a_run_shorter_than_min_timed_s():
    import time

    def steady_call() -> float:
        time.sleep(0.001)
        return 10.0  # perfectly steady: the CI target is met at the first check

    protocol = MeasurementProtocol(min_samples=10, min_timed_s=0.05, target_ci_rel=0.01,
                                   time_cap_s=60, **NO_WARMUP_TIME)
    result = measure_adaptively(steady_call, protocol)
    assert result.stop_reason == "ci_target" and result.timed_s >= 0.05
    assert result.summary.n > 10


def test_each_sample_is_corrected_by_the_probe_blocks_around_it():
    # The host runs 2x slower for the second half of the window: the candidate's samples and
    # the probe's both double there. Probe blocks ran before sample 0 and after every 2 samples.
    samples = [10.0] * 10 + [20.0] * 10
    positions = list(range(0, 21, 2))
    probe = [1.0 if position <= 10 else 2.0 for position in positions]
    corrected = drift_corrected(samples, probe, positions, quiet_ms=1.0)
    # samples 10 and 11 ran between the last fast block and the first slow one
    assert corrected[:10] == [10.0] * 10 and corrected[12:] == [10.0] * 8
    assert corrected[10:12] == pytest.approx([20.0 / 1.5] * 2)
    assert float(np.median(corrected)) == 10.0
    # one factor for the window (the probe's median, 1.0) leaves half the samples 2x slow
    window = drift_corrected(samples, probe, None, quiet_ms=1.0)
    assert window == samples and float(np.median(window)) == 15.0
    # blocks of several timings count by their median; no probe timed: nothing to correct
    assert drift_corrected([4.0, 4.0], [1.0, 3.0, 2.0], [0, 0, 2], 2.0) == [4.0, 4.0]
    assert drift_corrected([4.0], [], [], 2.0) == [4.0]


def test_the_probe_is_timed_between_timing_blocks_and_its_positions_kept():
    import time

    def candidate_call() -> float:
        time.sleep(PROBE_BLOCK_S / 5)  # a block spans about five calls, however slow the host
        return 10.0

    def probe_call() -> float:
        time.sleep(PROBE_BLOCK_S / 20)
        return 1.0

    interleave = ProbeInterleave(probe_call, share=0.05)  # about one probe timing a block
    protocol = MeasurementProtocol(min_samples=40, max_samples=40, time_cap_s=60,
                                   **NO_WARMUP_TIME)
    result = measure_adaptively(candidate_call, protocol, probe=interleave)
    positions = result.probe_positions
    assert len(positions) == len(result.probe_samples_ms)
    assert positions[0] == 0 and positions[-1] == 40  # before the first sample, after the last
    assert positions == sorted(positions)
    interior = [p for p in positions if 0 < p < 40]
    assert len(interior) >= 2 and all(b - a >= 1 for a, b in zip(interior, interior[1:]))


def test_each_probe_block_starts_with_a_settling_call_that_is_not_kept():
    # the probe's first call after the candidate runs slow (its weights left the caches)
    after_candidate = {"yes": False}

    def candidate_call() -> float:
        after_candidate["yes"] = True
        return 10.0

    def probe_call() -> float:
        first, after_candidate["yes"] = after_candidate["yes"], False
        return 5.0 if first else 1.0

    interleave = ProbeInterleave(probe_call, share=0.05)
    protocol = MeasurementProtocol(min_samples=10, max_samples=10, time_cap_s=60,
                                   **NO_WARMUP_TIME)
    result = measure_adaptively(candidate_call, protocol, probe=interleave)
    assert result.probe_samples_ms and set(result.probe_samples_ms) == {1.0}
    assert interleave.seconds > 0  # the settling calls' time counts in the probe's overhead
