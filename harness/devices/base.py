"""The device interface: every target (CPU, CUDA GPU, FPGA estimate) implements ``BaseDevice``.

Implementations register a *kind* with ``@register_device_kind``; profiles in ``device_profiles/*.yaml``
name a kind and carry the measurement settings. Rules an implementation must keep:

* ``availability()`` never raises: it returns whether the device is here and, if not, why;
* ``time_call`` times one real execution of the model (wall clock, or device events) in ms;
  ``measure_latency`` repeats it under a protocol and returns every sample;
* ``describe()`` returns plain JSON values for the environment record of each result;
* ``hardware_accelerates`` says whether this machine has what a kernel knob needs (an instruction
  set, a compute capability) beyond the profile listing it;
* ``measure_energy`` returns an ``EnergyRecord`` whose status says whether the figure was
  measured, estimated (only on the user's explicit request) or is unavailable, and why; it never
  raises for a missing or unreadable counter.
"""

from __future__ import annotations

import abc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from harness.config import CandidateConfig
from harness.devices.contention import HostMonitor, wait_for_quiet
from harness.devices.lock import exclusive_timing
from harness.devices.probe import (
    ANCHOR_PRECISION,
    PROBE_SHARE,
    ProbeCalibration,
    ReferenceProbe,
    quiet_calibration,
    retake_if_faster,
)
from harness.errors import DeviceError, shorten
from harness.knobs import BASELINE, KERNEL_KNOBS, active_knobs
from harness.layers import SPARSE_KERNELS, inference_context, use_sparse_kernels
from harness.precision import convert_precision
from harness.records import (
    ContentionEvidence,
    ContentionRecord,
    DriftCorrection,
    EnergyRecord,
    KnobSupport,
    LatencyRecord,
    MeasurementRecord,
    RuntimeRecord,
)
from harness.runtimes import check_runnable, deploy
from harness.stats import summarize
from harness.timing import (
    LatencyMeasurement,
    MeasurementProtocol,
    ProbeInterleave,
    drift_corrected,
    measure_adaptively,
)


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    kind: str
    description: str
    protocol: MeasurementProtocol
    source: str
    # Kernel knob → the values this device runs faster than the baseline (fp32, dense).
    accelerates: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # How this device can run a model (``harness.runtimes``); eager always.
    runtimes: tuple[str, ...] = ("eager",)
    # Datasheet figures and the rules that recognise the hardware (validated by ``harness.devices.parse_profile``).
    hardware: dict[str, Any] = field(default_factory=dict)
    # The accelerator model of kinds that estimate (fpga-hls); empty for measured devices.
    engine: dict[str, Any] = field(default_factory=dict)


class BaseDevice(abc.ABC):
    """A target a candidate can be costed on: measured (``MeasuredDevice``) or estimated."""

    kind: ClassVar[str]
    # Protocol switches only this kind's timing uses (a CPU has no CUDA graphs or L2 to flush).
    timing_options: ClassVar[tuple[str, ...]] = ()
    # Constraint keys this kind adds to every trial of a search (a resource that must fit).
    constraint_keys: ClassVar[tuple[str, ...]] = ()
    # Whether evaluating a candidate times real hardware of this host, which other processes
    # computing on the host at the same time would disturb.
    times_on_this_host: ClassVar[bool] = False

    def __init__(self, profile: DeviceProfile) -> None:
        self.profile = profile

    @classmethod
    def parse_engine(cls, document: dict[str, Any], source: str) -> dict[str, Any]:
        """The profile's ``engine:`` block; only kinds that estimate from an engine model have one."""
        if document.get("engine"):
            raise DeviceError(f"{source}: engine: devices of kind {cls.kind!r} have no engine "
                              f"model; only kind fpga-hls")
        return {}

    @property
    def name(self) -> str:
        return self.profile.name

    @abc.abstractmethod
    def availability(self) -> tuple[bool, str]:
        """(present, reason): the reason says what was found when the device is absent."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """Facts about the hardware and its settings, recorded with every measurement."""

    def hardware_accelerates(self, knob: str, value: str) -> tuple[bool, str]:
        """Whether this machine has what ``knob=value`` needs; ``(True, "")`` unless overridden."""
        return True, ""

    def accelerates(self, knob: str, value: str) -> tuple[bool, str]:
        """(accelerated, how) of a kernel knob's value on this device."""
        if value == BASELINE[knob]:
            return True, "baseline"
        if value not in self.profile.accelerates.get(knob, ()):
            listed = ", ".join(self.profile.accelerates.get(knob, ())) or "none"
            return False, (f"profile {shorten(self.name)} does not list {knob} {value} as "
                           f"accelerated (listed: {listed})")
        return self.hardware_accelerates(knob, value)

    def knob_support(self, config: CandidateConfig) -> list[KnobSupport]:
        """Every knob ``config`` turns on, with whether this device runs it faster."""
        support = []
        for knob in active_knobs(config):
            if knob.knob in KERNEL_KNOBS:
                accelerated, how = self.accelerates(knob.knob, knob.value)
                if knob.knob == "weight_sparsity":
                    how = (f"{SPARSE_KERNELS[knob.value]}; {how}" if accelerated else
                           f"{how}; masks applied (accuracy effect is real), computed by dense "
                           "kernels")
            else:
                accelerated, how = True, "less work through the same dense kernels"
            support.append(KnobSupport(knob.knob, knob.value, knob.detail, accelerated, how))
        return support

    def check_runtime(self, config: CandidateConfig) -> None:
        """Refuse a runtime the profile does not list, or one that is not installed or cannot
        run ``config``: one line, naming what is valid or what to install.

        Raises:
            DeviceError: the profile does not list it.
            RuntimeRefused: not installed, or a knob it cannot carry."""
        if config.runtime not in self.profile.runtimes:
            raise DeviceError(f"device {shorten(self.name)} does not run runtime "
                              f"{config.runtime} (its profile lists: "
                              f"{', '.join(self.profile.runtimes)})")
        check_runnable(config, self.kind)

    def latency_model(self) -> str | None:
        """What latency comes from when it is estimated, not measured; None for measured devices."""
        return None

    def resource_violations(self, config: CandidateConfig, batch_size: int) -> dict[str, float]:
        """``constraint_keys`` → relative excess (feasible when <= 0), known before anything is
        built; a candidate with a positive one is rejected like one over budget."""
        return {}

    @abc.abstractmethod
    def evaluate(self, config: CandidateConfig, model: torch.nn.Module, inputs: torch.Tensor,
                 protocol: MeasurementProtocol) -> MeasurementRecord:
        """The latency, energy and what else the device knows about ``model(inputs)``;
        ``phase_s`` times the steps."""


class MeasuredDevice(BaseDevice):
    """A device that runs the model and times it: the CPU, CUDA GPUs."""

    times_on_this_host = True
    probe_batch: ClassVar[int] = 1  # images per probe call: one block, ~1.5 ms on two cores

    def prepare(
        self, model: torch.nn.Module, inputs: torch.Tensor, config: CandidateConfig
    ) -> tuple[torch.nn.Module, torch.Tensor]:
        """The model and inputs as this device runs them: in ``config.precision``, and with sparse
        weights in the format of the device's sparse kernels where it accelerates them.

        Raises:
            DeviceError: the device's sparse kernels cannot run this combination.
        """
        model, inputs = convert_precision(model, inputs, config.precision)
        pattern = config.weight_sparsity
        if pattern == "dense" or not self.accelerates("weight_sparsity", pattern)[0]:
            return model, inputs
        if pattern == "2:4" and config.precision not in ("fp16", "bf16"):
            raise DeviceError(f"weight_sparsity 2:4 on {self.name} runs on semi-structured "
                              f"kernels, which need precision fp16 or bf16; got {config.precision}")
        if config.precision == "int8":
            raise DeviceError(f"weight_sparsity {pattern} on {self.name} runs on sparse float "
                              "kernels, which int8 dynamic quantisation replaces; choose one")
        try:
            use_sparse_kernels(model.blocks, pattern, config.sparsity_block)
        except (RuntimeError, NotImplementedError) as error:
            raise DeviceError(f"weight_sparsity {pattern} on {self.name}: torch "
                              f"{torch.__version__} has no such kernel here "
                              f"({str(error).splitlines()[0]})") from None
        return model, inputs

    def deploy(self, model: torch.nn.Module, inputs: torch.Tensor, config: CandidateConfig,
               protocol: MeasurementProtocol) -> tuple[torch.nn.Module, RuntimeRecord]:
        """The prepared ``model`` as ``config.runtime`` runs it on this device, checked against
        eager (``harness.runtimes.deploy``), with the threads the protocol gives the device.

        Raises:
            DeviceError: the runtime is not listed, cannot run ``config``, failed to build the
                model, or computes other logits (``ParityError``, with the figures).
            RuntimeRefused: the runtime is not installed or cannot carry a knob."""
        self.check_runtime(config)
        self.configure(protocol)
        return deploy(model, inputs, config, self.kind, self.measuring_threads(protocol))

    def measure_energy(
        self, model: torch.nn.Module, inputs: torch.Tensor, protocol: MeasurementProtocol
    ) -> EnergyRecord:
        """Joules per call of ``model(inputs)``; unavailable unless the kind reads a counter."""
        return EnergyRecord.unavailable(f"device kind {self.kind!r} has no energy counter")

    def configure(self, protocol: MeasurementProtocol) -> None:
        """Apply the protocol's device settings (threads...) before timing; none by default."""

    @abc.abstractmethod
    def time_call(self, model: torch.nn.Module, inputs: torch.Tensor) -> float:
        """Milliseconds of one ``model(inputs)``, finished on the device when it returns."""

    def measure_latency(
        self, model: torch.nn.Module, inputs: torch.Tensor, protocol: MeasurementProtocol,
        probe: ProbeInterleave | None = None, contended: Callable[[], bool] | None = None,
    ) -> LatencyMeasurement:
        """Time ``model(inputs)`` following ``protocol``: warm-up, then adaptive sampling, with
        ``probe`` timed between the blocks and ``contended`` asked whether to stop early."""
        self.configure(protocol)
        with inference_context(model):
            return measure_adaptively(lambda: self.time_call(model, inputs), protocol,
                                      probe=probe, contended=contended)

    def measuring_threads(self, protocol: MeasurementProtocol) -> int:
        """Host CPU threads a measurement keeps busy (the rest are free for other work)."""
        return 1

    def other_device_processes(self) -> list[str]:
        """Other processes computing on this device now (``name (pid N)``); none by default:
        a CPU's other work is seen in its CPU time."""
        return []

    def probe_timer(self, protocol: MeasurementProtocol,
                    precision: str) -> tuple[Callable[[], float], str]:
        """One timed call of the reference probe in ``precision`` on this device, and the
        probe's name."""
        self.configure(protocol)
        probe = ReferenceProbe(self.probe_batch, precision)
        inputs = probe.example_input()
        probe, inputs = self.place(probe), self.place(inputs)

        def time_once() -> float:
            with torch.inference_mode():
                return self.time_call(probe, inputs)

        return time_once, probe.name

    def place(self, value: Any) -> Any:
        """``value`` (a module or tensor) on this device's memory; the CPU's by default."""
        return value

    def evaluate(self, config: CandidateConfig, model: torch.nn.Module, inputs: torch.Tensor,
                 protocol: MeasurementProtocol) -> MeasurementRecord:
        """Prepare, time (retaken while the host is busy), then read the energy of
        ``model(inputs)``."""
        phase_s: dict[str, float] = {}
        start = time.perf_counter()
        model, inputs = self.prepare(model, inputs, config)
        phase_s["prepare"] = time.perf_counter() - start
        model, runtime = self.deploy(model, inputs, config, protocol)
        phase_s["runtime_prepare"] = runtime.prepare_s
        with exclusive_timing(self.name):
            start = time.perf_counter()
            timed = self.measure_on_quiet_host(model, inputs, protocol, config.precision)
            phase_s["latency"] = time.perf_counter() - start
            start = time.perf_counter()
            energy = (self.measure_energy(model, inputs, protocol) if protocol.energy else
                      EnergyRecord.unavailable("energy measurement turned off (--no-energy)"))
            phase_s["energy"] = time.perf_counter() - start
        return timed.record(protocol, torch.get_num_threads(), energy, runtime, phase_s)

    def calibrated_probe(self, protocol: MeasurementProtocol, precision: str) -> CalibratedProbe:
        """The reference probe in ``precision`` as ``protocol`` wants it, with its quiet
        calibration (taken now if this machine has none)."""
        time_probe, probe_name = self.probe_timer(protocol, precision)
        if not (protocol.drift_correction or protocol.contention_check):
            return CalibratedProbe(None, probe_name,
                                   "drift correction and the contention check are off")
        threads = self.measuring_threads(protocol)
        anchor = None if precision == ANCHOR_PRECISION else \
            (lambda: self.probe_timer(protocol, ANCHOR_PRECISION))
        return CalibratedProbe(time_probe, probe_name,
                               quiet_calibration(time_probe, self.name, threads, probe_name, anchor))

    def measure_on_quiet_host(self, model: torch.nn.Module, inputs: torch.Tensor,
                              protocol: MeasurementProtocol, precision: str) -> TimedOnHost:
        """Time ``model(inputs)`` (in ``precision``) with the reference probe in the same
        precision between the blocks; while the host is busy, wait for it (with backoff) and
        retake, at most ``protocol.contention_retakes`` times, then keep the last take flagged
        contended."""
        threads = self.measuring_threads(protocol)
        probe = self.calibrated_probe(protocol, precision)
        takes: list[tuple[LatencyMeasurement, ContentionEvidence | None]] = []
        waited_s = 0.0
        while True:
            monitor = HostMonitor(threads)
            measurement = self.measure_latency(
                model, inputs, protocol, probe=probe.interleave(),
                contended=monitor.plainly_busy if protocol.contention_check else None)
            drift = probe.correction(measurement, protocol)
            evidence = (monitor.evidence(drift.slowdown, self.other_device_processes())
                        if protocol.contention_check else None)
            takes.append((measurement, evidence))
            last = len(takes) > protocol.contention_retakes
            if evidence is None or not evidence.contended or last:
                probe.check_calibration(drift, evidence)
                return TimedOnHost(takes, drift, waited_s)
            waited_s += wait_for_quiet(threads, protocol.contention_backoff_s * 2 ** (len(takes) - 1))


def drift_correction(measurement: LatencyMeasurement, calibration: Any, probe: str,
                     protocol: MeasurementProtocol) -> DriftCorrection:
    """The correction of ``measurement`` by the probe timed beside it."""
    share = (round(measurement.probe_s / measurement.timed_s, 4)
             if measurement.timed_s and measurement.probe_samples_ms else None)
    probe_median = (statistics.median(measurement.probe_samples_ms)
                    if measurement.probe_samples_ms else None)
    if isinstance(calibration, str):
        return DriftCorrection("uncalibrated" if protocol.drift_correction else "off",
                               calibration, probe, probe_median_ms=probe_median,
                               probe_samples=len(measurement.probe_samples_ms), probe_share=share)
    status = "corrected" if protocol.drift_correction else "off"
    reason = (f"each raw sample x quiet probe time {calibration.quiet_ms:.4f} ms (calibrated "
              f"{calibration.calibrated_at}) / the probe's median in the blocks around it"
              if protocol.drift_correction else "drift correction turned off "
              "(--no-drift-correction); the probe was timed for the contention check")
    return DriftCorrection(status, reason, probe, calibration.quiet_ms, probe_median,
                           len(measurement.probe_samples_ms), share)


@dataclass(frozen=True)
class CalibratedProbe:
    """The reference probe of one device and protocol: its timer (None when neither drift
    correction nor the contention check wants it), its name, and its quiet calibration or why
    there is none."""

    time_once: Callable[[], float] | None
    name: str
    calibration: ProbeCalibration | str

    def interleave(self) -> ProbeInterleave | None:
        """A fresh interleave of the probe for one measurement's timing blocks."""
        return ProbeInterleave(self.time_once, PROBE_SHARE) if self.time_once else None

    def correction(self, measurement: LatencyMeasurement,
                   protocol: MeasurementProtocol) -> DriftCorrection:
        return drift_correction(measurement, self.calibration, self.name, protocol)

    def check_calibration(self, drift: DriftCorrection, evidence: ContentionEvidence | None) -> None:
        """Retake the stored calibration when a quiet window ran the probe well under it
        (``probe.retake_if_faster``); this process goes on with the one it started with."""
        if self.time_once and isinstance(self.calibration, ProbeCalibration) and \
                drift.probe_median_ms and evidence is not None and not evidence.contended:
            retake_if_faster(self.time_once, self.calibration, drift.probe_median_ms)


@dataclass(frozen=True)
class TimedOnHost:
    """Every take of one latency measurement, the last one kept, with its drift correction."""

    takes: list[tuple[LatencyMeasurement, ContentionEvidence | None]]
    drift: DriftCorrection
    waited_s: float

    @property
    def kept(self) -> LatencyMeasurement:
        return self.takes[-1][0]

    @property
    def contended(self) -> bool:
        evidence = self.takes[-1][1]
        return evidence is not None and evidence.contended

    def record(self, protocol: MeasurementProtocol, threads: int, energy: EnergyRecord,
               runtime: RuntimeRecord, phase_s: dict[str, float]) -> MeasurementRecord:
        """The corrected latency, the raw one beside it, and every take's samples and evidence
        (nothing measured is lost)."""
        kept = self.kept
        corrected = summarize(drift_corrected(kept.samples_ms, kept.probe_samples_ms,
                                              kept.probe_positions, self.drift.probe_quiet_ms)) \
            if self.drift.status == "corrected" else kept.summary
        return MeasurementRecord(
            latency=LatencyRecord.of_summary(corrected, status="measured",
                                             drift_corrected=self.drift.status == "corrected"),
            latency_raw=LatencyRecord.of_summary(kept.summary),
            drift=self.drift,
            contention=ContentionRecord(
                checked=self.takes[-1][1] is not None, contended=self.contended,
                takes=len(self.takes), waited_s=self.waited_s,
                evidence=[e for _, e in self.takes if e is not None]),
            throttled=kept.throttled,
            conditions=kept.conditions,
            latency_samples_ms=[round(s, 5) for s in kept.samples_ms],
            probe_samples_ms=[round(s, 5) for s in kept.probe_samples_ms],
            probe_positions=kept.probe_positions,
            retaken_samples_ms=[[round(s, 5) for s in m.samples_ms] for m, _ in self.takes[:-1]],
            protocol={**protocol.to_dict(), "threads": threads, **kept.protocol_record()},
            energy=energy,
            runtime=runtime,
            phase_s=phase_s,
        )


DEVICE_KINDS: dict[str, type[BaseDevice]] = {}


def register_device_kind(cls: type[BaseDevice]) -> type[BaseDevice]:
    DEVICE_KINDS[cls.kind] = cls
    return cls
