"""Devices: profiles from ``device_profiles/*.yaml`` bound to the implementation of their kind."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.config import RUNTIMES, check_value
from harness.devices.base import DEVICE_KINDS, BaseDevice, DeviceProfile, register_device_kind
from harness.devices.cpu import CpuDevice
from harness.devices.cuda import CudaDevice
from harness.devices.fpga import FpgaHlsDevice
from harness.errors import ConfigError, DeviceError, shorten
from harness.fpga.records import RESOURCE_KEYS
from harness.knobs import KERNEL_KNOBS
from harness.timing import MeasurementProtocol
from harness.yaml_files import bundled_names, parse_yaml, read_named_or_path, string_field

SCHEMA_VERSION = 1
PROFILES_PACKAGE = "harness.device_profiles"
_PROTOCOL_FIELDS = {f.name: f.type for f in dataclasses.fields(MeasurementProtocol)}
PROFILE_KEYS = ("schema_version", "name", "kind", "description", "measurement", "accelerates",
                "runtimes", "hardware", "engine")


def bundled_device_names() -> list[str]:
    return bundled_names(PROFILES_PACKAGE)


def load_profile(name_or_path: str) -> DeviceProfile:
    """Load a bundled profile by name (``cpu``) or a profile YAML file by path."""
    text, source = read_named_or_path(name_or_path, PROFILES_PACKAGE, "device", DeviceError)
    return parse_profile(text, source)


def parse_profile(text: str, source: str) -> DeviceProfile:
    document = parse_yaml(text, source, DeviceError)
    if not isinstance(document, dict):
        raise DeviceError(f"{source}: expected a mapping with keys name, kind, measurement")
    if document.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
        raise DeviceError(f"{source}: schema_version: expected {SCHEMA_VERSION}")
    unknown = set(document) - set(PROFILE_KEYS)
    if unknown:
        raise DeviceError(f"{source}: unknown key {shorten(min(unknown, key=str))}; valid: "
                          f"{', '.join(PROFILE_KEYS)}")
    kind = document.get("kind")
    if kind not in DEVICE_KINDS:
        raise DeviceError(f"{source}: kind: expected one of {', '.join(DEVICE_KINDS)}, got "
                          f"{shorten(kind)}")
    return DeviceProfile(
        name=string_field(document, "name", Path(source).stem, source, DeviceError),
        kind=kind,
        description=string_field(document, "description", "", source, DeviceError),
        protocol=_parse_protocol(document.get("measurement") or {}, source, DEVICE_KINDS[kind]),
        source=source,
        accelerates=_parse_accelerates(document.get("accelerates") or {}, source),
        runtimes=_parse_runtimes(document.get("runtimes", ["eager"]), source),
        hardware=_parse_hardware(document.get("hardware") or {}, source),
        engine=DEVICE_KINDS[kind].parse_engine(document, source),
    )


def _parse_accelerates(values: Any, source: str) -> dict[str, tuple[str, ...]]:
    where = f"{source}: accelerates"
    if not isinstance(values, dict):
        raise DeviceError(f"{where}: expected a mapping of {' and '.join(KERNEL_KNOBS)} to lists")
    accelerates = {}
    for knob, listed in values.items():
        if knob not in KERNEL_KNOBS:
            raise DeviceError(f"{where}.{knob}: unknown knob; valid: {', '.join(KERNEL_KNOBS)}")
        if not isinstance(listed, list):
            raise DeviceError(f"{where}.{knob}: expected a list, got {shorten(listed)}")
        for value in listed:
            try:
                check_value(knob, value)
            except ConfigError as error:
                raise DeviceError(f"{where}.{error}") from None
        accelerates[knob] = tuple(listed)
    return accelerates


def _parse_runtimes(values: Any, source: str) -> tuple[str, ...]:
    where = f"{source}: runtimes"
    if not isinstance(values, list) or "eager" not in values:
        raise DeviceError(f"{where}: expected a list of runtimes that includes eager (the "
                          f"reference of the others); valid: {', '.join(RUNTIMES)}")
    for value in values:
        if value not in RUNTIMES:
            raise DeviceError(f"{where}: unknown runtime {shorten(value)}; valid: "
                              f"{', '.join(RUNTIMES)}")
    return tuple(values)


def _parse_protocol(values: Any, source: str, kind: type[BaseDevice]) -> MeasurementProtocol:
    if not isinstance(values, dict):
        raise DeviceError(f"{source}: measurement: expected a mapping")
    for key, value in values.items():
        if key not in _PROTOCOL_FIELDS:
            raise DeviceError(
                f"{source}: measurement.{key}: unknown key; valid: {', '.join(_PROTOCOL_FIELDS)}"
            )
        nullable = key == "threads"
        if value is None and nullable:
            continue
        if _PROTOCOL_FIELDS[key] == "bool":
            if not isinstance(value, bool):
                raise DeviceError(f"{source}: measurement.{key}: expected true or false, got "
                                  f"{shorten(value)}")
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise DeviceError(f"{source}: measurement.{key}: expected a positive number, got "
                              f"{shorten(value)}")
        if "int" in str(_PROTOCOL_FIELDS[key]) and not isinstance(value, int):
            raise DeviceError(f"{source}: measurement.{key}: expected a positive integer, got "
                              f"{shorten(value)}")
    for option in TIMING_OPTIONS:
        if values.get(option) and option not in kind.timing_options:
            raise DeviceError(f"{source}: measurement.{option}: devices of kind {kind.kind!r} "
                              f"do not use it; only {_kinds_using(option)}")
    try:
        return MeasurementProtocol(**values)
    except TypeError as error:
        raise DeviceError(f"{source}: measurement: {error}") from None


# What a profile's ``hardware:`` block may hold: datasheet figures (for roofline context) and the
# rules that recognise the device on a host.
PEAK_PRECISIONS = ("fp64", "fp32", "tf32", "fp16", "bf16", "fp8", "int8")
MATCH_RULES = ("nvml_name_contains",)


def _parse_hardware(values: Any, source: str) -> dict[str, Any]:
    where = f"{source}: hardware"
    if not isinstance(values, dict):
        raise DeviceError(f"{where}: expected a mapping")
    checks = {
        "match": lambda v: isinstance(v, dict) and set(v) <= set(MATCH_RULES)
        and all(isinstance(x, str) and x for x in v.values()),
        "peak_tflops": lambda v: isinstance(v, dict) and set(v) <= set(PEAK_PRECISIONS)
        and all(_positive(x) for x in v.values()),
        "memory_bandwidth_gbs": _positive,
        "tdp_w": _positive,
        "compute_capability": lambda v: isinstance(v, str) and _is_version(v),
        "datasheet": lambda v: isinstance(v, str),
        "part": lambda v: isinstance(v, str) and v,
        "resources": lambda v: isinstance(v, dict) and set(v) == set(RESOURCE_KEYS)
        and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v.values()),
        "clock_mhz": _positive,
    }
    expected = {
        "match": f"a mapping of {', '.join(MATCH_RULES)} to non-empty strings",
        "peak_tflops": f"a mapping of {', '.join(PEAK_PRECISIONS)} to positive numbers",
        "memory_bandwidth_gbs": "a positive number", "tdp_w": "a positive number",
        "compute_capability": "a version string such as '8.0'", "datasheet": "a string",
        "part": "a part number such as 'xczu9eg-ffvb1156-2-e'",
        "resources": f"a mapping of {', '.join(RESOURCE_KEYS)} to counts",
        "clock_mhz": "a positive number",
    }
    for key, value in values.items():
        if key not in checks:
            raise DeviceError(f"{where}.{key}: unknown key; valid: {', '.join(checks)}")
        if not checks[key](value):
            raise DeviceError(f"{where}.{key}: expected {expected[key]}, got {shorten(value)}")
    return dict(values)


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def _is_version(text: str) -> bool:
    major, _, minor = text.partition(".")
    return major.isdigit() and minor.isdigit()


@dataclass(frozen=True)
class DeviceStatus:
    """One bundled profile on this host: ``harness devices`` prints these."""

    name: str
    kind: str
    present: bool
    reason: str
    description: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def device_statuses() -> list[DeviceStatus]:
    """Every bundled profile, whether its device is on this host, and why not."""
    statuses = []
    for name in bundled_device_names():
        profile = load_profile(name)
        present, reason = DEVICE_KINDS[profile.kind](profile).availability()
        statuses.append(DeviceStatus(profile.name, profile.kind, present, reason,
                                     profile.description))
    return statuses


TIMING_OPTIONS = ("cuda_graphs", "l2_flush")


def _kinds_using(option: str) -> str:
    return ", ".join(k for k, cls in DEVICE_KINDS.items() if option in cls.timing_options) or "none"


def check_timing_options(device: BaseDevice, options: dict[str, Any]) -> None:
    """Refuse a kind-specific timing switch (``--cuda-graphs``) the device does not use."""
    for option, value in options.items():
        if option in TIMING_OPTIONS and value and option not in device.timing_options:
            raise DeviceError(f"--{option.replace('_', '-')}: device {shorten(device.name)} of "
                              f"kind {device.kind!r} does not use it; only kinds "
                              f"{_kinds_using(option)}")


def get_device(name_or_path: str) -> BaseDevice:
    """The device of a profile, checked to be present on this host.

    Raises:
        DeviceError: unknown or malformed profile, or the device is not on this host (the message
            says what was found instead and which bundled devices are present).
    """
    profile = load_profile(name_or_path)
    device = DEVICE_KINDS[profile.kind](profile)
    present, reason = device.availability()
    if not present:
        here = ", ".join(s.name for s in device_statuses() if s.present) or "none"
        raise DeviceError(f"device {shorten(profile.name)} is not available on this host: "
                          f"{reason}; present here: {here} (see 'harness devices')")
    return device


__all__ = [
    "DEVICE_KINDS",
    "BaseDevice",
    "CpuDevice",
    "CudaDevice",
    "DeviceProfile",
    "DeviceStatus",
    "FpgaHlsDevice",
    "bundled_device_names",
    "check_timing_options",
    "device_statuses",
    "get_device",
    "load_profile",
    "register_device_kind",
]
