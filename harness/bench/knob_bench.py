"""The knob benchmark: how much faster each efficiency knob makes a model, against the dense fp32
model of the same architecture, and how that compares with the MACs it saves.

The dense reference and the knob model are timed *interleaved in one run*: after a warm-up of
both, each of R rounds times k calls of one then k calls of the other, alternating which goes
first. Drift of a shared host (frequency, other processes) then hits both alike within a round,
and the per-round ratio of medians cancels it; the speed-up is the median of those ratios with the
distribution-free 95% CI of the median (``harness.stats.median_ci``). Both models are built from
the same seed, so their weights differ only by what the knob does to them.

The benchmark is computed once as rows (``bench_knobs``) and rendered to JSON and Markdown.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from harness.config import CandidateConfig, check_keys_take_effect, parse_set_options
from harness.cost import check_buildable, estimate_cost
from harness.devices.base import MeasuredDevice
from harness.devices.lock import exclusive_timing
from harness.errors import ConfigError, shorten
from harness.knobs import BASELINE
from harness.layers import inference_context
from harness.models import build_model
from harness.records import SCHEMA_VERSION, KnobSupport
from harness.runtimes import get_runtime
from harness.stats import median_ci
from harness.timing import MeasurementProtocol, warm_up

MODEL_SEED = 0  # dense and knob model share it: identical weights apart from the knob
INPUT_SEED = 0
# The switches that turn every knob off: the dense fp32 reference of an architecture.
KNOBS_OFF: dict[str, Any] = {
    "keep_rate": 1.0, "merge_r": 0, "attention": "global", "weight_sparsity": "dense",
    "precision": "fp32", "runtime": "eager",
}
# Keys a knob setting may set: the switches and the settings of the knobs they turn on. Other keys
# change the architecture, so the dense reference would no longer be the same network.
KNOB_KEYS = (
    "keep_rate", "keep_layers", "fuse_tokens", "merge_r", "merge_schedule", "attention",
    "window_size", "kv_pool", "weight_sparsity", "sparsity_block", "block_sparsity", "precision",
    "runtime", "compile_mode",
)
# Commas outside brackets separate assignments, so list values such as keep_layers=[4,7,10] stay whole.
_TOP_LEVEL_COMMA = re.compile(r",(?![^\[]*\])")


@dataclass(frozen=True)
class KnobSetting:
    """One knob setting: configuration keys applied to the dense reference, and its table label."""

    label: str
    values: Mapping[str, Any]


DEFAULT_SETTINGS: tuple[KnobSetting, ...] = (
    KnobSetting("merge_r=8", {"merge_r": 8}),
    KnobSetting("merge_r=16", {"merge_r": 16}),
    KnobSetting("keep_rate=0.7", {"keep_rate": 0.7, "keep_layers": (4, 7, 10)}),
    KnobSetting("keep_rate=0.5", {"keep_rate": 0.5, "keep_layers": (4, 7, 10)}),
    KnobSetting("attention=window", {"attention": "window", "window_size": 7}),
    KnobSetting("attention=pooled", {"attention": "pooled", "kv_pool": 2}),
    KnobSetting("weight_sparsity=2:4", {"weight_sparsity": "2:4"}),
    KnobSetting("weight_sparsity=block",
                {"weight_sparsity": "block", "block_sparsity": 0.9, "sparsity_block": 32}),
    KnobSetting("precision=int8", {"precision": "int8"}),
    KnobSetting("precision=bf16", {"precision": "bf16"}),
)
# Runtime rows: the same fp32 model run by another runtime, against eager. Default rows only for
# the runtimes the device lists and this host has installed (``runtime_settings``).
RUNTIME_SETTINGS: tuple[KnobSetting, ...] = (
    KnobSetting("runtime=compile", {"runtime": "compile"}),
    KnobSetting("runtime=onnxruntime", {"runtime": "onnxruntime"}),
)


def runtime_settings(device: MeasuredDevice) -> list[KnobSetting]:
    """The runtime rows ``device`` can run here."""
    return [setting for setting in RUNTIME_SETTINGS
            if setting.values["runtime"] in device.profile.runtimes
            and get_runtime(setting.values["runtime"]).availability()[0]]


def parse_knob(text: str) -> KnobSetting:
    """A ``--knob KEY=VALUE[,KEY=VALUE]`` option; values as in ``--set`` (YAML scalars or lists)."""
    values: dict[str, Any] = {}
    for part in _TOP_LEVEL_COMMA.split(text):
        key, sep, _ = part.partition("=")
        if not sep or key.strip() not in KNOB_KEYS:
            raise ConfigError(f"--knob expects KEY=VALUE[,KEY=VALUE] with knob keys "
                              f"({', '.join(KNOB_KEYS)}), got {shorten(text)}")
        try:
            values.update(parse_set_options([part]))
        except ConfigError as error:
            raise ConfigError(f"--knob {str(error).removeprefix('--set ')}") from None
    return KnobSetting(text.strip(), values)


@dataclass(frozen=True)
class KnobRow:
    """One knob setting on one architecture and batch size, with its dense reference."""

    device: str
    arch: str
    batch_size: int
    knob: str
    settings: Mapping[str, Any]
    gmacs: float  # the knob model's MACs, zero weights included (what dense kernels compute)
    effective_gmacs: float  # without the MACs of zero weights
    params_m: float
    dense_gmacs: float
    latency_ms: float  # median of every timed call of the knob model
    dense_latency_ms: float
    speedup: float  # median over rounds of median(dense) / median(knob)
    speedup_ci95: tuple[float, float]
    round_speedups: list[float]
    accelerated: bool  # the device runs every knob of the setting faster (knob_support)
    how: str
    warmup_steady: bool
    knobs: list[dict[str, Any]] = field(repr=False)

    @property
    def mac_reduction(self) -> float:
        return self.dense_gmacs / self.effective_gmacs

    @property
    def speedup_per_mac_reduction(self) -> float:
        """1.0: the knob turns all the MACs it saves into time; below, overheads eat some."""
        return self.speedup / self.mac_reduction

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "speedup_ci95": list(self.speedup_ci95),
                "mac_reduction": self.mac_reduction,
                "speedup_per_mac_reduction": self.speedup_per_mac_reduction}


@dataclass(frozen=True)
class KnobBenchResult:
    """Rows of one benchmark run with how they were measured (Markdown: ``harness.report.knob_bench``)."""

    device: str
    measurement: dict[str, Any]
    rows: list[KnobRow]

    def to_json(self, environment: dict[str, Any]) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "device": self.device,
                "environment": environment, "measurement": self.measurement,
                "rows": [row.to_dict() for row in self.rows]}


Prepared = tuple[torch.nn.Module, torch.Tensor]


def _prepare(device: MeasuredDevice, config: CandidateConfig, batch_size: int,
             weights: dict[str, torch.Tensor] | None = None) -> Prepared:
    """The model and inputs of ``config`` as the device runs them, in its runtime (checked
    against eager); same seeds for every model, or a pretrained checkpoint's ``weights``."""
    generator = torch.Generator().manual_seed(INPUT_SEED)
    inputs = torch.randn(batch_size, 3, config.img_size, config.img_size, generator=generator)
    model = build_model(config, seed=MODEL_SEED, shared_weights=weights)
    model, inputs = device.prepare(model, inputs, config)
    model, _ = device.deploy(model, inputs, config, device.profile.protocol)
    return model, inputs


def _time_calls(device: MeasuredDevice, prepared: Prepared, iters: int) -> list[float]:
    """Milliseconds of each of ``iters`` calls."""
    with inference_context(prepared[0]):
        return [device.time_call(*prepared) for _ in range(iters)]


@dataclass(frozen=True)
class PairedTiming:
    """Every timed call of the dense and the knob model (ms), and each round's speed-up."""

    dense_ms: list[float]
    knob_ms: list[float]
    round_speedups: list[float]
    warmup_steady: bool  # both models' warm-up met the steadiness rule (else: warmup_max_s)


def time_interleaved(
    device: MeasuredDevice, dense: Prepared, knob: Prepared, protocol: MeasurementProtocol,
    rounds: int, iters: int,
) -> PairedTiming:
    """Warm both models up, then ``rounds`` rounds of ``iters`` calls of each, the first model
    alternating (ABBA...), so slow drift of the host cancels in each round's ratio of medians.

    Like every measurement, it holds the device's timing lock and warms up by the protocol's
    steadiness rule (``timing.warm_up``)."""
    with exclusive_timing(device.name):
        warm = [warm_up(lambda model=model: _time_calls(device, model, 1)[0], lambda: None,
                        protocol) for model in (dense, knob)]
        dense_ms: list[float] = []
        knob_ms: list[float] = []
        ratios = []
        for round_number in range(rounds):
            dense_first = round_number % 2 == 0
            first = _time_calls(device, dense if dense_first else knob, iters)
            second = _time_calls(device, knob if dense_first else dense, iters)
            dense_round, knob_round = (first, second) if dense_first else (second, first)
            ratios.append(statistics.median(dense_round) / statistics.median(knob_round))
            dense_ms += dense_round
            knob_ms += knob_round
    return PairedTiming(dense_ms, knob_ms, ratios, all(w.steady for w in warm))


def _how(support: list[KnobSupport], config: CandidateConfig) -> str:
    """How the device runs the knobs the setting turns on (the fp32/dense baselines left out),
    and the runtime when it is not eager."""
    active = [f"{s.knob}: {s.how}" for s in support if BASELINE.get(s.knob) != s.value]
    if config.runtime != "eager":
        active.append(f"runtime: {config.runtime}, logits checked against eager")
    return "; ".join(active) or "no knob is on: the dense model"


def _row(device: MeasuredDevice, arch: str, batch_size: int, setting: KnobSetting,
         dense: CandidateConfig, knob: CandidateConfig, timing: PairedTiming) -> KnobRow:
    dense_cost, knob_cost = estimate_cost(dense), estimate_cost(knob)
    support = device.knob_support(knob)
    return KnobRow(
        device=device.name, arch=arch, batch_size=batch_size, knob=setting.label,
        settings=dict(setting.values), gmacs=knob_cost.gmacs,
        effective_gmacs=knob_cost.effective_gmacs, params_m=knob_cost.params_m,
        dense_gmacs=dense_cost.gmacs, latency_ms=statistics.median(timing.knob_ms),
        dense_latency_ms=statistics.median(timing.dense_ms),
        speedup=statistics.median(timing.round_speedups),
        speedup_ci95=median_ci(timing.round_speedups), round_speedups=timing.round_speedups,
        accelerated=all(s.accelerated for s in support), how=_how(support, knob),
        warmup_steady=timing.warmup_steady,
        knobs=[s.to_json() for s in support],
    )


def _knob_configs(
    archs: Mapping[str, CandidateConfig], settings: Sequence[KnobSetting]
) -> dict[str, tuple[CandidateConfig, list[CandidateConfig]]]:
    """Each architecture's dense reference and knob configurations, all validated before any
    timing starts, so an invalid setting fails in a second rather than after minutes: a key a
    setting states must take effect, and every model must be within the size limits."""
    configs = {}
    for name, arch in archs.items():
        dense = arch.replace(**KNOBS_OFF)
        check_buildable(dense)
        knobs = []
        for setting in settings:
            where = f"knob {setting.label} on {name}: "
            knob = CandidateConfig.from_dict({**dense.to_dict(), **setting.values}, where=where)
            check_keys_take_effect(knob, setting.values, where)
            check_buildable(knob)
            knobs.append(knob)
        configs[name] = (dense, knobs)
    return configs


def bench_knobs(
    device: MeasuredDevice,
    archs: Mapping[str, CandidateConfig],
    batch_sizes: Sequence[int],
    settings: Sequence[KnobSetting],
    rounds: int,
    iters: int,
    on_row: Callable[[int, int, KnobRow], None] | None = None,
    weights: dict[str, torch.Tensor] | None = None,
) -> KnobBenchResult:
    """Time every knob setting against its architecture's dense fp32 reference (``KNOBS_OFF``
    applied to the architecture), per batch size; ``on_row(done, total, row)`` after each row.
    ``weights``: a pretrained checkpoint of the (single) architecture, else seeded weights."""
    configs = _knob_configs(archs, settings)
    for _, knob_configs in configs.values():
        for knob_config in knob_configs:
            device.check_runtime(knob_config)
    protocol = device.profile.protocol
    device.configure(protocol)
    total = len(archs) * len(batch_sizes) * len(settings)
    rows: list[KnobRow] = []
    for name, (dense_config, knob_configs) in configs.items():
        for batch_size in batch_sizes:
            dense = _prepare(device, dense_config, batch_size, weights)
            for setting, knob_config in zip(settings, knob_configs):
                knob = _prepare(device, knob_config, batch_size, weights)
                timing = time_interleaved(device, dense, knob, protocol, rounds, iters)
                rows.append(_row(device, name, batch_size, setting, dense_config, knob_config,
                                 timing))
                if on_row is not None:
                    on_row(len(rows), total, rows[-1])
    return KnobBenchResult(device.name, _measurement(device, rounds, iters), rows)


def _measurement(device: MeasuredDevice, rounds: int, iters: int) -> dict[str, Any]:
    """How the rows were measured, for the JSON record."""
    protocol = device.profile.protocol
    return {
        "method": "interleaved rounds, first model alternating; speed-up = median over rounds "
                  "of median(dense) / median(knob), 95% CI of that median by order statistics "
                  "(the min-max range of the ratios below 6 rounds)",
        "rounds": rounds, "iters_per_round": iters, "threads": torch.get_num_threads(),
        "warmup": "until steady (timing.warm_up), at least warmup_min_iters calls and "
                  "warmup_min_s, at most warmup_max_s",
        "warmup_min_iters": protocol.warmup_min_iters, "warmup_min_s": protocol.warmup_min_s,
        "warmup_max_s": protocol.warmup_max_s,
        "model_seed": MODEL_SEED, "input_seed": INPUT_SEED,
    }
