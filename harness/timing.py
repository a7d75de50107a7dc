"""Adaptive latency measurement, shared by every device.

A device supplies ``time_once() -> milliseconds`` (wall clock on a CPU, CUDA events on a GPU);
this module warms up until the timings (and the device clock, where readable) are steady rather
than for a fixed count, then samples until the 95% CI of the median is within the target, the time
cap is hit, or the sample cap is reached, and says which of the three stopped it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.stats import LatencySummary, summarize

CHECK_EVERY = 10  # samples between two CI checks: the check costs ~0.1 ms
# Candidate time at least between two probe blocks (the share spaces them further): a VM's speed
# moves within a second, and the probe corrects each sample by the blocks around it
PROBE_BLOCK_S = 0.02
WARMUP_WINDOW = 16  # calls in each of the two windows the steadiness rule compares
WARMUP_TOLERANCE = 0.02  # the two windows' median timings within 2% of each other ...
CLOCK_TOLERANCE = 0.01  # ... and the clock within 1% over the last window (GPU boost bins: 15 MHz)


@dataclass(frozen=True)
class MeasurementProtocol:
    """How a device measures: the latency stopping rule, then the energy windows.

    Energy counters update slowly (NVML every ~20-100 ms, RAPL every ~1 ms but noisy), so energy is
    read over ``energy_windows`` windows of at least ``energy_window_s`` each, the workload looped
    to fill them, after ``idle_s`` of idle power measured apart.
    """

    batch_size: int = 1
    threads: int | None = None
    warmup_min_s: float = 0.5
    warmup_min_iters: int = 5
    warmup_max_s: float = 10.0  # then stop waiting for steady timings (recorded as not steady)
    min_samples: int = 30
    min_timed_s: float = 0.0  # nor stop on the CI target before this long (optional stopping)
    max_samples: int = 2000
    target_ci_rel: float = 0.01
    time_cap_s: float = 5.0
    energy: bool = True
    energy_window_s: float = 1.0
    energy_windows: int = 5
    idle_s: float = 1.0
    l2_flush: bool = False  # GPUs: overwrite the L2 cache before each timed call
    cuda_graphs: bool = False  # GPUs: capture the forward once and replay it
    # Watch the host for other work, and retake a contended measurement (harness.devices.contention)
    contention_check: bool = True
    contention_retakes: int = 3  # then the measurement is kept, flagged contended
    contention_backoff_s: float = 2.0  # the longest wait for a quiet host doubles after each take
    # Time the reference probe between timing blocks and correct the latency by it
    drift_correction: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class LatencyMeasurement:
    summary: LatencySummary
    samples_ms: list[float] = field(repr=False)
    warmup_iterations: int
    warmup_s: float
    timed_s: float
    stop_reason: str  # "ci_target", "time_cap", "max_samples" or "contended" (the watch said so)
    # Device state during the run (clocks, temperature, throttle reasons sampled...), and whether
    # the device throttled: None when it cannot tell.
    conditions: dict[str, Any] = field(default_factory=dict)
    throttled: bool | None = None
    # The reference probe's timings between the timing blocks, and their total time
    probe_samples_ms: list[float] = field(default_factory=list, repr=False)
    probe_positions: list[int] = field(default_factory=list, repr=False)  # samples before each
    probe_s: float = 0.0

    def protocol_record(self) -> dict[str, Any]:
        return {
            "warmup_iterations": self.warmup_iterations,
            "warmup_s": round(self.warmup_s, 4),
            "timed_s": round(self.timed_s, 4),
            "stop_reason": self.stop_reason,
        }


def warmup_is_steady(
    timings_ms: Sequence[float],
    clocks_mhz: Sequence[int | None],
    window: int = WARMUP_WINDOW,
    tolerance: float = WARMUP_TOLERANCE,
) -> bool:
    """Whether warm-up may stop: the median of the last ``window`` timings is within
    ``tolerance`` of the window before's, and the clock (a GPU's SM clock read after each call;
    None where it cannot be read) stayed within ``CLOCK_TOLERANCE`` over the last window, so the
    device is neither still leaving its idle clocks nor ramping down under a power or thermal
    limit."""
    if len(timings_ms) < 2 * window:
        return False
    last = statistics.median(timings_ms[-window:])
    previous = statistics.median(timings_ms[-2 * window:-window])
    if abs(last - previous) > tolerance * previous:
        return False
    clocks = [clock for clock in clocks_mhz[-window:] if clock is not None]
    return not clocks or max(clocks) - min(clocks) <= CLOCK_TOLERANCE * max(clocks)


@dataclass(frozen=True)
class WarmUp:
    iterations: int
    seconds: float
    steady: bool  # False: stopped by warmup_max_s before the steadiness rule held


def warm_up(
    time_once: Callable[[], float],
    read_clock: Callable[[], int | None],
    protocol: MeasurementProtocol,
    contended: Callable[[], bool] | None = None,
) -> WarmUp:
    """Call ``time_once`` for at least the protocol's warm-up minimum, then until
    ``warmup_is_steady`` holds or ``warmup_max_s`` (never less than the minimum) has passed, or
    ``contended`` says the host is busy (timings would never steady)."""
    timings: list[float] = []
    clocks: list[int | None] = []
    start = time.perf_counter()
    limit = max(protocol.warmup_max_s, protocol.warmup_min_s)
    while True:
        timings.append(time_once())
        clocks.append(read_clock())
        elapsed = time.perf_counter() - start
        minimum_done = (len(timings) >= protocol.warmup_min_iters
                        and elapsed >= protocol.warmup_min_s)
        if minimum_done and warmup_is_steady(timings, clocks):
            return WarmUp(len(timings), elapsed, steady=True)
        busy = contended is not None and len(timings) % CHECK_EVERY == 0 and contended()
        if elapsed >= limit or busy:
            return WarmUp(len(timings), elapsed, steady=False)


class ProbeInterleave:
    """Times the reference probe between a candidate's timing blocks (ABAB), keeping the probe's
    time to ``share`` of the candidate's: once before the first block, after any block that
    leaves the probe under its share, and once after the last. Each probe block starts with one
    settling call, run and counted in the probe's time but not kept: the first call after the
    candidate ran ~20% slower than the next ones on a 2-core VM (the candidate's weights had
    left the caches), and by what ran before it, not by the host's speed: a busy-wait injected
    after each model call slowed it as much as the model, hiding a 5% slowdown. Each timing kept
    records its position: how many candidate samples were taken before it
    (``drift_corrected``)."""

    def __init__(self, time_probe: Callable[[], float], share: float) -> None:
        self.time_probe, self.share = time_probe, share
        self.samples: list[float] = []
        self.positions: list[int] = []
        self.seconds = 0.0

    def run(self, candidate_s: float, position: int, at_least_once: bool = False) -> None:
        if not at_least_once and self.seconds >= self.share * candidate_s:
            return
        start = time.perf_counter()
        self.time_probe()  # the settling call
        self.seconds += time.perf_counter() - start
        at_least_once = True  # and then one timing kept, at least
        while at_least_once or self.seconds < self.share * candidate_s:
            start = time.perf_counter()
            self.samples.append(self.time_probe())
            self.positions.append(position)
            self.seconds += time.perf_counter() - start
            at_least_once = False


def drift_corrected(samples_ms: Sequence[float], probe_samples_ms: Sequence[float],
                    probe_positions: Sequence[int] | None, quiet_ms: float) -> list[float]:
    """Each sample times the probe's quiet time over its median in the probe blocks just before
    and just after that sample: the host's speed while the sample ran, not over the whole window.

    On a 2-core VM the host's speed moves within a second; a candidate's time over the probe's
    in blocks 20 ms apart scatters as white noise (4% per block, no correlation past the next
    block), while one factor for a 1.5 s window left back-to-back deit_tiny medians 1.7% apart
    (median of 20 pairs) against 0.4-0.7% sample by sample. Without positions (records from
    before they were kept) every probe timing counts as around every sample: the window's
    factor."""
    if not probe_samples_ms:
        return list(samples_ms)
    if probe_positions is None:
        factor = quiet_ms / statistics.median(probe_samples_ms)
        return [sample * factor for sample in samples_ms]
    blocks: dict[int, list[float]] = {}
    for position, probe_ms in zip(probe_positions, probe_samples_ms):
        blocks.setdefault(position, []).append(probe_ms)
    starts = sorted(blocks)
    corrected, before = [], None
    after = 0  # index into starts of the first block after the current sample
    for index, sample in enumerate(samples_ms):
        while after < len(starts) and starts[after] <= index:
            before, after = starts[after], after + 1
        around = (blocks[before] if before is not None else []) + \
            (blocks[starts[after]] if after < len(starts) else [])
        corrected.append(sample * quiet_ms / statistics.median(around))
    return corrected


def measure_adaptively(
    time_once: Callable[[], float],
    protocol: MeasurementProtocol,
    read_clock: Callable[[], int | None] = lambda: None,
    probe: ProbeInterleave | None = None,
    contended: Callable[[], bool] | None = None,
) -> LatencyMeasurement:
    """Warm up until steady (``warm_up``), then time ``time_once`` until the stopping rule of
    ``protocol`` is met; ``read_clock`` gives the device clock where one can be read.

    ``probe`` is timed between the timing blocks; ``contended``, asked at each CI check, stops
    the sampling early when the host is plainly busy (stop reason "contended"), to be retaken."""
    warm = warm_up(time_once, read_clock, protocol, contended)
    timed_start = time.perf_counter()
    samples: list[float] = []
    stop_reason = "max_samples"
    if probe:
        probe.run(0.0, 0, at_least_once=True)
    block_start = time.perf_counter()
    while len(samples) < protocol.max_samples:
        samples.append(time_once())
        if probe and time.perf_counter() - block_start >= PROBE_BLOCK_S:
            probe.run(time.perf_counter() - timed_start - probe.seconds, len(samples))
            block_start = time.perf_counter()
        if len(samples) % CHECK_EVERY:
            continue
        elapsed = time.perf_counter() - timed_start
        if contended and contended():
            stop_reason = "contended"
            break
        if len(samples) < protocol.min_samples:
            continue
        # A short run can look tight by chance around a value the next run does not reproduce.
        ci_may_stop = elapsed >= protocol.min_timed_s
        if ci_may_stop and summarize(samples).ci_half_width_rel <= protocol.target_ci_rel:
            stop_reason = "ci_target"
            break
        if elapsed >= protocol.time_cap_s:
            stop_reason = "time_cap"
            break
    if probe:
        probe.run(0.0, len(samples), at_least_once=True)
    return LatencyMeasurement(
        summary=summarize(samples),
        samples_ms=samples,
        warmup_iterations=warm.iterations,
        warmup_s=warm.seconds,
        timed_s=time.perf_counter() - timed_start,
        stop_reason=stop_reason,
        conditions={"warmup_steady": warm.steady},
        probe_samples_ms=probe.samples if probe else [],
        probe_positions=probe.positions if probe else [],
        probe_s=probe.seconds if probe else 0.0,
    )
