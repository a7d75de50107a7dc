"""Typed result records: what a device measured, what a trial of a study holds, what a benchmark
run stored. One measurement travels through them unchanged from ``devices/`` to the HTML page:

    device.evaluate -> MeasurementRecord -> CandidateRecord (+ accuracy, knobs) -> trial storage
    -> TrialRecord.from_trial -> report/

Every stored result carries ``SCHEMA_VERSION``. Files and studies written by older versions are
brought forward by ``migrate``, one step per version, so a reader only ever sees the current shape.
Nothing here imports torch: ``harness report`` reads a study with these records alone.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import FileError, HarnessError, shorten
from harness.files import check_readable_file, read_text
from harness.timing import drift_corrected

# Version 1: energy per call of the model was named ``joules_per_inference``, though a call is one
# batch. Version 2: ``joules_per_call``; every result kind shares this one version number.
SCHEMA_VERSION = 2


class RecordError(HarnessError):
    """A stored result has a schema version this harness cannot read, or is malformed."""


def _rename_energy_figure(energy: Any) -> Any:
    if isinstance(energy, dict) and "joules_per_inference" in energy:
        energy = {("joules_per_call" if key == "joules_per_inference" else key): value
                  for key, value in energy.items()}
    return energy


def upgrade_energy_figure(document: dict[str, Any]) -> dict[str, Any]:
    """Version 1 to 2 of a result that holds an ``energy`` record (a trial's attributes, a bench
    result); a document already at version 2 is returned as it is."""
    return {**document, "energy": _rename_energy_figure(document.get("energy"))} \
        if "energy" in document else document


# Result kind -> {version: step to version + 1}. A kind unchanged by a version steps with
# ``unchanged``; a version that changes a kind's shape adds its step, and a stored file of the old
# version to tests/fixtures/stored/. Kinds defined above this module (a rank check, a supernet, an
# FPGA calibration record) register their steps where their shape is known.
MIGRATIONS: dict[str, dict[int, Callable[[dict[str, Any]], dict[str, Any]]]] = {}


def register_migrations(kind: str,
                        steps: dict[int, Callable[[dict[str, Any]], dict[str, Any]]]) -> None:
    MIGRATIONS[kind] = steps


def unchanged(document: dict[str, Any]) -> dict[str, Any]:
    """The step of a kind a version did not change."""
    return document


register_migrations("trial", {1: upgrade_energy_figure})
register_migrations("remeasured-front", {1: unchanged})
register_migrations("bench-result", {1: upgrade_energy_figure})


def migrate(kind: str, document: dict[str, Any], version: Any, where: str) -> dict[str, Any]:
    """``document``, a ``kind`` result stored at ``version``, in the shape of ``SCHEMA_VERSION``.

    Raises:
        RecordError: the version is not one this harness ever wrote (a newer harness's, or junk).
    """
    steps = MIGRATIONS[kind]
    first = min(steps, default=SCHEMA_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) \
            or not first <= version <= SCHEMA_VERSION:
        raise RecordError(f"{where}: schema_version {shorten(version)}; this harness reads "
                          f"{first} to {SCHEMA_VERSION} (a newer harness wrote it?)")
    while version < SCHEMA_VERSION:
        document = steps[version](document)
        version += 1
    return {**document, "schema_version": SCHEMA_VERSION} if "schema_version" in document \
        else document


def _pick(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """The items of ``values`` that are fields of the dataclass ``cls``."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in values.items() if k in names}


@dataclass(frozen=True)
class LatencyRecord:
    """A latency in milliseconds: the median, its 95% interval, the spread, and where it came from.

    ``status`` is "measured", "remeasured" (interleaved rounds after the search) or "estimated"
    (an FPGA cost model: no samples, the calibration's fit error as ``error_band``); None for the
    raw figure stored beside a corrected one."""

    median: float
    ci95: tuple[float, float] | None = None
    n: int | None = None  # None only in files written by hand or by very old harnesses
    mean: float | None = None
    min: float | None = None
    max: float | None = None
    p90: float | None = None
    p99: float | None = None
    cv: float | None = None
    status: str | None = None
    drift_corrected: bool | None = None
    rounds: int | None = None  # of a re-measurement
    source: str | None = None  # of an estimate: the calibration
    error_band: tuple[float, float] | None = None  # of an estimate

    @classmethod
    def of_summary(cls, summary: Any, **extra: Any) -> LatencyRecord:
        """From a ``harness.stats.LatencySummary``, with ``status`` and the like."""
        return cls(**{**asdict(summary), "ci95": tuple(summary.ci95)}, **extra)

    @property
    def estimated(self) -> bool:
        return self.status == "estimated"

    def with_interval(self, median: float, ci95: tuple[float, float]) -> LatencyRecord:
        """This record with the median and its interval from elsewhere (a bootstrap over rounds)."""
        return dataclasses.replace(self, median=median, ci95=tuple(ci95))

    def to_json(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            "median": self.median, "p90": self.p90, "p99": self.p99,
            "ci95": list(self.ci95) if self.ci95 else None, "cv": self.cv, "n": self.n,
            "mean": self.mean, "min": self.min, "max": self.max}
        for key in ("status", "rounds", "drift_corrected"):
            if getattr(self, key) is not None:
                values[key] = getattr(self, key)
        if self.estimated:
            values["source"] = self.source
            values["error_band"] = list(self.error_band) if self.error_band else None
        return values

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> LatencyRecord:
        picked = _pick(cls, values)
        for key in ("ci95", "error_band"):
            if picked.get(key) is not None:
                picked[key] = tuple(picked[key])
        return cls(**picked)


@dataclass(frozen=True)
class EnergyRecord:
    """Energy per call of the model (one batch) and where it came from; a figure is never reported
    without its ``status`` (measured / estimated / unavailable), ``source`` and ``reason``.

    The idle power (``idle_power_w``) is reported apart, not subtracted, so readers can."""

    status: str
    source: str | None = None  # "nvml_total_energy", "nvml_power_sampling", "rapl"...; None if unavailable
    reason: str = ""  # what was read, or why nothing could be
    joules_per_call: float | None = None
    ci95: tuple[float, float] | None = None
    idle_power_w: float | None = None
    windows: int = 0
    window_s: float | None = None

    @classmethod
    def unavailable(cls, reason: str) -> EnergyRecord:
        return cls(status="unavailable", source=None, reason=reason)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ci95": list(self.ci95) if self.ci95 else None}

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> EnergyRecord:
        picked = _pick(cls, values)
        if picked.get("ci95") is not None:
            picked["ci95"] = tuple(picked["ci95"])
        return cls(**picked)


@dataclass(frozen=True)
class DriftCorrection:
    """How a latency was corrected for the host's speed over its window."""

    status: str  # "corrected", "off" (asked) or "uncalibrated" (no quiet calibration: reason)
    reason: str
    probe: str | None = None
    probe_quiet_ms: float | None = None
    probe_median_ms: float | None = None
    probe_samples: int = 0
    probe_share: float | None = None  # probe time / the candidate's timed time: its overhead

    @property
    def factor(self) -> float:
        """Quiet probe time over the probe's median over the whole window: what the raw latency
        is multiplied by, on average; each sample is corrected by the probe blocks around it
        (``harness.timing.drift_corrected``)."""
        if self.status != "corrected" or not self.probe_median_ms:
            return 1.0
        return self.probe_quiet_ms / self.probe_median_ms

    @property
    def slowdown(self) -> float | None:
        """Probe time in the window over its quiet time: above 1, the host ran slow."""
        if self.probe_quiet_ms is None or not self.probe_median_ms:
            return None
        return self.probe_median_ms / self.probe_quiet_ms

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "factor": round(self.factor, 5)}

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> DriftCorrection:
        return cls(**_pick(cls, values))


@dataclass(frozen=True)
class ContentionEvidence:
    """What the host did over one window, and whether that makes it contended (``reasons``)."""

    window_s: float
    others_cores: float  # CPU time of other processes over the window, in cores
    free_cores: float  # cores the measurement left free: logical cores minus its threads
    steal_share: float
    probe_slowdown: float | None  # probe median / calibrated quiet median; None: not known
    load_1m: float | None
    other_device_processes: list[str] = field(default_factory=list)
    busiest: list[str] = field(default_factory=list)  # named only when contended
    reasons: list[str] = field(default_factory=list)

    @property
    def contended(self) -> bool:
        return bool(self.reasons)

    def to_json(self) -> dict[str, Any]:
        return {
            "window_s": round(self.window_s, 3),
            "others_cores": round(self.others_cores, 3),
            "free_cores": self.free_cores,
            "steal_share": round(self.steal_share, 4),
            "probe_slowdown": None if self.probe_slowdown is None else round(self.probe_slowdown, 3),
            "load_1m": self.load_1m,
            "other_device_processes": self.other_device_processes,
            "busiest": self.busiest,
            "reasons": self.reasons,
            "contended": self.contended,
        }

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> ContentionEvidence:
        return cls(**_pick(cls, values))


@dataclass(frozen=True)
class ContentionRecord:
    """The contention check of one measurement: every take's evidence, the last one kept."""

    checked: bool
    contended: bool
    takes: int
    waited_s: float
    evidence: list[ContentionEvidence]

    @property
    def reasons(self) -> list[str]:
        """Why the kept take counts as measured on a busy host."""
        return list(self.evidence[-1].reasons) if self.evidence else []

    @property
    def busiest(self) -> list[str]:
        return list(self.evidence[-1].busiest) if self.evidence else []

    def to_json(self) -> dict[str, Any]:
        return {"checked": self.checked, "contended": self.contended, "takes": self.takes,
                "waited_s": round(self.waited_s, 3),
                "evidence": [e.to_json() for e in self.evidence]}

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> ContentionRecord:
        return cls(checked=bool(values.get("checked")), contended=bool(values.get("contended")),
                   takes=values.get("takes", 1), waited_s=values.get("waited_s", 0.0),
                   evidence=[ContentionEvidence.from_json(e) for e in values.get("evidence") or []])


@dataclass(frozen=True)
class Parity:
    """A runtime's logits against eager's on the same inputs."""

    max_abs_diff: float
    bound: float
    images: int
    top1_agreement: float  # fraction of images whose top-1 class is eager's
    decisive_disagreements: int  # of those that differ, where eager's top-1 led by over 2x bound

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.bound and self.decisive_disagreements == 0

    def describe(self) -> str:
        return (f"max |logit - eager| {self.max_abs_diff:.3g} (bound {self.bound:g}), top-1 "
                f"agreement {self.top1_agreement:.1%} of {self.images} images"
                + (f", {self.decisive_disagreements} clear disagreements"
                   if self.decisive_disagreements else ""))

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


@dataclass(frozen=True)
class RuntimeRecord:
    """How a measured model was run: stored with every measurement."""

    runtime: str
    prepare_s: float  # export, session creation or compilation, and the parity calls
    parity: Parity | None  # None for eager, the reference itself
    detail: dict[str, Any]  # what the runtime chose: providers, compile mode, opset...

    def to_json(self) -> dict[str, Any]:
        return {"runtime": self.runtime, "prepare_s": round(self.prepare_s, 3),
                "parity": self.parity.to_json() if self.parity else None, "detail": self.detail}

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> RuntimeRecord:
        parity = values.get("parity")
        return cls(runtime=values["runtime"], prepare_s=values.get("prepare_s", 0.0),
                   parity=Parity(**_pick(Parity, parity)) if parity else None,
                   detail=values.get("detail") or {})


@dataclass(frozen=True)
class KnobSupport:
    """Whether a device runs one active knob faster, and how: reported with every measurement."""

    knob: str
    value: str
    detail: str
    accelerated: bool
    how: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> KnobSupport:
        return cls(**_pick(cls, values))


@dataclass(frozen=True)
class MeasurementRecord:
    """What a device returns for one model: its latency (drift-corrected where ``drift`` says so)
    with the raw figure and every sample kept, the host's contention evidence, energy, and how the
    model was run. Estimating devices fill the latency and energy alone.

    Stored flat, under the keys ``latency_ms``, ``latency_raw_ms``, ``drift``... of a trial's
    attributes or a bench result file."""

    latency: LatencyRecord
    energy: EnergyRecord
    protocol: dict[str, Any]  # the measurement protocol as run: warm-up, samples, threads...
    latency_samples_ms: list[float]  # raw, of the kept take
    throttled: bool | None = None
    conditions: dict[str, Any] = field(default_factory=dict)  # clocks, temperatures...
    latency_raw: LatencyRecord | None = None
    drift: DriftCorrection | None = None
    contention: ContentionRecord | None = None
    probe_samples_ms: list[float] | None = None
    probe_positions: list[int] | None = None  # latency samples taken before each probe sample
    retaken_samples_ms: list[list[float]] | None = None  # takes a busy host spoiled
    runtime: RuntimeRecord | None = None
    fpga: dict[str, Any] | None = None  # an FPGA estimate's operators, resources and power
    phase_s: dict[str, float] = field(default_factory=dict)  # not stored: the caller's timing

    @property
    def contended(self) -> bool:
        """Measured on a busy host (the last take kept); records older than the contention check
        are not known to be."""
        return self.contention is not None and self.contention.contended

    @property
    def median_ms(self) -> float:
        return self.latency.median

    def corrected_samples_ms(self) -> list[float]:
        """The kept take's samples as its latency was figured: each drift-corrected by the probe
        blocks around it where ``drift`` says corrected, else raw."""
        drift = self.drift
        if drift is None or drift.status != "corrected":
            return list(self.latency_samples_ms)
        if not self.probe_samples_ms:  # not kept: the window's factor is what is known
            return [sample * drift.factor for sample in self.latency_samples_ms]
        return drift_corrected(self.latency_samples_ms, self.probe_samples_ms,
                               self.probe_positions, drift.probe_quiet_ms)

    # the stored key of each section, in the order results have always been written
    def to_json(self) -> dict[str, Any]:
        values: dict[str, Any] = {"latency_ms": self.latency.to_json()}
        if self.latency_raw is not None:
            values["latency_raw_ms"] = self.latency_raw.to_json()
        if self.drift is not None:
            values["drift"] = self.drift.to_json()
        if self.contention is not None:
            values["contention"] = self.contention.to_json()
        values.update(throttled=self.throttled, conditions=self.conditions,
                      latency_samples_ms=self.latency_samples_ms)
        if self.probe_samples_ms is not None:
            values["probe_samples_ms"] = self.probe_samples_ms
        if self.probe_positions is not None:
            values["probe_positions"] = self.probe_positions
        if self.retaken_samples_ms is not None:
            values["retaken_samples_ms"] = self.retaken_samples_ms
        values["latency_protocol"] = self.protocol
        values["energy"] = self.energy.to_json()
        if self.runtime is not None:
            values["runtime"] = self.runtime.to_json()
        if self.fpga is not None:
            values["fpga"] = self.fpga
        return values

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> MeasurementRecord:
        """From stored values of the current schema (``migrate`` first)."""
        def optional(key: str, read: Callable[[Any], Any]) -> Any:
            return read(values[key]) if values.get(key) is not None else None

        energy = values.get("energy")
        return cls(
            latency=LatencyRecord.from_json(values["latency_ms"]),
            energy=(EnergyRecord.from_json(energy) if energy else
                    EnergyRecord.unavailable("not recorded")),
            protocol=values.get("latency_protocol") or {},
            latency_samples_ms=list(values.get("latency_samples_ms") or []),
            throttled=values.get("throttled"),
            conditions=values.get("conditions") or {},
            latency_raw=optional("latency_raw_ms", LatencyRecord.from_json),
            drift=optional("drift", DriftCorrection.from_json),
            contention=optional("contention", ContentionRecord.from_json),
            probe_samples_ms=values.get("probe_samples_ms"),
            probe_positions=values.get("probe_positions"),
            retaken_samples_ms=values.get("retaken_samples_ms"),
            runtime=optional("runtime", RuntimeRecord.from_json),
            fpga=values.get("fpga"),
        )


# Trial attributes too large for reports: every timing a trial kept
SAMPLE_KEYS = ("latency_samples_ms", "probe_samples_ms", "probe_positions", "retaken_samples_ms")


@dataclass(frozen=True)
class CandidateRecord:
    """One configuration built, scored and measured (``harness.search.objective.measure_candidate``):
    what a trial stores and ``harness measure`` prints."""

    measurement: MeasurementRecord
    knobs: list[KnobSupport]
    accuracy: dict[str, Any] | None  # the estimator's record: value, estimator, and its evidence
    harness_version: str
    phase_s: dict[str, float]  # build, accuracy, prepare, latency, energy...

    def to_json(self) -> dict[str, Any]:
        values: dict[str, Any] = {"knobs": [k.to_json() for k in self.knobs]}
        if self.accuracy is not None:
            values["accuracy"] = self.accuracy
        return {**values, **self.measurement.to_json(), "phase_s": self.phase_s,
                "harness_version": self.harness_version}

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> CandidateRecord:
        return cls(measurement=MeasurementRecord.from_json(values),
                   knobs=[KnobSupport.from_json(k) for k in values.get("knobs") or []],
                   accuracy=values.get("accuracy"), harness_version=values.get("harness_version", ""),
                   phase_s=values.get("phase_s") or {})


# A trial's own attributes beside its candidate's: where it ran, its cost, and why it stopped.
TRIAL_KEYS = ("host", "pid", "config", "config_key", "gmacs", "effective_gmacs", "params_m",
              "rejected", "pruned", "error", "interrupted", "accuracy_curve")


@dataclass(frozen=True)
class TrialRecord:
    """One trial of a study as stored: its state, cost, budgets, and its candidate's record once
    measured. Read from the storage with ``from_attributes``, migrated to this schema."""

    number: int
    state: str  # Optuna's TrialState name
    constraints: dict[str, float]  # budget key -> relative excess (within budget when <= 0)
    attributes: dict[str, Any]  # TRIAL_KEYS that were recorded
    candidate: CandidateRecord | None  # None until measured, and for rejected or failed trials
    stored: dict[str, Any]  # every stored attribute, migrated: what reports list of the trial

    @property
    def feasible(self) -> bool:
        return all(v <= 0 for v in self.constraints.values())

    @property
    def complete(self) -> bool:
        return self.state == "COMPLETE"

    @property
    def measurement(self) -> MeasurementRecord | None:
        return self.candidate.measurement if self.candidate else None

    @property
    def contended(self) -> bool:
        return self.measurement is not None and self.measurement.contended

    @property
    def latency(self) -> LatencyRecord | None:
        return self.measurement.latency if self.measurement else None

    @property
    def accuracy(self) -> dict[str, Any] | None:
        return self.candidate.accuracy if self.candidate else None

    @property
    def accuracy_value(self) -> float | None:
        return self.accuracy.get("value") if self.accuracy else None

    @property
    def knobs(self) -> list[KnobSupport]:
        return self.candidate.knobs if self.candidate else []

    @property
    def config(self) -> dict[str, Any]:
        return self.attributes.get("config") or {}

    @property
    def gmacs(self) -> float | None:
        return self.attributes.get("gmacs")

    @property
    def effective_gmacs(self) -> float | None:
        return self.attributes.get("effective_gmacs", self.gmacs)

    @property
    def params_m(self) -> float | None:
        return self.attributes.get("params_m")

    @property
    def note(self) -> str:
        """Why the trial was rejected, stopped early or failed; "" otherwise."""
        return (self.attributes.get("rejected") or self.attributes.get("pruned")
                or self.attributes.get("error") or "")

    @classmethod
    def from_attributes(cls, number: int, state: str, constraints: Mapping[str, float],
                        user_attrs: Mapping[str, Any], version: Any) -> TrialRecord:
        """From a trial's stored user attributes, written at schema ``version``."""
        attrs = migrate("trial", dict(user_attrs), version, f"trial {number}")
        return cls(number=number, state=state, constraints=dict(constraints),
                   attributes={k: attrs[k] for k in TRIAL_KEYS if k in attrs},
                   candidate=CandidateRecord.from_json(attrs) if "latency_ms" in attrs else None,
                   stored=attrs)

    def to_json(self) -> dict[str, Any]:
        """The trial as reports write it (``trials.json``): every attribute but the raw samples."""
        return {"number": self.number, "state": self.state, "feasible": self.feasible,
                "constraints": self.constraints,
                **{k: v for k, v in self.stored.items()
                   if k not in SAMPLE_KEYS and k != "schema_version"}}


BENCH_RESULT_KIND = "harness-bench-result"


@dataclass(frozen=True)
class BenchRunRecord:
    """One measured entry of a benchmark suite, as ``harness bench`` stores it in its own file."""

    measurement: MeasurementRecord
    # As stored; a reader that needs a field checks it (older or hand-made files may lack one)
    suite: str | None = None
    entry: str | None = None
    device: str | None = None
    machine_fingerprint: str | None = None
    host: str | None = None
    commit: str | None = None
    commit_date: str | None = None
    created: str | None = None
    threshold_pct: float | None = None
    config: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, Any] | None = None
    batch_size: int | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    path: str = ""  # where it was read from; not stored

    @property
    def key(self) -> str:
        """What a comparison pairs runs by: the suite and entry on a device."""
        return f"{self.suite}/{self.entry}@{self.device}"

    def to_json(self) -> dict[str, Any]:
        head = {"schema_version": SCHEMA_VERSION, "kind": BENCH_RESULT_KIND,
                **{k: getattr(self, k) for k in (
                    "suite", "entry", "device", "machine_fingerprint", "host", "commit",
                    "commit_date", "created", "threshold_pct", "config", "weights",
                    "batch_size")}}
        return {**head, **self.measurement.to_json(), "environment": self.environment}

    @classmethod
    def from_json(cls, values: Mapping[str, Any], where: str) -> BenchRunRecord:
        """From a stored result file's contents, of any schema version ever written.

        Raises:
            RecordError: not a bench result, an unknown version, or a missing field."""
        if values.get("kind") != BENCH_RESULT_KIND:
            raise RecordError(f"{where}: kind is {shorten(values.get('kind'))}, not "
                              f"{BENCH_RESULT_KIND!r}")
        values = migrate("bench-result", dict(values), values.get("schema_version"), where)
        try:
            return cls(**{**_pick(cls, values), "measurement": MeasurementRecord.from_json(values),
                          "path": values.get("path", where)})
        except KeyError as missing:
            raise RecordError(f"{where}: not a complete bench result ({missing.args[0]} is "
                              "missing)") from None
        except (TypeError, ValueError) as error:
            raise RecordError(f"{where}: not a complete bench result ({error})") from None


def read_bench_results(path: Path) -> tuple[list[BenchRunRecord], list[tuple[Path, str]]]:
    """Every result file in ``path`` (a file or a directory tree, any depth), in the current
    schema, and the other ``.json`` files with why each is not a usable result.

    Hidden files are skipped: they are the temporary files of writes a crash interrupted."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.json") if not p.name.startswith("."))
    else:
        check_readable_file(path, "result file")
        files = [path]
    results, skipped = [], []
    for file in files:
        try:
            values = json.loads(read_text(file, "result file"))
            if not isinstance(values, dict):
                values = {}  # reads as "kind is None", like any JSON that is not a result
            results.append(BenchRunRecord.from_json({**values, "path": str(file)}, str(file)))
        except (json.JSONDecodeError, UnicodeDecodeError, FileError) as error:
            skipped.append((file, f"not readable JSON: {error}"))
        except RecordError as reason:
            skipped.append((file, str(reason).removeprefix(f"{file}: ")))
    return results, skipped
