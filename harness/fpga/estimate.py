"""The FPGA cost model: latency, resources and power of a ViT candidate on an HLS engine.

Every operator of ``harness.workload.operators`` runs on one of the harness's kernels: matmuls
(Linear layers, attention scores and weighted sums) on a PE × SIMD matrix unit, whose ideal cycles
are FINN's ``ceil(M/PE)·ceil(K/SIMD)·N``; softmax, LayerNorm and GELU on row pipelines of
``lanes`` values per cycle. A calibration (``harness.fpga.calibration``) turns ideal cycles into
the cycles the HLS reports show; without one the model assumes II 1 and no pipeline overhead, and
says so. Two engine templates compose the operators:

* ``layer_reuse``: one matrix unit and one unit per row operator, reused by every layer; latency
  is the sum over operators, each bounded below by streaming its weights from off-chip memory
  (a roofline on the profile's bandwidth);
* ``dataflow``: one stage per operator, weights on chip, the multiplier lanes shared among the
  matmul stages in proportion to their MACs (as FINN folds to balance a pipeline); a stage starts
  once its predecessor has produced its first row, so latency is the slowest stage's interval plus
  one row's time through every stage, and throughput is ``f / max stage interval``.

Fewer tokens (EViT, ToMe) mean fewer rows and fewer cycles; window and pooled attention fewer keys;
weight sparsity skips zero weights only where the engine lists the pattern.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from harness.config import CandidateConfig
from harness.fpga.calibration import Calibration, LinearFit
from harness.fpga.kernels import KernelSpec, kernel
from harness.workload import Operator, operators

PRECISION_BITS = {"int8": 8, "fp16": 16, "bf16": 16, "fp32": 32}
# Softmax, LayerNorm and GELU run in 16-bit fixed point next to an int8 or 16-bit matrix unit.
ROW_OPERATORS = ("softmax", "layernorm", "gelu")
# DSP slices per multiplier lane without a calibration: DSP48E2 packs two 8-bit multiplies; one
# 16-bit multiply fits one slice; a float32 multiply-add takes about three.
DATASHEET_DSP_PER_LANE = {8: 0.5, 16: 1.0, 32: 3.0}
BRAM_18K_BITS = 18 * 1024
URAM_BITS = 288 * 1024
TEMPLATES = ("layer_reuse", "dataflow")
CHECKED_RESOURCES = ("DSP", "LUT", "FF", "memory")


@dataclass(frozen=True)
class Engine:
    """The accelerator a profile describes (its ``engine:`` block)."""

    template: str
    pe: int
    simd: int
    lanes: int  # values per cycle of the softmax / LayerNorm / GELU pipelines
    sparsity: tuple[str, ...] = ()  # weight_sparsity patterns whose zeros the matrix unit skips


@dataclass(frozen=True)
class FpgaTarget:
    """The part and board figures of a profile's ``hardware:`` block."""

    part: str
    resources: dict[str, int]
    clock_mhz: float
    memory_bandwidth_gbs: float


@dataclass(frozen=True)
class FpgaEstimate:
    latency_ms: float
    throughput_per_s: float  # images per second
    busy_ms_by_operator: dict[str, float]  # time each operator kind keeps its units busy
    memory_bound_share: float  # of the latency spent waiting on off-chip weights (layer_reuse)
    used: dict[str, float | None]  # DSP, LUT, FF (None: not estimated), memory in BRAM_18K units
    available: dict[str, float]
    violations: dict[str, float]  # constraint key → used/available − 1 (feasible when <= 0)
    power_w: float | None
    power_reason: str
    label: str
    error_pct: float | None
    notes: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return all(v <= 0 for v in self.violations.values())

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "fits": self.fits}


def estimate(config: CandidateConfig, batch_size: int, engine: Engine, target: FpgaTarget,
             calibration: Calibration) -> FpgaEstimate:
    """Latency, resources and power of ``config`` on ``engine`` (one call of ``batch_size``)."""
    bits = PRECISION_BITS[config.precision]
    row_bits = 32 if bits == 32 else 16
    ops = operators(config)
    sparse = config.weight_sparsity in engine.sparsity
    clock_hz = target.clock_mhz * 1e6
    notes = []
    if any(op.kind == "pool" for op in ops):
        notes.append("pooling of pooled attention at the ideal II 1 (no kernel to calibrate)")
    if config.weight_sparsity != "dense" and not sparse:
        notes.append(f"weight_sparsity {config.weight_sparsity}: the engine does not skip zeros; "
                     "weights are computed densely")

    if engine.template == "layer_reuse":
        matmul_lanes = {id(op): (engine.pe, engine.simd) for op in ops}
    else:
        matmul_lanes = _fold(ops, engine.pe * engine.simd)
    busy_ms_by_operator: dict[str, float] = {}
    stage_cycles, first_row_cycles, memory_s, total_s = [], [], 0.0, 0.0
    for op in ops:
        cycles = _cycles(op, batch_size, matmul_lanes.get(id(op)), engine.lanes, bits, row_bits,
                         sparse, calibration)
        seconds = cycles / clock_hz
        if engine.template == "layer_reuse" and op.has_weights:
            weight_bytes = op.weight_count * bits / 8 * ((1 - op.zero_fraction) if sparse else 1)
            streaming = weight_bytes / (target.memory_bandwidth_gbs * 1e9)
            memory_s += max(0.0, streaming - seconds)
            seconds = max(seconds, streaming)
        stage_cycles.append(cycles)
        first_row_cycles.append(cycles / (op.rows * batch_size))
        total_s += seconds
        busy_ms_by_operator[op.kind] = busy_ms_by_operator.get(op.kind, 0.0) + seconds * 1e3
    if engine.template == "layer_reuse":
        throughput = batch_size / total_s
    else:
        throughput = batch_size * clock_hz / max(stage_cycles)
        total_s = (max(stage_cycles) + sum(first_row_cycles)) / clock_hz

    used, resource_notes = _resources(ops, batch_size, engine, matmul_lanes, bits, row_bits,
                                      sparse, calibration)
    notes += resource_notes
    available = {"DSP": target.resources["DSP"], "LUT": target.resources["LUT"],
                 "FF": target.resources["FF"],
                 "memory": target.resources["BRAM_18K"]
                 + target.resources.get("URAM", 0) * URAM_BITS / BRAM_18K_BITS}
    violations = {f"fpga:{r}": (used[r] / available[r] - 1 if used[r] is not None else 0.0)
                  for r in CHECKED_RESOURCES}
    unknown = [r for r in CHECKED_RESOURCES if used[r] is None]
    if unknown:
        notes.append(f"{', '.join(unknown)} not estimated (no kernel reports to fit them): "
                     "not checked against the part")
    power_w, power_reason = _power(used, target, calibration)
    return FpgaEstimate(
        latency_ms=total_s * 1e3, throughput_per_s=throughput,
        busy_ms_by_operator={k: round(v, 6) for k, v in busy_ms_by_operator.items()},
        memory_bound_share=memory_s / total_s, used=used, available=available,
        violations=violations, power_w=power_w, power_reason=power_reason,
        label=calibration.label, error_pct=calibration.latency_error_pct, notes=notes)


def _fold(ops: list[Operator], total_lanes: int) -> dict[int, tuple[int, int]]:
    """Dataflow: each matmul stage's (PE, SIMD), lanes in proportion to its MACs, at least one."""
    matmuls = [op for op in ops if op.kind == "matmul"]
    total_macs = sum(op.macs for op in matmuls)
    folds = {}
    for op in matmuls:
        lanes = max(1, round(total_lanes * op.macs / total_macs))
        pe = min(lanes, op.outputs)
        folds[id(op)] = (pe, max(1, min(lanes // pe, op.cols)))
    return folds


def _cycles(op: Operator, batch: int, pe_simd: tuple[int, int] | None, lanes: int, bits: int,
            row_bits: int, sparse: bool, calibration: Calibration) -> float:
    rows = op.rows * batch
    if op.kind == "pool":
        return rows * math.ceil(op.cols / lanes)
    if op.kind == "matmul":
        pe, simd = pe_simd
        spec = kernel("matmul", n=rows, k=op.cols, m=op.outputs, pe=pe, simd=simd, b=bits)
        density = (1 - op.zero_fraction) if sparse else 1.0
    else:
        spec = kernel(op.kind, r=rows, c=op.cols, l=lanes, b=row_bits)
        density = 1.0
    ideal = spec.ideal_cycles * density
    fit = calibration.latency.get(spec.operator)
    # II 1 is the floor: a fit extrapolated far from its reports must not promise less
    cycles = max(ideal, fit.predict(ideal=ideal, rows=rows)) if fit else ideal
    return op.repeats * cycles


def _resources(ops: list[Operator], batch: int, engine: Engine,
               matmul_lanes: dict[int, tuple[int, int]], bits: int, row_bits: int, sparse: bool,
               calibration: Calibration) -> tuple[dict[str, float | None], list[str]]:
    if engine.template == "layer_reuse":
        units = [("matmul", engine.pe * engine.simd, bits)]
        units += [(kind, engine.lanes, row_bits) for kind in ROW_OPERATORS
                  if any(op.kind == kind for op in ops)]
        largest = max(op.rows * batch * (op.cols + op.outputs) * op.repeats for op in ops)
        weight_tiles = 2 * engine.pe * max(op.cols for op in ops if op.has_weights)
        memory_bits = (2 * largest + weight_tiles) * bits  # ping-pong activations, weight tiles
    else:
        units = [("matmul", pe * simd, bits) for pe, simd in matmul_lanes.values()]
        units += [(op.kind, engine.lanes, row_bits) for op in ops if op.kind in ROW_OPERATORS]
        density = {id(op): (1 - op.zero_fraction) if sparse else 1.0 for op in ops}
        memory_bits = bits * sum(op.weight_count * density[id(op)]
                                 + op.rows * batch * max(op.outputs, op.cols) for op in ops)
    used: dict[str, float | None] = {"memory": memory_bits / BRAM_18K_BITS}
    notes = []
    for resource in ("DSP", "LUT", "FF"):
        amounts = [_unit_resource(op, lanes, width, resource, calibration)
                   for op, lanes, width in units]
        if None not in amounts:
            used[resource] = sum(amounts)
        elif resource == "DSP":
            # the matrix unit's DSPs are known from the datasheet; they are most of the DSPs
            used[resource] = sum(a for a in amounts if a is not None)
            notes.append("DSP counts the matrix unit only: the row pipelines' DSPs are not "
                         "estimated without their kernel reports")
        else:
            used[resource] = None
    return used, notes


def _unit_resource(operator: str, lanes: int, bits: int, resource: str,
                   calibration: Calibration) -> float | None:
    fits: dict[str, LinearFit] | None = calibration.resource_fit(operator, bits)
    if fits and resource in fits:
        return max(0.0, fits[resource].predict(lanes=lanes))
    if operator == "matmul" and resource == "DSP":
        return DATASHEET_DSP_PER_LANE[bits] * lanes
    return None


def _power(used: dict[str, float | None], target: FpgaTarget,
           calibration: Calibration) -> tuple[float | None, str]:
    power = calibration.power
    if power is None:
        return None, (f"no implemented design (Vivado utilization + power report) imported for "
                      f"{calibration.device}: import one with 'harness hls import'")
    if any(used[r] is None for r in ("DSP", "LUT", "FF")):
        return None, "LUT/FF of the engine not estimated (no kernel reports): power needs them"
    resources = {"DSP": used["DSP"], "LUT": used["LUT"], "FF": used["FF"],
                 "BRAM_18K": min(used["memory"], target.resources["BRAM_18K"])}
    dynamic = power.dynamic_w(resources, {k: float(v) for k, v in target.resources.items()},
                              target.clock_mhz / 1e3)
    return power.static_w + dynamic, (
        f"static {power.static_w:.3f} W + PL dynamic from a {power.model} fit on "
        f"{power.n_designs} implemented designs (error {power.error_pct:.1f}% "
        f"{power.error_kind}); processing system excluded")


def kernels_for(config: CandidateConfig, engine: Engine, batch_size: int = 1) -> list[KernelSpec]:
    """The distinct kernels the engine runs for ``config``: what ``harness hls synth`` builds."""
    bits = PRECISION_BITS[config.precision]
    row_bits = 32 if bits == 32 else 16
    specs = {}
    for op in operators(config):
        rows = op.rows * batch_size
        if op.kind == "matmul":
            spec = kernel("matmul", n=rows, k=op.cols, m=op.outputs, pe=min(engine.pe, op.outputs),
                          simd=min(engine.simd, op.cols), b=bits)
        elif op.kind in ROW_OPERATORS:
            spec = kernel(op.kind, r=rows, c=op.cols, l=engine.lanes, b=row_bits)
        else:
            continue
        specs[spec.name] = spec
    return list(specs.values())
