"""FPGA boards, estimated from HLS reports: no board and no vendor tool needed at search time.

A profile of kind ``fpga-hls`` names the part (its resources from the vendor datasheet), the
clock, the off-chip bandwidth and the engine (``harness.fpga.estimate.Engine``). Latency, power
and resources come from the cost model calibrated on the reports imported for the device
(``harness hls import``); every number says so in its ``status`` and ``source``.
"""

from __future__ import annotations

import time
from functools import cached_property
from typing import Any, ClassVar

import torch

from harness.config import CandidateConfig, check_value
from harness.devices.base import (
    BaseDevice,
    DeviceProfile,
    register_device_kind,
)
from harness.errors import ConfigError, DeviceError, HarnessError, shorten
from harness.fpga.calibration import Calibration, calibration_dir, fit_calibration, load_entries
from harness.fpga.estimate import (
    CHECKED_RESOURCES,
    DATASHEET_DSP_PER_LANE,
    PRECISION_BITS,
    TEMPLATES,
    Engine,
    FpgaEstimate,
    FpgaTarget,
)
from harness.fpga.estimate import estimate as estimate_on_fpga
from harness.records import EnergyRecord, LatencyRecord, MeasurementRecord
from harness.timing import MeasurementProtocol

REQUIRED_HARDWARE = ("part", "resources", "clock_mhz", "memory_bandwidth_gbs")


@register_device_kind
class FpgaHlsDevice(BaseDevice):
    kind = "fpga-hls"
    constraint_keys: ClassVar[tuple[str, ...]] = tuple(f"fpga:{r}" for r in CHECKED_RESOURCES)

    def __init__(self, profile: DeviceProfile) -> None:
        super().__init__(profile)
        self._estimates: dict[tuple[str, int], FpgaEstimate] = {}

    @classmethod
    def parse_engine(cls, document: dict[str, Any], source: str) -> dict[str, Any]:
        hardware = document.get("hardware") or {}
        missing = [key for key in REQUIRED_HARDWARE if key not in hardware]
        if missing:
            raise DeviceError(f"{source}: hardware.{missing[0]}: required for kind fpga-hls "
                              f"(needs {', '.join(REQUIRED_HARDWARE)})")
        values = document.get("engine")
        if not isinstance(values, dict):
            raise DeviceError(f"{source}: engine: required for kind fpga-hls: a mapping with "
                              f"template ({' or '.join(TEMPLATES)}), pe, simd, lanes")
        known = ("template", "pe", "simd", "lanes", "sparsity")
        for key, value in values.items():
            where = f"{source}: engine.{key}"
            if key not in known:
                raise DeviceError(f"{where}: unknown key; valid: {', '.join(known)}")
            if key == "template" and value not in TEMPLATES:
                raise DeviceError(f"{where}: expected one of {', '.join(TEMPLATES)}, got "
                                  f"{shorten(value)}")
            if key in ("pe", "simd", "lanes") and (
                    isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise DeviceError(f"{where}: expected a positive integer, got {shorten(value)}")
            if key == "sparsity":
                if not isinstance(value, list):
                    raise DeviceError(f"{where}: expected a list of weight_sparsity patterns")
                for pattern in value:
                    try:
                        check_value("weight_sparsity", pattern)
                    except ConfigError as error:
                        raise DeviceError(f"{source}: engine.sparsity: {error}") from None
        absent = [key for key in ("template", "pe", "simd", "lanes") if key not in values]
        if absent:
            raise DeviceError(f"{source}: engine.{absent[0]}: required")
        return dict(values)

    @cached_property
    def engine(self) -> Engine:
        values = self.profile.engine
        return Engine(values["template"], values["pe"], values["simd"], values["lanes"],
                      tuple(values.get("sparsity", ())))

    @cached_property
    def target(self) -> FpgaTarget:
        hardware = self.profile.hardware
        return FpgaTarget(hardware["part"], dict(hardware["resources"]), hardware["clock_mhz"],
                          hardware["memory_bandwidth_gbs"])

    @cached_property
    def calibration(self) -> Calibration:
        return fit_calibration(self.name, load_entries(self.name))

    def availability(self) -> tuple[bool, str]:
        try:
            label = self.calibration.label
        except HarnessError as error:
            return False, f"its calibration records cannot be read: {error}"
        return True, f"no board needed: {label}"

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "part": self.target.part,
            "clock_mhz": self.target.clock_mhz,
            "memory_bandwidth_gbs": self.target.memory_bandwidth_gbs,
            "engine": dict(self.profile.engine),
            "calibration": self.calibration.label,
            "calibration_dir": str(calibration_dir(self.name)),
        }

    def latency_model(self) -> str:
        return self.calibration.label

    def hardware_accelerates(self, knob: str, value: str) -> tuple[bool, str]:
        if knob == "precision":
            bits = PRECISION_BITS[value]
            return True, (f"{bits}-bit matrix unit, {DATASHEET_DSP_PER_LANE[bits]:g} DSP per "
                          f"MAC lane by the datasheet rule")
        return True, "the matrix unit skips the zero weights"

    def estimate(self, config: CandidateConfig, batch_size: int) -> FpgaEstimate:
        # a search asks twice per candidate: its resources before building, then its latency
        key = (config.key(), batch_size)
        if key not in self._estimates:
            self._estimates[key] = estimate_on_fpga(config, batch_size, self.engine, self.target,
                                                    self.calibration)
        return self._estimates[key]

    def resource_violations(self, config: CandidateConfig, batch_size: int) -> dict[str, float]:
        return self.estimate(config, batch_size).violations

    def evaluate(self, config: CandidateConfig, model: torch.nn.Module, inputs: torch.Tensor,
                 protocol: MeasurementProtocol) -> MeasurementRecord:
        self.check_runtime(config)
        start = time.perf_counter()
        result = self.estimate(config, protocol.batch_size)
        ms = result.latency_ms
        band = None if result.error_pct is None else (ms * (1 - result.error_pct / 100),
                                                      ms * (1 + result.error_pct / 100))
        return MeasurementRecord(
            # An estimate has no samples: no percentiles and no confidence interval, only the
            # calibration's fit error as a band.
            latency=LatencyRecord(median=ms, ci95=None, n=0, mean=ms, min=ms, max=ms,
                                  status="estimated", source=result.label, error_band=band),
            energy=self._energy(result, protocol),
            fpga=result.to_dict(),
            latency_samples_ms=[],
            protocol={"batch_size": protocol.batch_size, "method": "fpga cost model",
                      "template": self.engine.template},
            phase_s={"estimate": time.perf_counter() - start},
        )

    def _energy(self, result: FpgaEstimate, protocol: MeasurementProtocol) -> EnergyRecord:
        if not protocol.energy:
            return EnergyRecord.unavailable("energy estimate turned off (--no-energy)")
        if result.power_w is None:
            return EnergyRecord.unavailable(result.power_reason)
        return EnergyRecord(
            status="estimated", source="hls_power_model",
            reason=f"{result.power_w:.3f} W × estimated latency; {result.power_reason}",
            joules_per_call=result.power_w * result.latency_ms / 1e3)
