"""NVIDIA GPUs through PyTorch's CUDA backend: CUDA-event timing, NVML energy and run conditions.

How it differs from the CPU kind, and why:

* each call is timed with CUDA events (GPU timestamps around the call, then a wait on the end
  event), so the host's synchronisation after the last kernel does not count;
* a GPU warms up in its clocks as well as its caches, so warm-up runs until the timings *and* the
  SM clock are steady (``harness.timing.warm_up``), bounded by ``warmup_max_s``, not a fixed count;
* a power-capped or hot GPU is slower, so clocks, temperature and throttle reasons are sampled
  before, during and after timing, and every latency says whether the GPU throttled;
* tail percentiles need enough samples (MLPerf LoadGen: 64 for p90, 662 for p99), so at least
  64 are always taken, and the conditions say why p99 is missing below 662;
* energy comes from NVML's total-energy counter (Volta and newer), read over windows that start
  and end on a counter update, with the idle power measured apart (``counter_windows``).
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import Callable, Sequence
from functools import cached_property, partial
from typing import Any

import torch

from harness.config import CandidateConfig
from harness.devices.base import (
    MeasuredDevice,
    register_device_kind,
)
from harness.devices.energy import EnergyWindow, energy_per_call
from harness.devices.nvml import Nvml, open_nvml
from harness.errors import DeviceError, shorten
from harness.layers import inference_context
from harness.records import EnergyRecord
from harness.stats import MIN_SAMPLES_FOR_PERCENTILE
from harness.timing import (
    LatencyMeasurement,
    MeasurementProtocol,
    ProbeInterleave,
    measure_adaptively,
)

CONDITIONS_EVERY = 50  # timed calls between two NVML samples of the run conditions
GRAPH_WARMUP_CALLS = 3  # eager calls on a side stream before capture (cuBLAS handles, workspaces)
MIN_FLUSH_BYTES = 64 * 2**20  # the L2 flush buffer: twice the L2 size, at least this
POWER_POLL_S = 0.02  # power readings this far apart when integrating sampled power
IDLE_POLL_S = 0.005  # sleep between counter reads while the GPU idles
MIN_COUNTER_WAIT_S = 1.0  # wait this long at least for an energy counter update (~20-100 ms)

# Kernel knobs and the compute capability their fast kernels need: fp16 tensor cores (Volta),
# bf16 tensor cores and 2:4 sparse tensor cores (Ampere).
CAPABILITY_NEEDED: dict[tuple[str, str], tuple[int, int]] = {
    ("precision", "fp16"): (7, 0),
    ("precision", "bf16"): (8, 0),
    ("weight_sparsity", "2:4"): (8, 0),
}
INT8_ON_CUDA = ("precision int8 is CPU dynamic quantisation (torch.ao quantize_dynamic) in this "
                "harness, which has no CUDA kernels")


def _first_line(error: BaseException) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0]


def _format_capability(capability: tuple[int, int]) -> str:
    return f"{capability[0]}.{capability[1]}"


def visible_gpus() -> list[str] | str:
    """Names of the GPUs CUDA sees, in CUDA's order, or why there are none."""
    if torch.version.cuda is None:
        return f"torch {torch.__version__} was built without CUDA{_nvml_sees()}"
    if not torch.cuda.is_available():
        return f"no CUDA GPU visible{_nvml_sees()}"
    try:
        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except (RuntimeError, AssertionError) as error:
        return f"CUDA failed to start: {_first_line(error)}"


def _nvml_sees() -> str:
    """What NVML finds when CUDA finds nothing, in parentheses: tells a CPU-only torch build on a
    GPU host apart from a host without a driver."""
    nvml = open_nvml()
    if isinstance(nvml, str):
        return f" ({nvml})"
    names = nvml.names()
    return f" (NVML sees {', '.join(names)})" if names else " (NVML sees no GPU)"


def name_matches(rule: str, name: str) -> bool:
    """Whether GPU ``name`` contains ``rule`` as whole words, case aside: "L4" must match
    "NVIDIA L4" but not "NVIDIA L40S", and "A100" must match "NVIDIA A100-SXM4-80GB"."""
    pattern = rf"(?<![a-z0-9]){re.escape(rule.lower())}(?![a-z0-9])"
    return re.search(pattern, name.lower()) is not None


def sampling_protocol(protocol: MeasurementProtocol) -> MeasurementProtocol:
    """The protocol with at least the samples a p90 needs."""
    min_samples = max(protocol.min_samples, MIN_SAMPLES_FOR_PERCENTILE[90])
    return dataclasses.replace(protocol, min_samples=min_samples,
                               max_samples=max(protocol.max_samples, min_samples))


def p99_note(samples: int) -> str | None:
    """Why the summary's p99 is None, if it is."""
    needed = MIN_SAMPLES_FOR_PERCENTILE[99]
    if samples >= needed:
        return None
    return f"p99 needs at least {needed} samples (MLPerf LoadGen); {samples} were taken"


# --- run conditions --------------------------------------------------------------------------


def summarize_conditions(samples: Sequence[dict[str, Any]]) -> tuple[dict[str, Any], bool | None]:
    """A record of NVML condition samples (``Nvml.conditions``) and whether the GPU throttled:
    True if any sample names a throttle reason, False if reasons were read and none was named,
    None if they could never be read."""
    read = [s["throttle_reasons"] for s in samples if s.get("throttle_reasons") is not None]
    seen = sorted({reason for reasons in read for reason in reasons})
    record: dict[str, Any] = {
        "samples": len(samples),
        "before": samples[0] if samples else None,
        "after": samples[-1] if samples else None,
        "throttle_reasons_seen": seen,
        "throttled_samples": sum(1 for reasons in read if reasons),
    }
    for key in ("sm_clock_mhz", "temperature_c", "power_w"):
        values = [s[key] for s in samples if s.get(key) is not None]
        record[f"{key}_range"] = [min(values), max(values)] if values else None
    return record, (bool(seen) if read else None)


class ConditionLog:
    """NVML samples of the run conditions of one GPU, or the reason there are none."""

    def __init__(self, nvml: tuple[Nvml, Any] | str) -> None:
        self.nvml = nvml
        self.samples: list[dict[str, Any]] = []

    def sm_clock_mhz(self) -> int | None:
        return None if isinstance(self.nvml, str) else self.nvml[0].sm_clock_mhz(self.nvml[1])

    def sample(self) -> None:
        if not isinstance(self.nvml, str):
            self.samples.append(self.nvml[0].conditions(self.nvml[1]))

    def record(self) -> tuple[dict[str, Any], bool | None]:
        if isinstance(self.nvml, str):
            return {"nvml": self.nvml}, None
        record, throttled = summarize_conditions(self.samples)
        return {"nvml": "ok", **record}, throttled


# --- energy ----------------------------------------------------------------------------------


def integrate_power(times_s: Sequence[float], watts: Sequence[float]) -> float:
    """Joules under a sampled power curve (trapezoid rule)."""
    return sum((t1 - t0) * (w0 + w1) / 2
               for t0, t1, w0, w1 in zip(times_s, times_s[1:], watts, watts[1:]))


def _next_update(
    run_once: Callable[[], object], read_mj: Callable[[], int | None], give_up_s: float
) -> tuple[int | None, int]:
    """Run ``run_once`` until the counter moves; (the new reading, calls run). The reading is
    None if the counter could not be read or did not move within ``give_up_s``."""
    before, calls, start = read_mj(), 0, time.perf_counter()
    while before is not None and time.perf_counter() - start < give_up_s:
        run_once()
        calls += 1
        now = read_mj()
        if now != before:
            return now, calls
    return None, calls


def counter_windows(
    read_mj: Callable[[], int | None],
    run_once: Callable[[], object],
    window_s: float,
    count: int,
) -> list[EnergyWindow] | str:
    """``count`` back-to-back windows of at least ``window_s`` from an energy counter in mJ.

    The counter only moves every ~20-100 ms (a window shorter than that reads 0 J), so each window
    starts and ends on a counter update, with the workload running while it waits: the energy and
    the calls counted then cover the same time, to within one call at each edge."""
    give_up_s = max(window_s, MIN_COUNTER_WAIT_S)
    reading, _ = _next_update(run_once, read_mj, give_up_s)
    started = time.perf_counter()
    windows: list[EnergyWindow] = []
    while reading is not None and len(windows) < count:
        first, calls = reading, 0
        while time.perf_counter() - started < window_s:
            run_once()
            calls += 1
        reading, more = _next_update(run_once, read_mj, give_up_s)
        ended = time.perf_counter()
        if reading is not None:
            windows.append(EnergyWindow((reading - first) / 1000, calls + more, ended - started))
        started = ended
    if reading is None:
        return (f"the energy counter could not be read, or did not move within {give_up_s:g} s "
                "while the workload ran")
    return windows


def sampled_windows(
    read_mw: Callable[[], int | None],
    run_once: Callable[[], object],
    window_s: float,
    count: int,
    poll_s: float = POWER_POLL_S,
) -> list[EnergyWindow] | str:
    """``count`` windows of at least ``window_s``, their energy integrated from power readings
    in mW taken every ``poll_s`` between calls: for GPUs without an energy counter."""
    windows = []
    for _ in range(count):
        start = time.perf_counter()
        times, watts, calls = [0.0], [read_mw()], 0
        while times[-1] < window_s or len(times) < 2:
            run_once()
            calls += 1
            now = time.perf_counter() - start
            if now - times[-1] >= poll_s or now >= window_s:
                times.append(now)
                watts.append(read_mw())
        if any(w is None for w in watts):
            return "the power reading failed during an energy window"
        windows.append(EnergyWindow(integrate_power(times, [w / 1000 for w in watts]), calls,
                                    times[-1]))
    return windows


def energy_from_windows(
    windows: Sequence[EnergyWindow], source: str, reason: str, idle_power_w: float | None
) -> EnergyRecord:
    """Joules per call over NVML windows (``energy_per_call``). A window that read no energy was
    shorter than the counter's update period (~20-100 ms): a working GPU always draws power."""

    def too_short(window: EnergyWindow) -> str:
        return (f"{source} read {window.joules:g} J over a {window.seconds:.3f} s window: the "
                "window is shorter than the counter's update period; raise energy_window_s")

    return energy_per_call(windows, source, reason, idle_power_w, too_short)


def _pause() -> None:
    time.sleep(IDLE_POLL_S)


# --- CUDA execution --------------------------------------------------------------------------


def event_time_ms(run: Callable[[], object], flush: Callable[[], object] | None = None) -> float:
    """Milliseconds of ``run()`` between two CUDA events on the current stream. ``flush`` runs
    and finishes first, so the call starts on an idle GPU as it does without it."""
    if flush is not None:
        flush()
        torch.cuda.current_stream().synchronize()
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    run()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def capture_graph(model: torch.nn.Module, inputs: torch.Tensor) -> Callable[[], torch.Tensor]:
    """``model(inputs)`` captured once as a CUDA graph, replayed per call: the forward's kernel
    launches become one, which is what graphs are worth to a launch-bound small ViT.

    Raises:
        DeviceError: the forward cannot be captured (a host synchronisation, dynamic shapes).
    """
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.stream(side):
            for _ in range(GRAPH_WARMUP_CALLS):
                model(inputs)
        torch.cuda.current_stream().wait_stream(side)
        with torch.cuda.graph(graph):
            output = model(inputs)
    except RuntimeError as error:
        raise DeviceError(f"cuda_graphs: the model cannot be captured as a CUDA graph "
                          f"({_first_line(error)})") from None

    def replay() -> torch.Tensor:
        graph.replay()
        return output

    return replay


def runner(model: torch.nn.Module, inputs: torch.Tensor, cuda_graphs: bool) -> Callable[[], object]:
    """One inference, eager or as a CUDA graph replay."""
    return capture_graph(model, inputs) if cuda_graphs else partial(model, inputs)


@register_device_kind
class CudaDevice(MeasuredDevice):
    kind = "cuda"
    timing_options = ("cuda_graphs", "l2_flush")
    probe_batch = 64  # one image's block is a few kernel launches: too short to see the GPU

    def _find(self) -> tuple[int | None, str]:
        """(CUDA index of the GPU this profile describes, what was found); index None if none.
        GPUs are matched by CUDA's names, which honour CUDA_VISIBLE_DEVICES (NVML's do not)."""
        gpus = visible_gpus()
        if isinstance(gpus, str):
            return None, gpus
        rule = self.profile.hardware.get("match", {}).get("nvml_name_contains")
        if rule is None:
            return 0, f"{gpus[0]} (the profile has no match rule: the first GPU)"
        for index, name in enumerate(gpus):
            if name_matches(rule, name):
                return index, f"{name} matches {shorten(rule)}"
        return None, (f"no visible GPU's name contains {shorten(rule)}: found {', '.join(gpus)} "
                      "instead")

    def availability(self) -> tuple[bool, str]:
        index, reason = self._find()
        return index is not None, reason

    @cached_property
    def index(self) -> int:
        """CUDA index of this profile's GPU.

        Raises:
            DeviceError: no visible GPU matches the profile.
        """
        index, reason = self._find()
        if index is None:
            raise DeviceError(f"device {shorten(self.name)} is not available on this host: "
                              f"{reason}")
        return index

    @property
    def torch_device(self) -> torch.device:
        return torch.device("cuda", self.index)

    def _nvml(self) -> tuple[Nvml, Any] | str:
        """NVML and the handle of this GPU, found by UUID (NVML numbers GPUs in PCI order and
        ignores CUDA_VISIBLE_DEVICES, so CUDA's index would name the wrong one), or why not."""
        nvml = open_nvml()
        if isinstance(nvml, str):
            return nvml
        uuid = str(torch.cuda.get_device_properties(self.index).uuid)
        if not uuid.startswith(("GPU-", "MIG-")):
            uuid = f"GPU-{uuid}"
        handle = nvml.handle_by_uuid(uuid)
        if handle is None:
            return f"NVML has no GPU with the UUID of cuda:{self.index} ({uuid})"
        return nvml, handle

    def _capability(self) -> tuple[tuple[int, int] | None, str]:
        """(compute capability, where it came from): the GPU's, else the profile's datasheet."""
        index, _ = self._find()
        if index is not None:
            return torch.cuda.get_device_capability(index), torch.cuda.get_device_name(index)
        listed = self.profile.hardware.get("compute_capability")
        where = f"profile {shorten(self.name)} (no GPU visible)"
        if listed is None:
            return None, where
        major, _, minor = listed.partition(".")
        return (int(major), int(minor)), where

    def hardware_accelerates(self, knob: str, value: str) -> tuple[bool, str]:
        if (knob, value) == ("precision", "int8"):
            return False, INT8_ON_CUDA
        needed = CAPABILITY_NEEDED.get((knob, value))
        capability, where = self._capability()
        if needed is None:
            return True, f"{value} on {where}"
        if capability is None:
            return False, (f"{value} needs compute capability {_format_capability(needed)}; "
                           f"{where} lists no hardware.compute_capability")
        if capability < needed:
            return False, (f"{value} needs compute capability {_format_capability(needed)}; "
                           f"{where} has {_format_capability(capability)}")
        return True, f"{value} on compute capability {_format_capability(capability)} ({where})"

    def prepare(
        self, model: torch.nn.Module, inputs: torch.Tensor, config: CandidateConfig
    ) -> tuple[torch.nn.Module, torch.Tensor]:
        """The model and inputs on this GPU, then converted as the base class does: moved first,
        because 2:4 semi-structured weights can only be built from CUDA tensors.

        Raises:
            DeviceError: int8 (CPU-only here), or a sparse format torch cannot run on this GPU.
        """
        if config.precision == "int8":
            raise DeviceError(f"precision int8 on {self.name}: {INT8_ON_CUDA}; use fp16 or bf16")
        return super().prepare(model.to(self.torch_device), inputs.to(self.torch_device), config)

    def configure(self, protocol: MeasurementProtocol) -> None:
        """cuDNN autotuning on: the patch embedding's convolution has one shape per run, so its
        fastest algorithm is searched once, in warm-up, and kept."""
        torch.backends.cudnn.benchmark = True

    def describe(self) -> dict[str, Any]:
        facts: dict[str, Any] = {"cuda_runtime": torch.version.cuda, "cudnn": _cudnn_version()}
        index, reason = self._find()
        if index is None:
            return {**facts, "gpu_name": None, "reason": reason}
        properties = torch.cuda.get_device_properties(index)
        facts.update(
            gpu_name=properties.name,
            gpu_index=index,
            compute_capability=f"{properties.major}.{properties.minor}",
            memory_gib=round(properties.total_memory / 2**30, 1),
            multiprocessors=properties.multi_processor_count,
            l2_cache_mib=round(properties.L2_cache_size / 2**20, 1),
            matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
        )
        nvml = self._nvml()
        if isinstance(nvml, str):
            return {**facts, "nvml": nvml}
        reader, handle = nvml
        return {**facts, "nvml": "ok", "driver": reader.driver_version(),
                **reader.conditions(handle)}

    def time_call(self, model: torch.nn.Module, inputs: torch.Tensor) -> float:
        return event_time_ms(partial(model, inputs))

    def _l2_flush(self) -> Callable[[], object]:
        """Overwrites the L2 cache (a buffer twice its size), so a call reads its weights from
        device memory as one that follows other work would."""
        size = max(2 * torch.cuda.get_device_properties(self.index).L2_cache_size, MIN_FLUSH_BYTES)
        return torch.empty(size // 4, dtype=torch.int32, device=self.torch_device).zero_

    def place(self, value: Any) -> Any:
        return value.to(self.torch_device)

    def other_device_processes(self) -> list[str]:
        nvml = self._nvml()
        if isinstance(nvml, str):
            return []
        reader, handle = nvml
        return [f"{name} (pid {pid})" for pid, name in reader.compute_processes(handle)
                if pid != os.getpid()]

    def measure_latency(
        self, model: torch.nn.Module, inputs: torch.Tensor, protocol: MeasurementProtocol,
        probe: ProbeInterleave | None = None, contended: Callable[[], bool] | None = None,
    ) -> LatencyMeasurement:
        """Warm up until steady, then sample adaptively; conditions sampled throughout."""
        self.configure(protocol)
        log = ConditionLog(self._nvml())
        calls = 0
        with torch.cuda.device(self.index), inference_context(model):
            run = runner(model, inputs, protocol.cuda_graphs)
            flush = self._l2_flush() if protocol.l2_flush else None

            def time_once() -> float:
                nonlocal calls
                calls += 1
                if calls % CONDITIONS_EVERY == 0:
                    log.sample()
                return event_time_ms(run, flush)

            log.sample()
            sampling = sampling_protocol(protocol)
            timed = measure_adaptively(time_once, sampling, log.sm_clock_mhz, probe, contended)
            log.sample()
        record, throttled = log.record()
        conditions = {
            "timer": "cuda_events",
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "cuda_graphs": protocol.cuda_graphs,
            "l2_flush": protocol.l2_flush,
            **timed.conditions,
            "min_samples": sampling.min_samples,
            "p99_note": p99_note(timed.summary.n),
            **record,
        }
        return dataclasses.replace(timed, conditions=conditions, throttled=throttled)

    def measure_energy(
        self, model: torch.nn.Module, inputs: torch.Tensor, protocol: MeasurementProtocol
    ) -> EnergyRecord:
        """Joules per call from NVML's total-energy counter, else from sampled power; the idle
        power over ``protocol.idle_s`` first, reported apart. Each call is synchronised, as
        latency is measured one call at a time."""
        if not protocol.energy:
            return EnergyRecord.unavailable("energy is off in the profile (energy: false)")
        nvml = self._nvml()
        if isinstance(nvml, str):
            return EnergyRecord.unavailable(nvml)
        reader, handle = nvml
        windows_of: Callable[[Callable[[], object], float, int], list[EnergyWindow] | str]
        if reader.total_energy_mj(handle) is not None:
            source = "nvml_total_energy"
            reason = ("NVML total-energy counter, differenced over windows that start and end on "
                      "a counter update")
            windows_of = partial(counter_windows, partial(reader.total_energy_mj, handle))
        elif reader.power_mw(handle) is not None:
            source = "nvml_power_sampling"
            reason = (f"sampled: this GPU has no total-energy counter, so NVML power readings "
                      f"every {POWER_POLL_S * 1000:.0f} ms were integrated (the driver may "
                      "average them over up to a second)")
            windows_of = partial(sampled_windows, partial(reader.power_mw, handle))
        else:
            return EnergyRecord.unavailable(
                f"NVML reads neither an energy counter nor the power draw of {self.name}")
        self.configure(protocol)
        with torch.cuda.device(self.index), inference_context(model):
            run = runner(model, inputs, protocol.cuda_graphs)

            def run_once() -> None:
                run()
                torch.cuda.synchronize()

            torch.cuda.synchronize()
            idle = windows_of(_pause, protocol.idle_s, 1)
            start, warm_calls = time.perf_counter(), 0
            while (warm_calls < protocol.warmup_min_iters
                   or time.perf_counter() - start < protocol.warmup_min_s):
                run_once()
                warm_calls += 1
            windows = windows_of(run_once, protocol.energy_window_s, protocol.energy_windows)
        if isinstance(windows, str):
            return EnergyRecord.unavailable(f"{source}: {windows}")
        idle_w = None if isinstance(idle, str) else idle[0].power_w
        return energy_from_windows(windows, source, reason, idle_w)


def _cudnn_version() -> int | None:
    """cuDNN's version; None without it, or when torch refuses the installed one."""
    try:
        return torch.backends.cudnn.version()
    except RuntimeError:
        return None
