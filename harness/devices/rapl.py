"""CPU package energy from RAPL through the Linux powercap sysfs interface.

The rapl driver exposes one zone per package, ``/sys/class/powercap/intel-rapl:N`` (AMD CPUs
appear there too), whose ``name`` is ``package-N``; its subzones ``intel-rapl:N:M`` (``core``,
``uncore``, sometimes ``dram``) measure parts of what the package zone already counts, and a
``psys`` zone counts the whole platform. Only the package zones are summed, so nothing is counted
twice; DRAM energy is thus left out where it is a subzone or a zone of its own.

``energy_uj`` is a monotonic counter in microjoules that wraps to 0 after
``max_energy_range_uj``; a negative difference means it wrapped once (windows last seconds, a wrap
takes minutes even at full power, so two wraps in one window cannot happen). Since CVE-2020-8694
(a power side channel) ``energy_uj`` is readable by root only on most kernels, and VMs usually
expose no RAPL at all: both are reported with the reason, never raised and never replaced by a
TDP guess.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.devices.energy import EnergyWindow, energy_per_call
from harness.devices.sysfs import read_sysfs
from harness.records import EnergyRecord
from harness.timing import MeasurementProtocol

POWERCAP_ROOT = Path("/sys/class/powercap")
_TOP_LEVEL_ZONE = re.compile(r"intel-rapl:\d+")  # not intel-rapl:N:M subzones, not intel-rapl-mmio


@dataclass(frozen=True)
class RaplZone:
    """One package zone: its ``name`` (``package-0``), sysfs directory and counter range."""

    name: str
    path: Path
    max_energy_range_uj: int

    def read_uj(self) -> int:
        return int((self.path / "energy_uj").read_text())


@dataclass(frozen=True)
class RaplPackages:
    """The package zones of a host, or none and ``reason`` saying why they cannot be read."""

    zones: tuple[RaplZone, ...]
    reason: str

    @property
    def readable(self) -> bool:
        return bool(self.zones)

    def read(self) -> tuple[int, ...]:
        """Each zone's counter in microjoules.

        Raises:
            OSError: a counter that was readable when probed no longer is.
        """
        return tuple(zone.read_uj() for zone in self.zones)


def counter_delta_uj(before: int, after: int, max_energy_range_uj: int) -> int:
    """Microjoules between two readings of a counter that wraps to 0 past its range."""
    delta = after - before
    return delta + max_energy_range_uj + 1 if delta < 0 else delta


def probe_rapl(root: Path = POWERCAP_ROOT) -> RaplPackages:
    """The readable package zones under ``root``, or why there are none; never raises."""
    try:
        candidates = sorted(p for p in root.iterdir() if _TOP_LEVEL_ZONE.fullmatch(p.name))
    except OSError:  # absent, or not a directory
        candidates = []
    if not candidates:
        return RaplPackages((), f"no RAPL powercap interface (no {root}/intel-rapl:N zone): not "
                                "exposed in this VM/kernel, or the rapl driver is not loaded")
    names = {path: read_sysfs(path / "name") or "unnamed" for path in candidates}
    packages = [path for path in candidates if names[path].startswith("package")]
    if not packages:
        found = ", ".join(f"{path.name} ({names[path]})" for path in candidates)
        return RaplPackages((), f"no RAPL package zone under {root} (found: {found})")
    zones = []
    for path in packages:
        zone, problem = _open_zone(path, names[path])
        if zone is None:
            return RaplPackages((), problem)
        zones.append(zone)
    described = ", ".join(f"{zone.name} ({zone.path.name})" for zone in zones)
    return RaplPackages(tuple(zones), f"RAPL {described} energy_uj")


def _open_zone(path: Path, name: str) -> tuple[RaplZone | None, str]:
    """The zone, after reading its counter once, or None and why it cannot be read."""
    counter = path / "energy_uj"
    try:
        reading = counter.read_text()
    except PermissionError:
        return None, (f"energy_uj is root-only since CVE-2020-8694; run as root or "
                      f"`sudo chmod o+r {counter}` (until reboot)")
    except OSError as error:
        return None, f"cannot read {counter}: {error.strerror or error}"
    try:
        int(reading)
        max_range = int((path / "max_energy_range_uj").read_text())
    except OSError as error:
        return None, f"cannot read RAPL zone {path}: {error.strerror or error}"
    except ValueError as error:
        return None, f"unexpected contents in RAPL zone {path}: {error}"
    return RaplZone(name, path, max_range), ""


@dataclass(frozen=True)
class CounterWindow:
    """Counter readings (µJ, one per zone) at the start and end of a window, how long it lasted,
    and how many calls of the workload ran in it (0 for the idle window)."""

    start_uj: tuple[int, ...]
    end_uj: tuple[int, ...]
    seconds: float
    calls: int = 0

    def joules(self, zones: Sequence[RaplZone]) -> float:
        return sum(
            counter_delta_uj(before, after, zone.max_energy_range_uj)
            for zone, before, after in zip(zones, self.start_uj, self.end_uj, strict=True)
        ) / 1e6

    def energy(self, zones: Sequence[RaplZone]) -> EnergyWindow:
        return EnergyWindow(self.joules(zones), self.calls, self.seconds)


def package_energy(
    packages: RaplPackages, idle: CounterWindow, windows: Sequence[CounterWindow]
) -> EnergyRecord:
    """Joules per call over ``windows`` (``energy_per_call``), and the idle power apart. Pure
    arithmetic, so it is tested without RAPL.

    A window in which the counters did not move at all is a frozen counter (some VMs expose one),
    not a free inference: the result is then unavailable, saying so."""
    idle_power_w = idle.energy(packages.zones).power_w

    def frozen(window: EnergyWindow) -> str:
        return (f"{packages.reason} did not move over a {window.seconds:.2f} s window while the "
                "model ran: the counter is frozen or not updated on this host")

    reason = (f"{packages.reason}: whole-package energy, which includes idle power "
              f"({idle_power_w:.1f} W measured apart over {idle.seconds:.1f} s) and every other "
              "process on the package; DRAM zones not counted")
    return energy_per_call([window.energy(packages.zones) for window in windows], "rapl", reason,
                           idle_power_w, frozen)


def measure_package_energy(
    packages: RaplPackages, run_once: Callable[[], object], protocol: MeasurementProtocol
) -> EnergyRecord:
    """Idle power over ``protocol.idle_s``, then ``protocol.energy_windows`` windows that loop
    ``run_once`` for at least ``protocol.energy_window_s`` each.

    The caller sets threads and inference mode; one call runs before the windows so lazy
    initialisation does not land in the first.
    """
    try:
        idle_start_uj = packages.read()
        start = time.perf_counter()
        time.sleep(protocol.idle_s)
        idle = CounterWindow(idle_start_uj, packages.read(), time.perf_counter() - start)
        run_once()
        windows = [_window(packages, run_once, protocol.energy_window_s)
                   for _ in range(protocol.energy_windows)]
    except OSError as error:
        return EnergyRecord.unavailable(f"{packages.reason} stopped being readable: {error}")
    return package_energy(packages, idle, windows)


def _window(packages: RaplPackages, run_once: Callable[[], object], min_s: float) -> CounterWindow:
    """Call ``run_once`` until ``min_s`` has passed (at least once), between two readings."""
    start_uj = packages.read()
    start = time.perf_counter()
    calls = 0
    while True:
        run_once()
        calls += 1
        if time.perf_counter() - start >= min_s:
            break
    seconds = time.perf_counter() - start
    return CounterWindow(start_uj, packages.read(), seconds, calls)
