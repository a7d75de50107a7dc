"""The host CPU: wall-clock timing of PyTorch eager inference."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

import psutil
import torch

from harness.devices.base import (
    MeasuredDevice,
    register_device_kind,
)
from harness.devices.rapl import POWERCAP_ROOT, measure_package_energy, probe_rapl
from harness.devices.sysfs import read_sysfs
from harness.layers import inference_context
from harness.records import EnergyRecord
from harness.timing import MeasurementProtocol

# Kernel knobs that run faster than fp32 only with one of these CPU instruction-set flags: int8
# dynamic quantisation needs fbgemm's AVX2 kernels; bf16/fp16 need native support, without which
# they are emulated and slower than fp32 (bf16 was ~8x slower on an AVX2-only host).
CPU_FLAGS_NEEDED: dict[tuple[str, str], tuple[str, ...]] = {
    ("precision", "int8"): ("avx2",),
    ("precision", "bf16"): ("avx512_bf16", "amx_bf16"),
    ("precision", "fp16"): ("avx512_fp16", "amx_fp16"),
}


# Recorded with every measurement: the instruction sets that decide low-precision speed.
ISA_FLAGS_OF_INTEREST = frozenset({"avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16",
                                   "avx512_fp16", "amx_bf16", "amx_int8", "amx_fp16"})


# Replaces the detected instruction-set flags (space- or comma-separated), to see what the
# harness does on another CPU: the test suite runs with it set both with and without avx512_bf16.
CPU_FLAGS_VARIABLE = "HARNESS_CPU_FLAGS"


def cpu_flags() -> frozenset[str]:
    forced = os.environ.get(CPU_FLAGS_VARIABLE)
    if forced is not None:
        return frozenset(forced.replace(",", " ").split())
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_model_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


CPU_SYSFS = Path("/sys/devices/system/cpu")


def turbo_enabled(root: Path = CPU_SYSFS) -> bool | None:
    """Whether the CPU may boost above its base clock: ``cpufreq/boost`` (acpi-cpufreq,
    amd-pstate) or intel_pstate's ``no_turbo``; None when neither is readable (VMs)."""
    boost = read_sysfs(root / "cpufreq" / "boost")
    if boost in ("0", "1"):
        return boost == "1"
    no_turbo = read_sysfs(root / "intel_pstate" / "no_turbo")
    if no_turbo in ("0", "1"):
        return no_turbo == "0"
    return None


def cpu_affinity() -> list[int] | None:
    """The CPUs this process may run on; None where the OS cannot say (macOS)."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    return sorted(os.sched_getaffinity(0))


def cpu_frequency_mhz() -> dict[str, float] | None:
    """Current, minimum and maximum clock (MHz) as psutil reads them; None when unavailable."""
    try:
        frequency = psutil.cpu_freq()
    except (OSError, NotImplementedError):
        return None
    if frequency is None:
        return None
    return {"current": round(frequency.current, 1), "min": round(frequency.min, 1),
            "max": round(frequency.max, 1)}


@register_device_kind
class CpuDevice(MeasuredDevice):
    kind = "cpu"
    powercap_root: Path = POWERCAP_ROOT  # where RAPL is read; tests point it at a fake tree

    def availability(self) -> tuple[bool, str]:
        return True, "the host CPU is always present"

    def hardware_accelerates(self, knob: str, value: str) -> tuple[bool, str]:
        needed = CPU_FLAGS_NEEDED.get((knob, value))
        if needed is None:
            return True, f"{value} on this CPU"
        found = sorted(set(needed) & cpu_flags())
        if not found:
            return False, f"this CPU lacks {' or '.join(needed)}: {value} would run slower than fp32"
        return True, f"{value} with {', '.join(found)}"

    def threads(self, protocol: MeasurementProtocol) -> int:
        return protocol.threads or psutil.cpu_count(logical=False) or psutil.cpu_count() or 1

    def describe(self) -> dict[str, Any]:
        return {
            "cpu_model": cpu_model_name(),
            "physical_cores": psutil.cpu_count(logical=False),
            "logical_cores": psutil.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "governor": read_sysfs(CPU_SYSFS / "cpu0" / "cpufreq" / "scaling_governor"),
            "turbo": turbo_enabled(),
            "affinity": cpu_affinity(),
            "cpu_freq_mhz": cpu_frequency_mhz(),
            "isa_flags": sorted(cpu_flags() & ISA_FLAGS_OF_INTEREST),
            "isa_flags_forced_by": CPU_FLAGS_VARIABLE if CPU_FLAGS_VARIABLE in os.environ else None,
            "quantized_engine": torch.backends.quantized.engine,
        }

    def configure(self, protocol: MeasurementProtocol) -> None:
        torch.set_num_threads(self.threads(protocol))

    def measuring_threads(self, protocol: MeasurementProtocol) -> int:
        return self.threads(protocol)

    def measure_energy(
        self, model: torch.nn.Module, inputs: torch.Tensor, protocol: MeasurementProtocol
    ) -> EnergyRecord:
        """Joules per call from the RAPL package counters; unavailable, with the reason, when they
        cannot be read: never a TDP-based guess."""
        packages = probe_rapl(self.powercap_root)
        if not packages.readable:
            return EnergyRecord.unavailable(packages.reason)
        self.configure(protocol)
        with inference_context(model):
            return measure_package_energy(packages, lambda: model(inputs), protocol)

    def time_call(self, model: torch.nn.Module, inputs: torch.Tensor) -> float:
        start = time.perf_counter_ns()
        model(inputs)
        return (time.perf_counter_ns() - start) / 1e6
