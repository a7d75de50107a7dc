"""Joules per call from energy measured over windows, whatever measured it.

A device reads its energy source (NVML's counter or sampled power, RAPL package counters) over
back-to-back windows in which the workload loops, and turns each into an ``EnergyWindow``; how it
reads and what a window that read nothing means are its own. The reduction of those windows to an
``EnergyRecord`` is the same for every device, so it lives here.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from harness.records import EnergyRecord
from harness.stats import median_ci


@dataclass(frozen=True)
class EnergyWindow:
    """The energy read over one window, the calls of the workload run in it (0 while idle) and
    how long it lasted."""

    joules: float
    calls: int
    seconds: float

    @property
    def power_w(self) -> float:
        return self.joules / self.seconds


def energy_per_call(
    windows: Sequence[EnergyWindow],
    source: str,
    reason: str,
    idle_power_w: float | None,
    why_empty: Callable[[EnergyWindow], str],
) -> EnergyRecord:
    """Joules per call: the median over windows of window energy / calls, with the median's 95%
    CI over windows (order statistics: with fewer than 6 windows, their min and max).

    A window that read no energy is not a free call: the record is then unavailable, with
    ``why_empty`` of the first such window as the reason, since what it means depends on the
    source (a window shorter than the counter's update period, a frozen counter)."""
    if not windows:
        return EnergyRecord.unavailable(f"{source}: no energy window was measured")
    empty = [w for w in windows if w.joules <= 0]
    if empty:
        return EnergyRecord.unavailable(why_empty(empty[0]))
    per_call = [w.joules / w.calls for w in windows]
    return EnergyRecord(
        status="measured",
        source=source,
        reason=reason,
        joules_per_call=float(statistics.median(per_call)),
        ci95=median_ci(per_call),
        idle_power_w=idle_power_w,
        windows=len(windows),
        window_s=float(statistics.median(w.seconds for w in windows)),
    )
