"""Is the host busy? Evidence of contention over a measurement's window.

A tight CI cannot reveal a host that was busy for the whole window: torch's threads spin when
they share cores with another busy process, and the whole measurement is then 10-100x slow with
a perfectly narrow interval. So every measurement on a device of this host is watched:

* CPU time of other processes over the window (system-wide busy time minus this process's own,
  from ``psutil``), against the cores the measurement leaves free;
* time the hypervisor stole from this VM (``steal`` in ``/proc/stat``);
* the reference probe (``harness.devices.probe``), timed beside the candidate, against its
  calibrated quiet time;
* other compute processes on the measured GPU (NVML), supplied by the device.

A window with any of these over its threshold is contended; ``HostMonitor.evidence`` says which
and by how much, and names the busiest other processes.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import psutil

from harness.records import ContentionEvidence

# Other processes may use this many cores beyond those the measurement leaves free: daemons and
# the harness's own bookkeeping come and go.
OTHERS_SLACK_CORES = 0.25
STEAL_LIMIT = 0.10  # share of the host's CPU time the hypervisor took
# Probe slower than this times its calibrated quiet time: a VM drifts by up to ~1.4x between
# runs, which drift correction absorbs; contention from spinning threads is 10x and more.
PROBE_SLOWDOWN_LIMIT = 2.0
TICK_S = 0.01  # /proc/stat counts CPU time in 10-ms ticks: two per CPU are forgiven a window
BUSIEST_SHOWN = 3
# The shortest window judged: CPU time is counted in ticks, too coarse for a few milliseconds.
# A shorter measurement is followed by an idle wait that completes the window.
MIN_EVIDENCE_S = 0.2
# Seconds a measurement must have run before the host's activity can stop it early as contended
EARLY_VERDICT_S = 0.5


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU time counters at one instant: the host's busy and stolen time, and this process's."""

    wall_s: float
    host_busy_s: float
    host_steal_s: float
    own_s: float

    @classmethod
    def now(cls) -> CpuSnapshot:
        host = psutil.cpu_times()
        busy = sum(getattr(host, name, 0.0) for name in ("user", "nice", "system", "irq",
                                                          "softirq"))
        own = psutil.Process().cpu_times()  # this process only: its children are other work
        return cls(time.monotonic(), busy, getattr(host, "steal", 0.0), own.user + own.system)


def logical_cores() -> int:
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else psutil.cpu_count() or 1


def _load_1m() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def judge(window_s: float, others_cores: float, free_cores: float, steal_share: float,
          probe_slowdown: float | None, other_device_processes: list[str]) -> list[str]:
    """The reasons a window was contended; empty when it was quiet."""
    reasons = []
    if others_cores > free_cores + OTHERS_SLACK_CORES:
        reasons.append(f"other processes used {others_cores:.2f} cores over {window_s:.2f} s; "
                       f"the measurement left {free_cores:g} free")
    if steal_share > STEAL_LIMIT:
        reasons.append(f"the hypervisor stole {100 * steal_share:.0f}% of CPU time")
    if probe_slowdown is not None and probe_slowdown > PROBE_SLOWDOWN_LIMIT:
        reasons.append(f"the reference probe ran {probe_slowdown:.1f}x its calibrated quiet time")
    if other_device_processes:
        reasons.append(f"other processes computed on the device: "
                       f"{', '.join(other_device_processes)}")
    return reasons


class HostMonitor:
    """Watches the host from ``start`` (or the last ``restart``) for a measurement that runs
    ``threads`` threads; ``evidence`` judges the window so far."""

    def __init__(self, threads: int) -> None:
        self.free_cores = max(logical_cores() - threads, 0)
        self.start = CpuSnapshot.now()

    def restart(self) -> None:
        self.start = CpuSnapshot.now()

    def others_cores(self) -> tuple[float, float, float]:
        """(window seconds, cores other processes used, share stolen) since the start."""
        end = CpuSnapshot.now()
        window = max(end.wall_s - self.start.wall_s, 1e-6)
        cpus = logical_cores()
        others = (end.host_busy_s - self.start.host_busy_s) - (end.own_s - self.start.own_s)
        others = max(others - 2 * TICK_S * cpus, 0.0)  # counters tick every 10 ms per CPU
        steal = max(end.host_steal_s - self.start.host_steal_s - 2 * TICK_S * cpus, 0.0)
        return window, others / window, steal / (window * cpus)

    def plainly_busy(self) -> bool:
        """Whether other processes have taken half a core more than the measurement left free
        for at least ``EARLY_VERDICT_S``: sampling on would only be retaken."""
        window, others, _ = self.others_cores()
        return window >= EARLY_VERDICT_S and others > self.free_cores + 0.5

    def evidence(self, probe_slowdown: float | None = None,
                 other_device_processes: list[str] | None = None) -> ContentionEvidence:
        short_by = MIN_EVIDENCE_S - (time.monotonic() - self.start.wall_s)
        if short_by > 0:
            time.sleep(short_by)
        window, others, steal = self.others_cores()
        device_processes = other_device_processes or []
        reasons = judge(window, others, self.free_cores, steal, probe_slowdown, device_processes)
        return ContentionEvidence(
            window_s=window, others_cores=others, free_cores=self.free_cores, steal_share=steal,
            probe_slowdown=probe_slowdown, load_1m=_load_1m(),
            other_device_processes=device_processes,
            busiest=busiest_processes() if reasons else [], reasons=reasons,
        )


def busiest_processes(sample_s: float = 0.2, shown: int = BUSIEST_SHOWN) -> list[str]:
    """The other processes using the most CPU now, as ``name (pid N) X% CPU``: what a user
    must stop, named. Costs ``sample_s``; only called once a window is found contended."""
    me = os.getpid()
    processes = []
    for process in psutil.process_iter(["name"]):
        if process.pid == me:
            continue
        try:
            process.cpu_percent(None)
            processes.append(process)
        except psutil.Error:
            continue
    time.sleep(sample_s)
    usage = []
    for process in processes:
        try:
            usage.append((process.cpu_percent(None), process.pid, process.info["name"]))
        except psutil.Error:
            continue
    usage.sort(reverse=True)
    return [f"{name} (pid {pid}) {percent:.0f}% CPU" for percent, pid, name in usage[:shown]
            if percent >= 5]


def wait_for_quiet(threads: int, longest_s: float, step_s: float = 0.25) -> float:
    """Sleep until a ``step_s`` window in which other processes leave this measurement its cores,
    or ``longest_s`` has passed; the seconds waited. This process is idle meanwhile, so all
    the busy time it sees is other work."""
    monitor = HostMonitor(threads)
    started = time.monotonic()
    while time.monotonic() - started < longest_s:
        time.sleep(min(step_s, max(longest_s - (time.monotonic() - started), 0.0)))
        window, others, steal = monitor.others_cores()
        if not judge(window, others, monitor.free_cores, steal, None, []):
            break
        monitor.restart()
    return time.monotonic() - started
