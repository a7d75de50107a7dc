"""Adaptive latency measurement, shared by every device.

A device supplies ``time_once() -> milliseconds`` (wall clock on a CPU, CUDA events on a GPU);
this module warms up, then samples until the 95% CI of the median is within the target, the time
cap is hit, or the sample cap is reached, and says which of the three stopped it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.stats import LatencySummary, summarize

CHECK_EVERY = 10  # samples between two CI checks: the check costs ~0.1 ms


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
    min_samples: int = 30
    max_samples: int = 2000
    target_ci_rel: float = 0.01
    time_cap_s: float = 5.0
    energy: bool = True
    energy_window_s: float = 1.0
    energy_windows: int = 5
    idle_s: float = 1.0
    l2_flush: bool = False  # GPUs: overwrite the L2 cache before each timed call
    cuda_graphs: bool = False  # GPUs: capture the forward once and replay it

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class LatencyMeasurement:
    summary: LatencySummary
    samples_ms: list[float] = field(repr=False)
    warmup_iterations: int
    warmup_s: float
    timed_s: float
    stop_reason: str  # "ci_target", "time_cap" or "max_samples"
    # Device state during the run (clocks, temperature, throttle reasons sampled...), and whether
    # the device throttled: None when it cannot tell.
    conditions: dict[str, Any] = field(default_factory=dict)
    throttled: bool | None = None

    def protocol_record(self) -> dict[str, Any]:
        return {
            "warmup_iterations": self.warmup_iterations,
            "warmup_s": round(self.warmup_s, 4),
            "timed_s": round(self.timed_s, 4),
            "stop_reason": self.stop_reason,
        }


def measure_adaptively(
    time_once: Callable[[], float], protocol: MeasurementProtocol
) -> LatencyMeasurement:
    """Warm up, then time ``time_once`` until the stopping rule of ``protocol`` is met."""
    warmup_start = time.perf_counter()
    warmup_iterations = 0
    while (
        warmup_iterations < protocol.warmup_min_iters
        or time.perf_counter() - warmup_start < protocol.warmup_min_s
    ):
        time_once()
        warmup_iterations += 1
    timed_start = time.perf_counter()
    warmup_s = timed_start - warmup_start
    samples: list[float] = []
    stop_reason = "max_samples"
    while len(samples) < protocol.max_samples:
        samples.append(time_once())
        if len(samples) < protocol.min_samples or len(samples) % CHECK_EVERY:
            continue
        if summarize(samples).ci_half_width_rel <= protocol.target_ci_rel:
            stop_reason = "ci_target"
            break
        if time.perf_counter() - timed_start >= protocol.time_cap_s:
            stop_reason = "time_cap"
            break
    return LatencyMeasurement(
        summary=summarize(samples),
        samples_ms=samples,
        warmup_iterations=warmup_iterations,
        warmup_s=warmup_s,
        timed_s=time.perf_counter() - timed_start,
        stop_reason=stop_reason,
    )
