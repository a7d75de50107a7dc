"""Calibration data of FPGA device profiles: ``harness hls import`` and ``harness hls calibrate``.

``import_reports`` stores every report found under HLS project trees as one versioned JSON file
per report in the device's calibration directory (``$HARNESS_DATA_DIR/fpga/<device>/``; the
default data directory is ``$XDG_DATA_HOME/vit-harness``, else ``~/.local/share/vit-harness``).
Files are named by their content's hash, so importing a tree twice stores nothing new.

``fit_calibration`` turns the stored records into the coefficients the cost model uses:

* latency of each operator (matmul, softmax, LayerNorm, GELU) from the reports of the harness's
  kernels (named as ``harness.fpga.kernels`` says): ``cycles = a·ideal + c·rows + b`` by least
  squares, where ``ideal`` is the kernel's cycles at II 1 and ``rows`` counts pipeline restarts
  (with 3 reports no ``b``, with 2 no ``c``, with one ``a·ideal`` alone). A co-simulated latency is preferred
  to the synthesis estimate of the same kernel;
* DSP, LUT and FF of each operator and operand width as ``α·lanes + β``;
* power from implemented designs (a utilization and a power report side by side):
  ``P = static + f·Σ c_r·used_r`` with non-negative per-resource coefficients (NNLS) when there
  are at least as many designs as resources, otherwise one coefficient on the summed utilization
  fractions. Processing-system (PS7/PS8) power is left out: the model estimates the accelerator.

Errors are leave-one-out when there are more reports than coefficients (held out), otherwise
in-sample, and say which.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import nnls

from harness.errors import shorten
from harness.files import (
    data_home,
    make_dir,
    named_child,
    read_bytes,
    read_text,
    safe_name,
    write_atomically,
)
from harness.fpga.hls_reports import find_reports, parse_report
from harness.fpga.kernels import OPERATOR_PARAMS, KernelSpec, kernel_from_name
from harness.fpga.records import HlsReportError, ReportRecord
from harness.records import SCHEMA_VERSION, RecordError, migrate, register_migrations

POWER_RESOURCES = ("LUT", "FF", "BRAM_18K", "DSP")
FITTED_RESOURCES = ("DSP", "LUT", "FF")
PS_COMPONENTS = ("PS7", "PS8")


# No FPGA fabric clocks above ~1 GHz; a value in Hz instead of MHz (3e8) lands far above it.
MAX_CLOCK_MHZ = 2000.0


def calibration_dir(device: str) -> Path:
    return named_child(data_home() / "fpga", device)


def check_clock_mhz(clock_mhz: float) -> float:
    """A design clock in MHz, or ``HlsReportError``: a wrong clock would poison the power fit."""
    if not math.isfinite(clock_mhz) or not 0 < clock_mhz <= MAX_CLOCK_MHZ:
        raise HlsReportError(f"clock {clock_mhz:g} MHz: expected MHz in (0, {MAX_CLOCK_MHZ:g}]"
                             + (" (given in Hz?)" if clock_mhz > 1e5 else ""))
    return clock_mhz


@dataclass
class ImportResult:
    stored: list[Path] = field(default_factory=list)
    already_imported: list[Path] = field(default_factory=list)
    # imported before with another clock, now stored with the new one: (report, old clock MHz)
    reclocked: list[tuple[Path, float]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    store: Path | None = None


def part_family(part: str) -> str:
    """``xczu9eg-ffvb1156-2-e`` → ``zu9eg``: the device, without package, speed grade and the
    ``xc`` prefix that utilization reports sometimes drop."""
    core = part.lower().split("-")[0]
    return core.removeprefix("xc")


def _matches_part(record_part: str | None, family: str) -> bool:
    if record_part is None:  # lat.rpt names no part; its project tree does
        return True
    normalized = record_part.lower().replace("-", "")
    return (normalized.removeprefix("xc")).startswith(family)


def import_reports(paths: Iterable[Path], device: str, part: str, clock_mhz: float) -> ImportResult:
    """Store every report under ``paths`` (directories or report files) for ``device``.

    Reports for another part are skipped with the reason; ``clock_mhz`` is recorded with each
    report (Vivado's utilization and power reports do not state the clock they were run at).
    """
    check_clock_mhz(clock_mhz)
    result = ImportResult(store=make_dir(calibration_dir(device), "calibration directory"))
    family = part_family(part)
    for path in map(Path, paths):
        if path.is_dir():
            records, skipped = find_reports(path)
            result.skipped += skipped
        else:
            records = [parse_report(path)]
        for record in records:
            if not _matches_part(record.part, family):
                reason = f"part {record.part} is not {device}'s {part}"
                result.skipped.append((Path(record.source), reason))
                continue
            source = Path(record.source)
            previous_clock = _store(record, device, clock_mhz, result.store)
            if previous_clock is None:
                result.stored.append(source)
            elif previous_clock == clock_mhz:
                result.already_imported.append(source)
            else:
                result.reclocked.append((source, previous_clock))
    return result


def _store(record: ReportRecord, device: str, clock_mhz: float, store: Path) -> float | None:
    """Store ``record`` unless it is there with this clock; the clock it was stored with before
    (None: new). A report imported with a wrong clock is rewritten with the right one."""
    source = Path(record.source)
    digest = hashlib.sha256(read_bytes(source, "HLS report")).hexdigest()
    target = store / (safe_name(f"{record.kind}-{record.top or source.stem}-{digest[:12]}")
                      + ".json")
    previous_clock = None
    if target.exists():
        previous_clock = _read_entry(target)["clock_mhz"]
        if previous_clock == clock_mhz:
            return previous_clock
    entry = {
        "schema_version": SCHEMA_VERSION,
        "device": device,
        "imported_from": str(source.resolve()),
        "sha256": digest,
        "imported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "clock_mhz": clock_mhz,
        "record": record.to_dict(),
    }
    write_atomically(target, json.dumps(entry, indent=2) + "\n")
    return previous_clock


def load_entries(device: str) -> list[dict[str, Any]]:
    """Every stored record of ``device``, oldest file name first; a damaged file is an error."""
    return [_read_entry(path) for path in sorted(calibration_dir(device).glob("*.json"))]


def _read_entry(path: Path) -> dict[str, Any]:
    try:
        entry = json.loads(read_text(path, "calibration record"))
    except json.JSONDecodeError as error:
        raise HlsReportError(f"{path}: not a readable calibration record ({error})") from None
    if not isinstance(entry, dict):
        raise HlsReportError(f"{path}: not a calibration record; re-import the reports with "
                             "'harness hls import'")
    try:
        return migrate("calibration-entry", entry, entry.get("schema_version"), str(path))
    except RecordError as error:
        raise HlsReportError(f"{error}; re-import the reports with 'harness hls import'") from None


def _record_follows_its_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """Version 1 to 2: the stored report record carries the entry's version."""
    return {**entry, "record": {**entry["record"], "schema_version": 2}}


register_migrations("calibration-entry", {1: _record_follows_its_entry})


@dataclass(frozen=True)
class LinearFit:
    """``value = Σ coefficients[f]·feature_f + intercept`` and how well it fits."""

    features: tuple[str, ...]
    coefficients: tuple[float, ...]
    intercept: float
    n: int
    error_pct: float | None  # mean absolute relative error
    error_kind: str  # "held-out" (leave-one-out) or "in-sample"

    def predict(self, **values: float) -> float:
        return sum(c * values[f] for f, c in zip(self.features, self.coefficients)) + self.intercept

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fit_linear(points: list[tuple[dict[str, float], float]], features: tuple[str, ...],
               intercept: bool) -> LinearFit:
    """Least squares on the given features; leave-one-out error when points outnumber them."""
    def solve(rows: list[tuple[dict[str, float], float]]) -> tuple[np.ndarray, float]:
        x = np.array([[values[f] for f in features] + ([1.0] if intercept else [])
                      for values, _ in rows])
        y = np.array([target for _, target in rows])
        solution = np.linalg.lstsq(x, y, rcond=None)[0]
        return solution[:len(features)], float(solution[-1]) if intercept else 0.0

    def relative_error(coefficients: np.ndarray, offset: float, values: dict, target: float):
        predicted = sum(c * values[f] for f, c in zip(features, coefficients)) + offset
        return abs(predicted - target) / target

    coefficients, offset = solve(points)
    unknowns = len(features) + intercept
    if len(points) > unknowns:
        errors = [relative_error(*solve(points[:i] + points[i + 1:]), *points[i])
                  for i in range(len(points))]
        kind = "held-out"
    else:
        errors = [relative_error(coefficients, offset, *point) for point in points]
        kind = "in-sample"
    # rounding drops float noise such as an intercept of -4e-15 (+ 0.0 turns -0.0 into 0.0)
    return LinearFit(features, tuple(round(float(c), 9) + 0.0 for c in coefficients),
                     round(offset, 9) + 0.0, len(points), 100 * statistics.fmean(errors), kind)


def latency_features(n_points: int) -> tuple[tuple[str, ...], bool]:
    """As many latency coefficients as the reports can support (see the module docstring)."""
    if n_points >= 4:
        return ("ideal", "rows"), True
    if n_points == 3:
        return ("ideal", "rows"), False
    if n_points == 2:
        return ("ideal",), True
    return ("ideal",), False


def kernel_rows(spec: KernelSpec) -> int:
    """How often the kernel's inner pipeline restarts: once per row."""
    return spec.params["n" if spec.operator == "matmul" else "r"]


@dataclass(frozen=True)
class PowerFit:
    static_w: float
    model: str  # "per-resource" or "shared"
    coefficients_w_per_ghz: dict[str, float]  # per used unit, or per summed utilization fraction
    n_designs: int
    error_pct: float | None
    error_kind: str

    def dynamic_w(self, used: dict[str, float], available: dict[str, float], clock_ghz: float):
        if self.model == "per-resource":
            return clock_ghz * sum(c * used[r] for r, c in self.coefficients_w_per_ghz.items())
        return clock_ghz * self.coefficients_w_per_ghz["utilization"] * _utilization_sum(
            used, available)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _utilization_sum(used: dict[str, float], available: dict[str, float]) -> float:
    return sum(used[r] / available[r] for r in POWER_RESOURCES if available.get(r))


@dataclass(frozen=True)
class Calibration:
    device: str
    n_reports: int
    latency: dict[str, LinearFit]  # operator → cycles fit
    resources: dict[str, dict[str, LinearFit]]  # "operator/b<bits>" → resource → fit
    power: PowerFit | None
    unused: list[str]  # why some stored reports calibrate nothing

    @property
    def latency_error_pct(self) -> float | None:
        """Mean error over every kernel report, each operator's weighted by its reports."""
        fits = [f for f in self.latency.values() if f.error_pct is not None]
        if not fits:
            return None
        return sum(f.error_pct * f.n for f in fits) / sum(f.n for f in fits)

    @property
    def label(self) -> str:
        if not self.latency:
            return (f"estimated by the uncalibrated analytic model (II 1, no pipeline overhead): "
                    f"no HLS kernel reports imported for {self.device}")
        return (f"estimated from HLS reports ({self.n_reports} reports, fit error "
                f"{self.latency_error_pct:.1f}%)")

    def resource_fit(self, operator: str, bits: int) -> dict[str, LinearFit] | None:
        return self.resources.get(f"{operator}/b{bits}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "n_reports": self.n_reports,
            "label": self.label,
            "latency_error_pct": self.latency_error_pct,
            "latency": {op: fit.to_dict() for op, fit in self.latency.items()},
            "resources": {key: {r: fit.to_dict() for r, fit in fits.items()}
                          for key, fits in self.resources.items()},
            "power": self.power.to_dict() if self.power else None,
            "unused": list(self.unused),
        }


def fit_calibration(device: str, entries: list[dict[str, Any]]) -> Calibration:
    """The cost-model coefficients of ``device`` from its stored report records."""
    records = [entry["record"] for entry in entries]
    unused = []
    cosim = {r["top"]: r["cosim_latency"]["avg"] for r in records
             if r["kind"] == "cosim" and r["top"] and r["cosim_latency"]["avg"] is not None}
    latency_points: dict[str, list] = defaultdict(list)
    resource_points: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for record in (r for r in records if r["kind"] == "csynth"):
        spec = kernel_from_name(record["top"])
        if spec is None:
            unused.append(f"{record['source']}: top {shorten(record['top'])} is not a harness "
                          f"kernel name (hk_<operator>_...); not used for latency")
            continue
        cycles = cosim.get(record["top"]) or record["latency_cycles"]["worst"] \
            or record["latency_cycles"]["best"]
        if cycles is None:
            unused.append(f"{record['source']}: latency unknown (undef); not used")
            continue
        latency_points[spec.operator].append(
            ({"ideal": spec.ideal_cycles, "rows": kernel_rows(spec)}, float(cycles)))
        for resource in FITTED_RESOURCES:
            used = record["resources"].get(resource)
            if used:
                resource_points[f"{spec.operator}/b{spec.params['b']}"][resource].append(
                    ({"lanes": spec.lanes}, float(used)))
    latency = {op: fit_linear(points, *latency_features(len(points)))
               for op, points in sorted(latency_points.items())}
    resources = {
        key: {resource: fit_linear(points, ("lanes",),
                                   intercept=len({p[0]["lanes"] for p in points}) > 1)
              for resource, points in by_resource.items()}
        for key, by_resource in sorted(resource_points.items())
    }
    power = _fit_power(entries, unused)
    n_reports = sum(len(points) for points in latency_points.values())
    return Calibration(device, n_reports, latency, resources, power, unused)


def _fit_power(entries: list[dict[str, Any]], unused: list[str]) -> PowerFit | None:
    """Fit power from designs that have both a utilization and a power report in one directory."""
    by_directory: dict[str, dict[str, dict]] = defaultdict(dict)
    for entry in entries:
        record = entry["record"]
        if record["kind"] in ("utilization", "power"):
            by_directory[str(Path(entry["imported_from"]).parent)][record["kind"]] = entry
    designs = []
    for directory, pair in sorted(by_directory.items()):
        if set(pair) != {"utilization", "power"}:
            unused.append(f"{directory}: a {next(iter(pair))} report without its "
                          f"{'power' if 'utilization' in pair else 'utilization'} report; "
                          f"not used for power")
            continue
        utilization, power = pair["utilization"]["record"], pair["power"]["record"]
        used = {r: float(utilization["utilization"].get(r) or 0) for r in POWER_RESOURCES}
        ps = sum(power["power_components"].get(c) or 0 for c in PS_COMPONENTS)
        dynamic = power["power_w"]["dynamic"]
        if dynamic is None or power["power_w"]["static"] is None:
            unused.append(f"{directory}: power report without dynamic and static power")
            continue
        designs.append((used, utilization["available"], pair["power"]["clock_mhz"] / 1000,
                        dynamic - ps, power["power_w"]["static"]))
    if not designs:
        return None
    static = statistics.median(d[4] for d in designs)
    if len(designs) >= len(POWER_RESOURCES):
        points = [({r: clock * used[r] for r in POWER_RESOURCES}, pl) for used, _, clock, pl, _
                  in designs]
        coefficients = _nnls(points, POWER_RESOURCES)
        errors = _leave_one_out(points, POWER_RESOURCES)
        return PowerFit(static, "per-resource", coefficients, len(designs), errors, "held-out")
    points = [({"utilization": clock * _utilization_sum(used, available)}, pl)
              for used, available, clock, pl, _ in designs]
    coefficients = _nnls(points, ("utilization",))
    if len(designs) > 1:
        return PowerFit(static, "shared", coefficients, len(designs),
                        _leave_one_out(points, ("utilization",)), "held-out")
    return PowerFit(static, "shared", coefficients, 1, 0.0, "in-sample")


def _nnls(points: list[tuple[dict[str, float], float]], keys: tuple[str, ...]) -> dict[str, float]:
    x = np.array([[values[k] for k in keys] for values, _ in points])
    y = np.array([target for _, target in points])
    return {k: float(c) for k, c in zip(keys, nnls(x, y)[0])}


def _leave_one_out(points: list[tuple[dict[str, float], float]], keys: tuple[str, ...]) -> float:
    errors = []
    for i, (values, target) in enumerate(points):
        coefficients = _nnls(points[:i] + points[i + 1:], keys)
        errors.append(abs(sum(coefficients[k] * values[k] for k in keys) - target) / target)
    return 100 * statistics.fmean(errors)


def format_calibration(calibration: Calibration) -> str:
    """What ``harness hls calibrate`` prints: each fit with its error."""
    lines = [f"{calibration.device}: {calibration.label}"]
    for operator in OPERATOR_PARAMS:
        fit = calibration.latency.get(operator)
        if fit is None:
            lines.append(f"  {operator:<10} latency: no reports (ideal II 1 assumed)")
            continue
        terms = " + ".join(f"{c:.4g}·{f}" for f, c in zip(fit.features, fit.coefficients))
        lines.append(f"  {operator:<10} latency: cycles = {terms} + {fit.intercept:.4g}  "
                     f"({fit.n} reports, error {fit.error_pct:.2f}% {fit.error_kind})")
    for key, fits in calibration.resources.items():
        parts = [f"{r} {f.coefficients[0]:.3g}/lane + {f.intercept:.3g} "
                 f"({f.error_pct:.1f}% {f.error_kind})" for r, f in fits.items()]
        lines.append(f"  {key:<14} " + "; ".join(parts))
    power = calibration.power
    if power is None:
        lines.append("  power: no implemented design (utilization + power report) imported: "
                     "energy is reported unavailable")
    else:
        coefficients = ", ".join(f"{k} {v:.3g}" for k, v in power.coefficients_w_per_ghz.items())
        lines.append(f"  power: static {power.static_w:.3f} W + f[GHz]·({coefficients}) W, "
                     f"{power.model} model from {power.n_designs} designs, error "
                     f"{power.error_pct:.1f}% {power.error_kind}")
    lines += [f"  unused: {reason}" for reason in calibration.unused]
    return "\n".join(lines)
