from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from harness.devices import get_device
from harness.devices.cpu import CpuDevice
from harness.devices.rapl import (
    CounterWindow,
    RaplPackages,
    RaplZone,
    counter_delta_uj,
    measure_package_energy,
    package_energy,
    probe_rapl,
)
from harness.records import EnergyRecord
from harness.stats import median_ci
from harness.timing import MeasurementProtocol

MAX_RANGE = 262_143_328_850  # a real package zone's max_energy_range_uj
FAST = MeasurementProtocol(threads=1, idle_s=0.02, energy_window_s=0.02, energy_windows=3)


def add_zone(root: Path, directory: str, name: str, energy_uj: int = 0) -> Path:
    zone = root / directory
    zone.mkdir(parents=True)
    (zone / "name").write_text(f"{name}\n")
    (zone / "energy_uj").write_text(f"{energy_uj}\n")
    (zone / "max_energy_range_uj").write_text(f"{MAX_RANGE}\n")
    return zone


@pytest.fixture
def two_sockets(tmp_path: Path) -> Path:
    """A two-package host as the powercap class lists it: subzones appear at the top level too,
    next to a psys zone and the MMIO interface to package 0."""
    root = tmp_path / "powercap"
    add_zone(root, "intel-rapl:0", "package-0", 1_000_000)
    add_zone(root, "intel-rapl:0:0", "core", 400_000)
    add_zone(root, "intel-rapl:0:1", "uncore", 100_000)
    add_zone(root, "intel-rapl:1", "package-1", 2_000_000)
    add_zone(root, "intel-rapl:1:0", "dram", 300_000)
    add_zone(root, "intel-rapl:2", "psys", 9_000_000)
    add_zone(root, "intel-rapl-mmio:0", "package-0", 1_000_000)
    (root / "intel-rapl").mkdir()  # the control type directory
    return root


def test_package_zones_are_read_and_subzones_ignored(two_sockets):
    packages = probe_rapl(two_sockets)
    assert packages.readable
    assert [(z.name, z.path.name) for z in packages.zones] == [
        ("package-0", "intel-rapl:0"), ("package-1", "intel-rapl:1")]
    assert packages.zones[0].max_energy_range_uj == MAX_RANGE
    assert packages.read() == (1_000_000, 2_000_000)
    assert packages.reason == "RAPL package-0 (intel-rapl:0), package-1 (intel-rapl:1) energy_uj"


def test_window_energy_is_summed_over_packages_across_a_wrap(two_sockets):
    zones = probe_rapl(two_sockets).zones
    window = CounterWindow(start_uj=(MAX_RANGE - 99, 5_000_000), end_uj=(50, 7_000_000), seconds=1.0)
    assert counter_delta_uj(MAX_RANGE - 99, 50, MAX_RANGE) == 150
    assert counter_delta_uj(100, 250, MAX_RANGE) == 150
    assert window.joules(zones) == pytest.approx((150 + 2_000_000) / 1e6)


@pytest.mark.parametrize("make", [lambda root: None, lambda root: root.mkdir()])
def test_no_powercap_interface_is_unavailable_with_the_reason(tmp_path, make):
    root = tmp_path / "powercap"
    make(root)
    packages = probe_rapl(root)
    assert not packages.readable and packages.zones == ()
    assert "no RAPL powercap interface" in packages.reason
    assert "not exposed in this VM/kernel" in packages.reason


def test_no_package_zone_names_what_was_found(tmp_path):
    add_zone(tmp_path, "intel-rapl:0", "psys")
    packages = probe_rapl(tmp_path)
    assert not packages.readable
    assert packages.reason == f"no RAPL package zone under {tmp_path} (found: intel-rapl:0 (psys))"


def test_root_only_counter_is_unavailable_with_the_cve_reason(two_sockets):
    counter = two_sockets / "intel-rapl:1" / "energy_uj"
    counter.chmod(0)
    try:
        if os.access(counter, os.R_OK):
            pytest.skip("running as root: a mode-000 file is still readable")
        packages = probe_rapl(two_sockets)
    finally:
        counter.chmod(0o644)
    assert not packages.readable
    assert "energy_uj is root-only since CVE-2020-8694" in packages.reason
    assert f"chmod o+r {counter}" in packages.reason


def test_permission_error_gives_the_cve_reason_even_as_root(two_sockets, monkeypatch):
    read_text = Path.read_text

    def deny_energy(path: Path, *args, **kwargs) -> str:
        if path.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(path))
        return read_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", deny_energy)
    packages = probe_rapl(two_sockets)
    assert not packages.readable
    assert packages.reason.startswith("energy_uj is root-only since CVE-2020-8694; run as root")


def test_unparsable_counter_is_unavailable_with_the_reason(two_sockets):
    (two_sockets / "intel-rapl:0" / "energy_uj").write_text("n/a\n")
    packages = probe_rapl(two_sockets)
    assert not packages.readable
    assert packages.reason.startswith(f"unexpected contents in RAPL zone {two_sockets}/intel-rapl:0")


def test_package_energy_from_synthetic_readings():
    zones = (RaplZone("package-0", Path("p0"), 999), RaplZone("package-1", Path("p1"), MAX_RANGE))
    packages = RaplPackages(zones, "RAPL package-0 (intel-rapl:0), package-1 (intel-rapl:1) energy_uj")
    idle = CounterWindow((900, 0), (100, 10_000_000), seconds=2.0)  # 200 µJ across the wrap + 10 J
    joules = [3.0, 2.0, 2.5, 2.2, 4.0, 2.4, 2.3]  # per window, 10 calls each
    windows = [CounterWindow((0, 0), (0, int(j * 1e6)), seconds=1.0 + i / 100, calls=10)
               for i, j in enumerate(joules)]
    energy = package_energy(packages, idle, windows)
    per_call = [j / 10 for j in joules]
    assert (energy.status, energy.source, energy.windows) == ("measured", "rapl", 7)
    assert energy.joules_per_call == pytest.approx(0.24)
    assert energy.ci95 == pytest.approx(median_ci(per_call))
    assert energy.ci95[0] <= energy.joules_per_call <= energy.ci95[1]
    assert energy.idle_power_w == pytest.approx((200 + 10_000_000) / 1e6 / 2.0)
    assert energy.window_s == pytest.approx(1.03)
    assert "package-0 (intel-rapl:0), package-1 (intel-rapl:1)" in energy.reason
    assert "whole-package energy" in energy.reason and "other process" in energy.reason
    assert energy.to_json()["ci95"] == list(energy.ci95)


class BumpsCounter(torch.nn.Module):
    """A 'model' whose every call adds 1 mJ to a fake package counter, wrapping like RAPL."""

    def __init__(self, counter: Path) -> None:
        super().__init__()
        self.counter = counter
        self.calls = 0

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        value = int(self.counter.read_text()) + 1000
        self.counter.write_text(str(value % (MAX_RANGE + 1)))
        self.calls += 1
        return inputs


def test_cpu_device_measures_joules_per_call_on_a_fake_counter(two_sockets, fast_device_file):
    counter = two_sockets / "intel-rapl:0" / "energy_uj"
    counter.write_text(str(MAX_RANGE - 5000))  # wraps within the first calls
    device = get_device(str(fast_device_file))
    assert isinstance(device, CpuDevice)
    device.powercap_root = two_sockets
    model = BumpsCounter(counter)
    energy = device.measure_energy(model, torch.zeros(1), FAST)
    assert energy.status == "measured" and energy.source == "rapl"
    assert energy.joules_per_call == pytest.approx(0.001)
    assert energy.ci95 == pytest.approx((0.001, 0.001))
    assert energy.idle_power_w == 0.0
    assert energy.windows == 3 and energy.window_s >= 0.02
    assert model.calls >= 4  # one before the windows, at least one in each
    assert torch.get_num_threads() == 1  # the protocol's threads were applied


def test_counter_that_disappears_mid_measurement_is_unavailable(two_sockets):
    packages = probe_rapl(two_sockets)
    counter = two_sockets / "intel-rapl:1" / "energy_uj"
    energy = measure_package_energy(packages, counter.unlink, FAST)
    assert energy.status == "unavailable" and energy.joules_per_call is None
    assert "stopped being readable" in energy.reason


def test_cpu_energy_on_this_host_is_measured_or_says_why(fast_device_file):
    device = get_device(str(fast_device_file))
    model = torch.nn.Linear(16, 16)
    energy = device.measure_energy(model, torch.randn(2, 16), FAST)
    assert isinstance(energy, EnergyRecord) and energy.status in ("measured", "estimated", "unavailable")
    assert energy.status != "estimated"  # never a TDP guess
    if energy.status == "unavailable":
        assert energy.reason and energy.joules_per_call is None and energy.source is None
    else:
        assert energy.source == "rapl" and energy.joules_per_call >= 0
        assert energy.windows == FAST.energy_windows and energy.idle_power_w >= 0


def test_a_counter_that_never_moves_is_unavailable_not_zero_joules(two_sockets, fast_device_file):
    device = get_device(str(fast_device_file))
    device.powercap_root = two_sockets
    energy = device.measure_energy(torch.nn.Identity(), torch.zeros(1), FAST)  # counters static
    assert energy.status == "unavailable" and energy.joules_per_call is None
    assert "did not move" in energy.reason and "frozen" in energy.reason
