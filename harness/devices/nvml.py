"""NVML readings for the CUDA device kind, through ``pynvml`` (the nvidia-ml-py package).

Every reading is optional: NVML is absent on CPU-only hosts and on Jetson boards, a function may
be missing from an old driver or pynvml, and an old GPU may not support it (the total-energy
counter needs Volta or newer). So nothing here raises for those: ``open_nvml`` returns the reason
instead of a library, and a reading the GPU or driver cannot give is ``None``.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

# Bits of nvmlClocksEventReason* (the same values as the deprecated ClocksThrottleReason*) that
# mean the GPU ran below the clock it could: GPU idle, application clocks set by the user, sync
# boost and display clock settings are left out, since they are not throttling.
THROTTLE_REASONS = {
    0x04: "sw_power_cap",
    0x08: "hw_slowdown",
    0x20: "sw_thermal",
    0x40: "hw_thermal",
    0x80: "hw_power_brake",
}
CLOCK_SM = 1  # NVML_CLOCK_SM
CLOCK_MEM = 2  # NVML_CLOCK_MEM
TEMPERATURE_GPU = 0  # NVML_TEMPERATURE_GPU


def decode_throttle_reasons(mask: int) -> list[str]:
    """Names of the throttling bits set in a clocks-event reason mask."""
    return [name for bit, name in THROTTLE_REASONS.items() if mask & bit]


def _text(value: Any) -> str:
    """NVML strings are ``bytes`` in old pynvml releases and ``str`` in new ones."""
    return value.decode() if isinstance(value, bytes) else str(value)


class Nvml:
    """An initialised NVML library; each reading is ``None`` where the GPU or driver lacks it."""

    def __init__(self, module: ModuleType) -> None:
        self.module = module

    def _read(self, function: str, *args: Any) -> Any:
        """``pynvml.<function>(*args)``, or None when this pynvml lacks the function or NVML
        answers with an error (not supported on this GPU, function not found in this driver)."""
        call = getattr(self.module, function, None)
        if call is None:
            return None
        try:
            return call(*args)
        except self.module.NVMLError:
            return None

    def device_count(self) -> int:
        return self._read("nvmlDeviceGetCount") or 0

    def handle(self, index: int) -> Any:
        """Handle of the GPU NVML numbers ``index`` (PCI order, not CUDA's), or None."""
        return self._read("nvmlDeviceGetHandleByIndex", index)

    def handle_by_uuid(self, uuid: str) -> Any:
        """Handle of the GPU with this UUID ("GPU-..." as NVML writes it), or None."""
        return self._read("nvmlDeviceGetHandleByUUID", uuid)

    def names(self) -> list[str]:
        """Names of every GPU NVML sees, whatever CUDA_VISIBLE_DEVICES hides from CUDA."""
        handles = (self.handle(index) for index in range(self.device_count()))
        return [name for name in (self.name(h) for h in handles if h is not None) if name]

    def name(self, handle: Any) -> str | None:
        name = self._read("nvmlDeviceGetName", handle)
        return None if name is None else _text(name)

    def driver_version(self) -> str | None:
        version = self._read("nvmlSystemGetDriverVersion")
        return None if version is None else _text(version)

    def total_energy_mj(self, handle: Any) -> int | None:
        """Millijoules used since the driver loaded (Volta and newer; None before)."""
        return self._read("nvmlDeviceGetTotalEnergyConsumption", handle)

    def power_mw(self, handle: Any) -> int | None:
        """Power draw in milliwatts, as the driver reports it (averaged on some GPUs)."""
        return self._read("nvmlDeviceGetPowerUsage", handle)

    def power_limit_mw(self, handle: Any) -> int | None:
        """The power limit the driver enforces, in milliwatts."""
        return self._read("nvmlDeviceGetEnforcedPowerLimit", handle)

    def sm_clock_mhz(self, handle: Any) -> int | None:
        return self._read("nvmlDeviceGetClockInfo", handle, CLOCK_SM)

    def memory_clock_mhz(self, handle: Any) -> int | None:
        return self._read("nvmlDeviceGetClockInfo", handle, CLOCK_MEM)

    def temperature_c(self, handle: Any) -> int | None:
        return self._read("nvmlDeviceGetTemperature", handle, TEMPERATURE_GPU)

    def throttle_reasons(self, handle: Any) -> list[str] | None:
        """Throttling reasons in force now; None if the driver cannot say. The clocks-event call
        replaced the clocks-throttle one in driver 535; older drivers only have the latter."""
        mask = self._read("nvmlDeviceGetCurrentClocksEventReasons", handle)
        if mask is None:
            mask = self._read("nvmlDeviceGetCurrentClocksThrottleReasons", handle)
        return None if mask is None else decode_throttle_reasons(mask)

    def compute_processes(self, handle: Any) -> list[tuple[int, str]]:
        """(pid, name) of the processes computing on the GPU now; names where the host shows
        them (a process of another container shows only its pid)."""
        processes = self._read("nvmlDeviceGetComputeRunningProcesses", handle) or []
        found = []
        for process in processes:
            name = self._read("nvmlSystemGetProcessName", process.pid)
            found.append((process.pid, _text(name) if name else "?"))
        return found

    def conditions(self, handle: Any) -> dict[str, Any]:
        """What decides speed right now: clocks, temperature, power and throttling, plain JSON."""
        power, limit = self.power_mw(handle), self.power_limit_mw(handle)
        return {
            "sm_clock_mhz": self.sm_clock_mhz(handle),
            "memory_clock_mhz": self.memory_clock_mhz(handle),
            "temperature_c": self.temperature_c(handle),
            "power_w": None if power is None else power / 1000,
            "power_limit_w": None if limit is None else limit / 1000,
            "throttle_reasons": self.throttle_reasons(handle),
        }


def open_nvml(module: ModuleType | None = None) -> Nvml | str:
    """An initialised NVML, or why there is none. ``module`` replaces ``pynvml`` (tests)."""
    if module is None:
        try:
            import pynvml as module
        except ImportError as error:
            return f"pynvml (nvidia-ml-py) is not installed ({error})"
    try:
        module.nvmlInit()
    except module.NVMLError as error:
        return f"NVML could not start: {error}"
    return Nvml(module)
