from __future__ import annotations

import pytest
import torch

from harness.devices import bundled_device_names, get_device, parse_profile
from harness.errors import DeviceError


def test_cpu_profile_loads_and_is_present():
    assert "cpu" in bundled_device_names()
    device = get_device("cpu")
    assert device.kind == "cpu" and device.availability()[0]
    assert device.profile.protocol.min_samples >= 30
    facts = device.describe()
    assert facts["logical_cores"] >= 1 and facts["cpu_model"]


def test_cpu_measures_a_real_model(fast_device_file):
    device = get_device(str(fast_device_file))
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.GELU())
    result = device.measure_latency(model, torch.randn(4, 64), device.profile.protocol)
    assert result.summary.n == len(result.samples_ms) >= 10
    assert all(sample > 0 for sample in result.samples_ms)
    assert result.warmup_iterations >= 2
    assert result.stop_reason in ("ci_target", "time_cap", "max_samples")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: tpu\n", r"gpu.yaml: kind: expected one of cpu, cuda, fpga-hls, got 'tpu'"),
        ("kind: cpu\nmeasurement: {time_cap: 3}\n", r"gpu.yaml: measurement.time_cap: unknown key; valid: batch_size"),
        ("kind: cpu\nmeasurement: {min_samples: 2.5}\n", r"measurement.min_samples: expected a positive integer, got 2.5"),
        ("kind: cpu\nmeasurement: {time_cap_s: -1}\n", r"measurement.time_cap_s: expected a positive number, got -1"),
        ("kind: [cpu\n", r"gpu.yaml: line \d+: malformed YAML"),
    ],
)
def test_malformed_profiles_name_the_file_and_key(text, message):
    with pytest.raises(DeviceError, match=message):
        parse_profile(text, "gpu.yaml")


def test_unknown_device_lists_the_valid_ones():
    with pytest.raises(DeviceError, match="unknown device 'tpu_v5'; valid: a100, cpu, h100, h200, "
                       "jetson-orin, l4, pynq-z2, rtx4090, u250, zcu102, zcu104 or a path"):
        get_device("tpu_v5")


def test_an_absent_device_says_what_was_found_and_what_is_present():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(DeviceError, match=r"device 'a100' is not available on this host: .*CUDA.*; "
                       r"present here: cpu, pynq-z2, u250, zcu102, zcu104 \(see 'harness devices'\)"):
        get_device("a100")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: cpu\nmeasurement: {l2_flush: 1}\n", r"measurement.l2_flush: expected true or false, got 1"),
        ("kind: cpu\nhardware: {tdp_w: -5}\n", r"hardware.tdp_w: expected a positive number, got -5"),
        ("kind: cpu\nhardware: {peak_tflops: {fp4: 3}}\n", r"hardware.peak_tflops: expected a mapping of fp64, fp32"),
        ("kind: cpu\nhardware: {match: {name: A100}}\n", r"hardware.match: expected a mapping of nvml_name_contains"),
        ("kind: cpu\nhardware: {colour: red}\n", r"hardware.colour: unknown key; valid: match, peak_tflops"),
        ("kind: cpu\nmesurement: {}\n", r"gpu.yaml: unknown key 'mesurement'; valid: schema_version, name, kind"),
    ],
)
def test_malformed_hardware_and_protocol_blocks(text, message):
    with pytest.raises(DeviceError, match=message):
        parse_profile(text, "gpu.yaml")


def test_energy_is_unavailable_with_a_reason_by_default():
    from harness.devices.base import MeasuredDevice
    from harness.records import EnergyRecord

    class NoCounter(MeasuredDevice):
        kind = "test"

        def availability(self):
            return True, "always"

        def describe(self):
            return {}

        def time_call(self, model, inputs):
            return 1.0

    device = NoCounter(parse_profile("kind: cpu\n", "x.yaml"))
    energy = device.measure_energy(torch.nn.Identity(), torch.zeros(1), device.profile.protocol)
    assert energy == EnergyRecord.unavailable("device kind 'test' has no energy counter")
    assert energy.to_json()["joules_per_call"] is None and energy.status == "unavailable"


def test_gpu_only_timing_switches_are_refused_for_a_cpu(capsys):
    from harness.cli import main

    with pytest.raises(DeviceError, match="measurement.cuda_graphs: devices of kind 'cpu' do not use it; only cuda"):
        parse_profile("kind: cpu\nmeasurement: {cuda_graphs: true}\n", "x.yaml")
    assert main(["measure", "--l2-flush"]) == 2
    assert capsys.readouterr().err.strip() == (
        "harness: error: --l2-flush: device 'cpu' of kind 'cpu' does not use it; only kinds cuda")
