"""The host CPU: wall-clock timing of PyTorch eager inference."""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

import psutil
import torch

from harness.devices.base import BaseDevice, register_device_kind
from harness.timing import LatencyMeasurement, MeasurementProtocol, measure_adaptively


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

    def threads(self, protocol: MeasurementProtocol) -> int:
        return protocol.threads or psutil.cpu_count(logical=False) or psutil.cpu_count() or 1

    def describe(self) -> dict[str, Any]:
        return {
            "cpu_model": cpu_model_name(),
            "physical_cores": psutil.cpu_count(logical=False),
            "logical_cores": psutil.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "governor": _read_sysfs("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        }

    def measure_latency(
        self, model: torch.nn.Module, inputs: torch.Tensor, protocol: MeasurementProtocol
    ) -> LatencyMeasurement:
        torch.set_num_threads(self.threads(protocol))

        def time_once() -> float:
            start = time.perf_counter_ns()
            model(inputs)
            return (time.perf_counter_ns() - start) / 1e6

        with torch.inference_mode():
            return measure_adaptively(time_once, protocol)
