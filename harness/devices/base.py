"""The device interface: every target (CPU, CUDA GPU, FPGA estimate) implements ``BaseDevice``.

Implementations register a *kind* with ``@register_device_kind``; profiles in ``devices/*.yaml``
name a kind and carry the measurement settings. Rules an implementation must keep:

* ``availability()`` never raises: it returns whether the device is here and, if not, why;
* ``measure_latency`` times real executions of the model and returns every sample;
* ``describe()`` returns plain JSON values for the environment record of each result.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from harness.timing import LatencyMeasurement, MeasurementProtocol


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    kind: str
    description: str
    protocol: MeasurementProtocol
    source: str


class BaseDevice(abc.ABC):
    kind: ClassVar[str]

    def __init__(self, profile: DeviceProfile) -> None:
        self.profile = profile

    @property
    def name(self) -> str:
        return self.profile.name

    @abc.abstractmethod
    def availability(self) -> tuple[bool, str]:
        """(present, reason): the reason says what was found when the device is absent."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """Facts about the hardware and its settings, recorded with every measurement."""

    @abc.abstractmethod
    def measure_latency(
        self, model: torch.nn.Module, inputs: torch.Tensor, protocol: MeasurementProtocol
    ) -> LatencyMeasurement:
        """Time ``model(inputs)`` following ``protocol``."""


DEVICE_KINDS: dict[str, type[BaseDevice]] = {}


def register_device_kind(cls: type[BaseDevice]) -> type[BaseDevice]:
    DEVICE_KINDS[cls.kind] = cls
    return cls
