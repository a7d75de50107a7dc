"""The CUDA device kind and its NVML wrapper, without a GPU: a fake ``pynvml`` stands in for the
driver, and the measurement rules are tested as pure functions. Tests marked ``needs_gpu`` run the
real path where a CUDA GPU is visible."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import time
import types

import pytest
import torch

from harness.config import CandidateConfig
from harness.devices import bundled_device_names, cuda, get_device, load_profile, parse_profile
from harness.devices.cuda import (
    ConditionLog,
    CudaDevice,
    counter_windows,
    energy_from_windows,
    integrate_power,
    name_matches,
    p99_note,
    sampled_windows,
    sampling_protocol,
    summarize_conditions,
)
from harness.devices.energy import EnergyWindow, energy_per_call
from harness.devices.nvml import Nvml, decode_throttle_reasons, open_nvml
from harness.errors import DeviceError
from harness.records import EnergyRecord
from harness.timing import WARMUP_WINDOW, MeasurementProtocol

GPU_PROFILES = ["a100", "h100", "h200", "l4", "rtx4090", "jetson-orin"]
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def fake_pynvml(
    names: tuple[str, ...] = ("NVIDIA A100-SXM4-80GB",),
    power_w: float = 250.0,
    update_s: float = 0.02,
    throttle_mask: int = 0,
    library: bool = True,
    energy_counter: bool = True,
    events_api: bool = True,
    unsupported: tuple[str, ...] = (),
) -> types.ModuleType:
    """A stand-in for ``pynvml`` with the real module's exception classes and behaviour: an
    energy counter that moves every ``update_s`` at ``power_w``; ``library=False`` fails in
    ``nvmlInit`` as the real one does without a driver; ``energy_counter=False`` and
    ``events_api=False`` drop the functions an old GPU or driver lacks; functions named in
    ``unsupported`` raise NVMLError_NotSupported."""
    module = types.ModuleType("pynvml")

    class NVMLError(Exception):
        message = "Unknown Error"

        def __str__(self) -> str:
            return self.message

    class NVMLError_LibraryNotFound(NVMLError):  # pynvml's class names
        message = "NVML Shared Library Not Found"

    class NVMLError_NotSupported(NVMLError):
        message = "Not Supported"

    module.NVMLError = NVMLError
    module.NVMLError_LibraryNotFound = NVMLError_LibraryNotFound
    module.NVMLError_NotSupported = NVMLError_NotSupported
    started = time.perf_counter()

    def nvmlInit() -> None:
        if not library:
            raise NVMLError_LibraryNotFound()

    def energy() -> int:
        updates = int((time.perf_counter() - started) / update_s)
        return int(updates * update_s * power_w * 1000)

    functions = {
        "nvmlInit": nvmlInit,
        "nvmlDeviceGetCount": lambda: len(names),
        "nvmlDeviceGetHandleByIndex": lambda index: index,
        "nvmlDeviceGetHandleByUUID": lambda uuid: 0,
        "nvmlDeviceGetName": lambda handle: names[handle].encode(),  # bytes, as old releases
        "nvmlSystemGetDriverVersion": lambda: "550.54.15",
        "nvmlDeviceGetTotalEnergyConsumption": lambda handle: energy(),
        "nvmlDeviceGetPowerUsage": lambda handle: int(power_w * 1000),
        "nvmlDeviceGetEnforcedPowerLimit": lambda handle: 400_000,
        "nvmlDeviceGetClockInfo": lambda handle, clock: {1: 1410, 2: 1593}[clock],
        "nvmlDeviceGetTemperature": lambda handle, sensor: 41,
        "nvmlDeviceGetCurrentClocksEventReasons": lambda handle: throttle_mask,
        "nvmlDeviceGetCurrentClocksThrottleReasons": lambda handle: throttle_mask,
    }
    if not energy_counter:
        del functions["nvmlDeviceGetTotalEnergyConsumption"]
    if not events_api:
        del functions["nvmlDeviceGetCurrentClocksEventReasons"]

    def not_supported(*args: object) -> None:
        raise NVMLError_NotSupported()

    for name in unsupported:
        functions[name] = not_supported
    for name, function in functions.items():
        setattr(module, name, function)
    return module


def opened(**options: object) -> Nvml:
    nvml = open_nvml(fake_pynvml(**options))
    assert isinstance(nvml, Nvml)
    return nvml


# --- the NVML wrapper ------------------------------------------------------------------------


def test_throttle_reasons_decode_and_ignore_idle_and_app_clocks():
    idle, app_clocks, sync_boost = 0x01, 0x02, 0x10
    assert decode_throttle_reasons(0x04 | 0x40 | idle | app_clocks | sync_boost) == [
        "sw_power_cap", "hw_thermal"]
    assert decode_throttle_reasons(0x08 | 0x20 | 0x80) == ["hw_slowdown", "sw_thermal",
                                                           "hw_power_brake"]
    assert decode_throttle_reasons(idle) == []


def test_absent_library_gives_a_reason_not_an_exception(monkeypatch):
    assert open_nvml(fake_pynvml(library=False)) == (
        "NVML could not start: NVML Shared Library Not Found")
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    assert open_nvml().startswith("pynvml (nvidia-ml-py) is not installed")


def test_the_real_pynvml_on_this_host_never_raises():
    nvml = open_nvml()
    if isinstance(nvml, str):
        assert nvml.startswith("NVML could not start")
    else:
        assert nvml.device_count() >= 0


def test_injected_module_is_found_through_sys_modules(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(names=("NVIDIA L4", "NVIDIA L40S")))
    nvml = open_nvml()
    assert isinstance(nvml, Nvml)
    assert nvml.names() == ["NVIDIA L4", "NVIDIA L40S"]  # bytes decoded
    assert nvml.driver_version() == "550.54.15"


def test_readings_and_conditions():
    nvml = opened(power_w=300.0, throttle_mask=0x04)
    handle = nvml.handle_by_uuid("GPU-0")
    assert nvml.conditions(handle) == {
        "sm_clock_mhz": 1410, "memory_clock_mhz": 1593, "temperature_c": 41,
        "power_w": 300.0, "power_limit_w": 400.0, "throttle_reasons": ["sw_power_cap"],
    }
    json.dumps(nvml.conditions(handle))


def test_functions_missing_on_old_gpus_read_none():
    old = opened(energy_counter=False, events_api=False, throttle_mask=0x20)
    assert old.total_energy_mj(0) is None  # pre-Volta: no counter in the driver
    assert old.throttle_reasons(0) == ["sw_thermal"]  # fell back to the deprecated call
    refused = opened(unsupported=("nvmlDeviceGetTotalEnergyConsumption",
                                  "nvmlDeviceGetCurrentClocksEventReasons",
                                  "nvmlDeviceGetCurrentClocksThrottleReasons",
                                  "nvmlDeviceGetTemperature"))
    assert refused.total_energy_mj(0) is None
    assert refused.throttle_reasons(0) is None
    assert refused.conditions(0)["temperature_c"] is None


# --- matching and availability ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "name", "matches"),
    [
        ("A100", "NVIDIA A100-SXM4-80GB", True),
        ("a100", "NVIDIA A100 80GB PCIe", True),
        ("L4", "NVIDIA L4", True),
        ("L4", "NVIDIA L40S", False),
        ("H100", "NVIDIA H100 80GB HBM3", True),
        ("H200", "NVIDIA H100 80GB HBM3", False),
        ("RTX 4090", "NVIDIA GeForce RTX 4090", True),
        ("RTX 4090", "NVIDIA GeForce RTX 4090 Laptop GPU", True),
        ("Orin", "Orin", True),
    ],
)
def test_name_rules_match_whole_words(rule, name, matches):
    assert name_matches(rule, name) is matches


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the host without a GPU")
def test_availability_on_this_host_says_why(monkeypatch):
    device = CudaDevice(load_profile("a100"))
    present, reason = device.availability()
    assert not present
    assert reason.startswith(f"torch {torch.__version__} was built without CUDA"
                             if torch.version.cuda is None else "no CUDA GPU visible")
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(names=("NVIDIA A100-SXM4-80GB",)))
    assert device.availability()[1].endswith("(NVML sees NVIDIA A100-SXM4-80GB)")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the host without a GPU")
def test_get_device_names_what_it_found_in_one_line():
    with pytest.raises(DeviceError, match=r"^device 'a100' is not available on this host: ") as info:
        get_device("a100")
    assert "\n" not in str(info.value)


def test_the_profile_picks_its_gpu_among_the_visible_ones(monkeypatch):
    monkeypatch.setattr(cuda, "visible_gpus", lambda: ["NVIDIA L40S", "NVIDIA L4"])
    l4 = CudaDevice(load_profile("l4"))
    assert l4.availability() == (True, "NVIDIA L4 matches 'L4'")
    assert l4.index == 1
    assert CudaDevice(load_profile("a100")).availability() == (
        False, "no visible GPU's name contains 'A100': found NVIDIA L40S, NVIDIA L4 instead")
    with pytest.raises(DeviceError, match="found NVIDIA L40S, NVIDIA L4 instead"):
        _ = CudaDevice(load_profile("h100")).index
    assert CudaDevice(parse_profile("kind: cuda\n", "any.yaml")).availability()[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the host without a GPU")
def test_describe_without_a_gpu_is_plain_json():
    facts = CudaDevice(load_profile("h100")).describe()
    assert facts["gpu_name"] is None and facts["reason"]
    json.dumps(facts)


# --- profiles and kernel knobs ---------------------------------------------------------------


@pytest.mark.parametrize("name", GPU_PROFILES)
def test_bundled_gpu_profiles_load_and_validate(name):
    assert name in bundled_device_names()
    profile = load_profile(name)
    assert profile.kind == "cuda" and profile.name == name and profile.description
    hardware = profile.hardware
    assert hardware["match"]["nvml_name_contains"]
    assert {"fp32", "fp16"} <= set(hardware["peak_tflops"])
    assert hardware["memory_bandwidth_gbs"] > 0 and hardware["tdp_w"] > 0
    assert hardware["datasheet"]
    protocol = profile.protocol
    assert protocol.min_samples >= 64 and protocol.energy_window_s > 1.0
    assert protocol.energy_windows >= 3 and protocol.idle_s > 0
    major = int(hardware["compute_capability"].split(".")[0])
    assert ("2:4" in profile.accelerates.get("weight_sparsity", ())) == (major >= 8)
    assert "int8" not in profile.accelerates.get("precision", ())


def test_a_profile_matches_its_own_hardware_name():
    names = {"a100": "NVIDIA A100-SXM4-80GB", "h100": "NVIDIA H100 80GB HBM3",
             "h200": "NVIDIA H200", "l4": "NVIDIA L4", "rtx4090": "NVIDIA GeForce RTX 4090",
             "jetson-orin": "Orin"}
    for profile in names:
        rule = load_profile(profile).hardware["match"]["nvml_name_contains"]
        assert [p for p, g in names.items() if name_matches(rule, g)] == [profile]


@pytest.mark.skipif(torch.cuda.is_available(), reason="uses the profile's compute capability")
def test_kernel_knobs_need_a_compute_capability():
    a100 = CudaDevice(load_profile("a100"))
    assert a100.accelerates("precision", "bf16")[0]
    assert a100.accelerates("weight_sparsity", "2:4")[0]
    assert a100.hardware_accelerates("precision", "int8") == (False, cuda.INT8_ON_CUDA)
    turing = CudaDevice(parse_profile(
        'kind: cuda\naccelerates: {precision: [fp16, bf16], weight_sparsity: ["2:4"]}\n'
        'hardware: {compute_capability: "7.5"}\n', "t4.yaml"))
    assert turing.accelerates("precision", "fp16")[0]
    assert turing.accelerates("precision", "bf16") == (
        False, "bf16 needs compute capability 8.0; profile 't4' (no GPU visible) has 7.5")
    assert not turing.accelerates("weight_sparsity", "2:4")[0]
    unknown = CudaDevice(parse_profile("kind: cuda\naccelerates: {precision: [bf16]}\n", "u.yaml"))
    assert "lists no hardware.compute_capability" in unknown.accelerates("precision", "bf16")[1]


def test_int8_is_refused_before_touching_the_gpu():
    device = CudaDevice(load_profile("a100"))
    config = CandidateConfig.from_dict({"embed_dim": 32, "depth": 1, "num_heads": 1,
                                        "img_size": 32, "patch_size": 8, "precision": "int8"})
    support = {k.knob: k for k in device.knob_support(config)}
    assert not support["precision"].accelerated
    with pytest.raises(DeviceError, match="precision int8 on a100: .*no CUDA kernels"):
        device.prepare(torch.nn.Identity(), torch.zeros(1), config)


# --- warm-up and sampling rules --------------------------------------------------------------


def test_sampling_enforces_mlperf_minimums():
    protocol = sampling_protocol(MeasurementProtocol(min_samples=30, max_samples=40))
    assert (protocol.min_samples, protocol.max_samples) == (64, 64)
    assert p99_note(661) == "p99 needs at least 662 samples (MLPerf LoadGen); 661 were taken"
    assert p99_note(662) is None


def test_throttling_is_true_false_or_unknown():
    calm = {"sm_clock_mhz": 1410, "temperature_c": 40, "power_w": 200.0, "throttle_reasons": []}
    hot = {**calm, "sm_clock_mhz": 1200, "temperature_c": 85, "throttle_reasons": ["hw_thermal"]}
    blind = {**calm, "throttle_reasons": None}
    record, throttled = summarize_conditions([calm, hot, calm])
    assert throttled is True
    assert record["throttle_reasons_seen"] == ["hw_thermal"] and record["throttled_samples"] == 1
    assert record["sm_clock_mhz_range"] == [1200, 1410]
    assert record["before"] == calm and record["samples"] == 3
    assert summarize_conditions([calm, calm])[1] is False
    assert summarize_conditions([blind, blind])[1] is None
    assert ConditionLog("NVML could not start: x").record() == ({"nvml": "NVML could not start: x"},
                                                                 None)


def test_condition_log_reads_the_fake_driver():
    log = ConditionLog((opened(throttle_mask=0x04 | 0x01), 0))
    log.sample()
    log.sample()
    record, throttled = log.record()
    assert throttled is True and record["nvml"] == "ok"
    assert record["throttle_reasons_seen"] == ["sw_power_cap"] and log.sm_clock_mhz() == 1410


# --- energy ----------------------------------------------------------------------------------


def test_shared_reduction_is_the_median_of_each_windows_joules_per_call():
    per_call = [0.15, 0.12, 0.18, 0.10, 0.14, 0.20, 0.11, 0.16, 0.13, 0.19, 0.17]
    windows = [EnergyWindow(joules=p * (10 + i), calls=10 + i, seconds=1.0 + i / 100)
               for i, p in enumerate(per_call)]
    energy = energy_per_call(windows, "test_source", "known windows", 42.0, lambda w: "unused")
    assert (energy.status, energy.source, energy.reason) == ("measured", "test_source",
                                                             "known windows")
    assert energy.joules_per_call == pytest.approx(0.15)
    # 11 windows: ranks 2 and 10 of the sorted values bound the median at 95% (binomial, p=0.5)
    assert energy.ci95 == (pytest.approx(0.11), pytest.approx(0.19))
    assert energy.ci95[0] <= energy.joules_per_call <= energy.ci95[1]
    assert (energy.windows, energy.window_s, energy.idle_power_w) == (11, pytest.approx(1.05), 42.0)
    assert EnergyWindow(joules=30.0, calls=0, seconds=2.0).power_w == 15.0


def test_shared_reduction_explains_an_empty_window_as_the_source_says():
    windows = [EnergyWindow(5.0, 10, 1.0), EnergyWindow(0.0, 3, 0.5), EnergyWindow(-1.0, 2, 0.25)]
    energy = energy_per_call(windows, "test_source", "read", None,
                             lambda w: f"nothing over {w.seconds} s")
    assert energy == EnergyRecord.unavailable("nothing over 0.5 s")
    assert energy_per_call([], "test_source", "read", None, lambda w: "unused") == (
        EnergyRecord.unavailable("test_source: no energy window was measured"))


def test_energy_per_call_is_the_median_over_windows():
    windows = [EnergyWindow(joules=j, calls=100, seconds=2.0) for j in (10.0, 12.0, 11.0)]
    energy = energy_from_windows(windows, "nvml_total_energy", "read", idle_power_w=60.0)
    assert energy.status == "measured" and energy.source == "nvml_total_energy"
    assert energy.joules_per_call == pytest.approx(0.11)
    assert energy.ci95 == (pytest.approx(0.10), pytest.approx(0.12))  # < 6 windows: min, max
    assert (energy.windows, energy.window_s, energy.idle_power_w) == (3, 2.0, 60.0)
    json.dumps(energy.to_json())


def test_a_window_that_reads_zero_joules_is_unavailable():
    windows = [EnergyWindow(5.0, 10, 1.0), EnergyWindow(0.0, 2, 0.01)]
    energy = energy_from_windows(windows, "nvml_total_energy", "read", None)
    assert energy.status == "unavailable" and energy.joules_per_call is None
    assert "shorter than the counter's update period" in energy.reason
    assert energy_from_windows([], "nvml_total_energy", "read", None).status == "unavailable"


def test_counter_windows_align_on_counter_updates():
    nvml = opened(power_w=250.0, update_s=0.01)
    windows = counter_windows(lambda: nvml.total_energy_mj(0), lambda: time.sleep(0.0005),
                              window_s=0.1, count=3)
    assert isinstance(windows, list) and len(windows) == 3
    for window in windows:
        assert window.seconds >= 0.1 and window.calls > 10
        # Energy over time between two updates is the power, to within a call at each edge.
        assert window.joules / window.seconds == pytest.approx(250.0, rel=0.2)


def test_a_stuck_counter_gives_a_reason(monkeypatch):
    monkeypatch.setattr(cuda, "MIN_COUNTER_WAIT_S", 0.02)
    reason = counter_windows(lambda: 1234, lambda: None, window_s=0.01, count=2)
    assert reason == ("the energy counter could not be read, or did not move within 0.02 s "
                      "while the workload ran")
    assert isinstance(counter_windows(lambda: None, lambda: None, 0.01, 1), str)


def test_sampled_power_is_integrated():
    assert integrate_power([0.0, 1.0, 3.0], [100.0, 200.0, 200.0]) == pytest.approx(550.0)
    windows = sampled_windows(lambda: 150_000, lambda: time.sleep(0.001), window_s=0.05, count=2,
                              poll_s=0.01)
    assert isinstance(windows, list) and len(windows) == 2
    assert all(w.joules == pytest.approx(150.0 * w.seconds) and w.calls > 0 for w in windows)
    assert sampled_windows(lambda: None, lambda: None, 0.01, 1) == (
        "the power reading failed during an energy window")


# --- the measurement loops, with CPU stand-ins for CUDA --------------------------------------

STAND_IN = """\
kind: cuda
measurement:
  warmup_min_s: 0.01
  warmup_min_iters: 5
  min_samples: 30
  max_samples: 100
  target_ci_rel: 0.5
  time_cap_s: 0.2
  energy_window_s: 0.05
  energy_windows: 3
  idle_s: 0.1
"""


@pytest.fixture
def cpu_stand_in(monkeypatch):
    """A CudaDevice whose CUDA calls run on the CPU: wall-clock timing instead of events, no
    device context or synchronisation, and NVML (with its handle) from ``fake_pynvml`` in
    ``.nvml``, which a test may replace."""

    def wall_clock_ms(run, flush=None):
        start = time.perf_counter()
        run()
        return (time.perf_counter() - start) * 1000

    monkeypatch.setattr(cuda, "event_time_ms", wall_clock_ms)
    monkeypatch.setattr(torch.cuda, "device", lambda index: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    device = CudaDevice(parse_profile(STAND_IN, "standin.yaml"))
    device.__dict__["index"] = 0  # the cached property, as if a GPU had matched
    device.nvml = (opened(power_w=250.0, update_s=0.01, throttle_mask=0x04), 0)
    monkeypatch.setattr(CudaDevice, "_nvml", lambda self: self.nvml)
    return device


def _tiny_model():
    return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.GELU()), torch.randn(4, 64)


def test_latency_loop_records_conditions(cpu_stand_in):
    result = cpu_stand_in.measure_latency(*_tiny_model(), cpu_stand_in.profile.protocol)
    assert result.summary.n >= 64  # MLPerf's p90 minimum beats the profile's 30
    assert result.warmup_iterations >= 2 * WARMUP_WINDOW
    assert result.throttled is True
    conditions = result.conditions
    assert conditions["nvml"] == "ok" and conditions["throttle_reasons_seen"] == ["sw_power_cap"]
    assert conditions["min_samples"] == 64 and conditions["warmup_steady"] in (True, False)
    assert conditions["p99_note"].startswith("p99 needs at least 662 samples")
    assert conditions["samples"] >= 2  # before and after, plus one every CONDITIONS_EVERY calls
    json.dumps(conditions)


def test_latency_without_nvml_cannot_tell_throttling(cpu_stand_in):
    cpu_stand_in.nvml = "NVML could not start: NVML Shared Library Not Found"
    result = cpu_stand_in.measure_latency(*_tiny_model(), cpu_stand_in.profile.protocol)
    assert result.throttled is None
    assert result.conditions["nvml"] == "NVML could not start: NVML Shared Library Not Found"


def test_energy_loop_from_the_counter(cpu_stand_in):
    energy = cpu_stand_in.measure_energy(*_tiny_model(), cpu_stand_in.profile.protocol)
    assert energy.status == "measured" and energy.source == "nvml_total_energy"
    assert energy.windows == 3 and energy.window_s >= 0.05
    assert energy.idle_power_w == pytest.approx(250.0, rel=0.25)  # the fake draws 250 W always
    assert 0 < energy.ci95[0] <= energy.joules_per_call <= energy.ci95[1]


def test_energy_loop_falls_back_to_power_sampling(cpu_stand_in):
    cpu_stand_in.nvml = (opened(energy_counter=False, power_w=100.0), 0)
    energy = cpu_stand_in.measure_energy(*_tiny_model(), cpu_stand_in.profile.protocol)
    assert energy.status == "measured" and energy.source == "nvml_power_sampling"
    assert energy.reason.startswith("sampled")
    assert energy.idle_power_w == pytest.approx(100.0)


def test_energy_is_unavailable_with_the_reason(cpu_stand_in):
    protocol = cpu_stand_in.profile.protocol
    cpu_stand_in.nvml = "NVML could not start: NVML Shared Library Not Found"
    assert cpu_stand_in.measure_energy(*_tiny_model(), protocol) == (
        EnergyRecord.unavailable("NVML could not start: NVML Shared Library Not Found"))
    cpu_stand_in.nvml = (opened(energy_counter=False,
                                unsupported=("nvmlDeviceGetPowerUsage",)), 0)
    energy = cpu_stand_in.measure_energy(*_tiny_model(), protocol)
    assert energy.status == "unavailable" and "neither an energy counter" in energy.reason
    off = dataclasses.replace(protocol, energy=False)
    assert cpu_stand_in.measure_energy(*_tiny_model(), off).status == "unavailable"


# --- on a real GPU ---------------------------------------------------------------------------

FAST_GPU = """\
kind: cuda
measurement:
  warmup_min_s: 0.05
  warmup_min_iters: 5
  min_samples: 64
  max_samples: 700
  target_ci_rel: 0.05
  time_cap_s: 1.0
  energy_window_s: 0.3
  energy_windows: 3
  idle_s: 0.2
"""


@needs_gpu
@pytest.mark.parametrize(("graphs", "flush"), [(False, False), (True, True)])
def test_times_a_model_on_the_gpu(graphs, flush):
    device = get_device_from_text(FAST_GPU)
    config = CandidateConfig.from_dict({"embed_dim": 64, "depth": 2, "num_heads": 2,
                                        "img_size": 32, "patch_size": 8})
    from harness.models import build_model

    model, inputs = device.prepare(build_model(config), torch.randn(1, 3, 32, 32), config)
    assert inputs.is_cuda and next(model.parameters()).is_cuda
    protocol = MeasurementProtocol(**{**device.profile.protocol.to_dict(),
                                      "cuda_graphs": graphs, "l2_flush": flush})
    result = device.measure_latency(model, inputs, protocol)
    assert result.summary.n >= 64 and all(s > 0 for s in result.samples_ms)
    assert result.conditions["timer"] == "cuda_events"
    assert result.conditions["cuda_graphs"] is graphs and result.conditions["l2_flush"] is flush
    assert result.throttled in (True, False, None)
    json.dumps(result.conditions)
    json.dumps(device.describe())


@needs_gpu
def test_energy_on_the_gpu():
    device = get_device_from_text(FAST_GPU)
    model = torch.nn.Sequential(torch.nn.Linear(1024, 1024), torch.nn.GELU()).cuda().eval()
    energy = device.measure_energy(model, torch.randn(64, 1024, device="cuda"),
                                   device.profile.protocol)
    assert energy.status in ("measured", "unavailable") and energy.reason
    if energy.status == "measured":
        assert energy.joules_per_call > 0 and energy.windows == 3


def get_device_from_text(text: str) -> CudaDevice:
    device = CudaDevice(parse_profile(text, "fastgpu.yaml"))
    assert device.availability()[0]
    return device
