"""The host CPU: wall-clock timing of PyTorch eager inference."""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

import psutil
import torch

from harness.devices.base import BaseDevice, register_device_kind
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


def cpu_flags() -> frozenset[str]:
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


def _read_sysfs(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


@register_device_kind
class CpuDevice(BaseDevice):
    kind = "cpu"

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
            "governor": _read_sysfs("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
            "isa_flags": sorted(cpu_flags() & ISA_FLAGS_OF_INTEREST),
            "quantized_engine": torch.backends.quantized.engine,
        }

    def configure(self, protocol: MeasurementProtocol) -> None:
        torch.set_num_threads(self.threads(protocol))

    def time_call(self, model: torch.nn.Module, inputs: torch.Tensor) -> float:
        start = time.perf_counter_ns()
        model(inputs)
        return (time.perf_counter_ns() - start) / 1e6
