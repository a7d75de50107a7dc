"""A busy host is seen, waited for, retaken and flagged; a quiet one is left alone.

The busy host is real: a subprocess keeps more processes spinning than the host has cores, for a
bounded time. Assertions are on flags and evidence, never on how long anything took.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from pathlib import Path

import pytest
import torch
from test_study import _settings

from harness.cli import main
from harness.devices import get_device
from harness.devices import probe as reference_probe
from harness.devices.competing_load import CompetingLoad
from harness.devices.contention import (
    OTHERS_SLACK_CORES,
    PROBE_SLOWDOWN_LIMIT,
    STEAL_LIMIT,
    judge,
    logical_cores,
)
from harness.devices.probe import PROBE_BLOCKS, ReferenceProbe, calibration_path, load_calibration
from harness.records import ContentionEvidence, MeasurementRecord
from harness.report import write_report
from harness.search.results import is_contended, pareto_trials
from harness.search.study import run_search


@pytest.fixture
def competing_load():
    load = CompetingLoad()
    yield load
    load.stop()


def _device_and_protocol(device_file: Path, **changes):
    """The fast test profile timing with every core, so any other busy process is contention."""
    device = get_device(str(device_file))
    protocol = dataclasses.replace(device.profile.protocol, threads=logical_cores(),
                                   time_cap_s=0.3, contention_backoff_s=0.2,
                                   contention_retakes=1, **changes)
    return device, protocol


def _evaluate(device, protocol):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(128, 256), torch.nn.GELU(), torch.nn.Linear(256, 128))
    from harness.config import CandidateConfig

    return device.evaluate(CandidateConfig(), model, torch.randn(8, 128), protocol).to_json()


def test_a_quiet_host_is_not_flagged_and_latency_is_drift_corrected(fast_device_file):
    device, protocol = _device_and_protocol(fast_device_file)
    result = _evaluate(device, protocol)
    contention = result["contention"]
    assert contention["checked"] and not contention["contended"]
    # a daemon's blip over a 0.2-s window may cost a retake, never a flag
    assert len(result["retaken_samples_ms"]) == contention["takes"] - 1
    assert contention["evidence"][-1]["reasons"] == []
    drift = result["drift"]
    assert drift["status"] == "corrected" and drift["probe_samples"] >= 2
    assert 0 < drift["probe_share"] < 1
    assert result["latency_ms"]["drift_corrected"]
    # the record holds what the correction used: each sample by the probe blocks around it
    assert len(result["probe_samples_ms"]) == len(result["probe_positions"]) == drift["probe_samples"]
    corrected = MeasurementRecord.from_json(result).corrected_samples_ms()
    # (samples are stored to 1e-5 ms: ~3e-4 of this tiny model's 0.03 ms)
    assert result["latency_ms"]["median"] == pytest.approx(statistics.median(corrected), rel=2e-3)


def test_a_busy_host_is_retaken_then_flagged_with_evidence(fast_device_file, competing_load):
    device, protocol = _device_and_protocol(fast_device_file)
    result = _evaluate(device, protocol)
    contention = result["contention"]
    assert contention["checked"] and contention["contended"]
    assert contention["takes"] == 2  # one retake allowed, after a wait for the host
    assert len(contention["evidence"]) == 2
    assert all(e["contended"] and e["reasons"] for e in contention["evidence"])
    assert any("other processes used" in r for r in contention["evidence"][-1]["reasons"])
    assert any("python" in name for name in contention["evidence"][-1]["busiest"])
    # nothing measured is lost: the first take's samples are kept beside the last take's
    assert len(result["retaken_samples_ms"]) == 1 and result["retaken_samples_ms"][0]
    assert result["latency_samples_ms"]


def test_the_probe_is_calibrated_only_on_a_quiet_host_and_then_kept(fast_device_file,
                                                                      competing_load):
    device, protocol = _device_and_protocol(fast_device_file)
    result = _evaluate(device, protocol)
    assert result["drift"]["status"] == "uncalibrated"
    assert "host is busy" in result["drift"]["reason"]
    assert result["latency_ms"]["median"] == result["latency_raw_ms"]["median"]
    probe = result["drift"]["probe"]
    assert load_calibration(device.name, logical_cores(), probe) is None
    competing_load.stop()
    time.sleep(0.5)
    result = _evaluate(device, protocol)
    calibration = load_calibration(device.name, logical_cores(), probe)
    assert calibration is not None and calibration.quiet_ms > 0
    assert len(calibration.window_medians_ms) == reference_probe.CALIBRATION_WINDOWS
    assert calibration.quiet_ms == min(calibration.window_medians_ms)
    assert result["drift"]["probe_quiet_ms"] == calibration.quiet_ms
    written = calibration_path(device.name, logical_cores(), probe).stat().st_mtime_ns
    again = _evaluate(device, protocol)
    assert again["drift"]["probe_quiet_ms"] == calibration.quiet_ms
    assert calibration_path(device.name, logical_cores(), probe).stat().st_mtime_ns == written


def test_both_checks_can_be_switched_off(fast_device_file, competing_load):
    device, protocol = _device_and_protocol(fast_device_file, contention_check=False,
                                            drift_correction=False)
    result = _evaluate(device, protocol)
    assert result["contention"] == {"checked": False, "contended": False, "takes": 1,
                                    "waited_s": 0.0, "evidence": []}
    assert result["drift"]["status"] == "off" and result["probe_samples_ms"] == []
    assert result["latency_ms"]["median"] == result["latency_raw_ms"]["median"]


def test_drift_correction_off_still_times_the_probe_for_the_check(fast_device_file):
    device, protocol = _device_and_protocol(fast_device_file, drift_correction=False)
    result = _evaluate(device, protocol)
    assert result["drift"]["status"] == "off" and result["drift"]["factor"] == 1.0
    assert result["probe_samples_ms"] and result["contention"]["checked"]


@pytest.mark.parametrize(
    ("others", "free", "steal", "slowdown", "gpu", "flagged"),
    [
        (0.0, 0, 0.0, 1.0, [], None),
        (OTHERS_SLACK_CORES - 0.01, 0, 0.0, None, [], None),
        (OTHERS_SLACK_CORES + 0.01, 0, 0.0, None, [], "other processes used"),
        (3.0, 4, 0.0, None, [], None),  # other work on cores the measurement left free
        (0.0, 0, STEAL_LIMIT + 0.01, None, [], "hypervisor stole"),
        (0.0, 0, 0.0, PROBE_SLOWDOWN_LIMIT + 0.1, [], "reference probe ran"),
        (0.0, 0, 0.0, 1.3, [], None),  # a drifting VM, absorbed by drift correction
        (0.0, 0, 0.0, None, ["python (pid 7)"], "other processes computed on the device"),
    ],
)
def test_judge_names_each_kind_of_evidence(others, free, steal, slowdown, gpu, flagged):
    reasons = judge(1.0, others, free, steal, slowdown, gpu)
    if flagged is None:
        assert reasons == []
    else:
        assert len(reasons) == 1 and flagged in reasons[0]


def test_a_search_on_a_busy_host_keeps_its_trials_off_the_front(tiny_space_file, fast_device_file,
                                                                 tmp_path, competing_load):
    _, protocol = _device_and_protocol(fast_device_file)
    settings = _settings(tiny_space_file, fast_device_file, tmp_path, protocol=protocol,
                         n_trials=2)
    study = run_search(settings)
    trials = study.get_trials(deepcopy=False)
    measured = [t for t in trials if t.values]
    assert measured and all(is_contended(t.user_attrs) for t in measured)
    assert pareto_trials(study, trials) == []
    assert {t.number for t in pareto_trials(study, trials, include_contended=True)} <= \
        {t.number for t in measured}
    report = write_report(study, settings.out_dir)
    text = report.read_text()
    assert "Measured on a busy host" in text and "id='contended'" in text
    assert json.loads((settings.out_dir / "pareto.json").read_text()) == []


def test_the_cli_flags_reach_the_record(fast_device_file, capsys):
    assert main(["measure", "--arch", "deit_tiny", "--set", "depth=1", "--device",
                 str(fast_device_file), "--no-contention-check", "--no-drift-correction",
                 "--no-energy", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["contention"]["checked"] is False
    assert record["drift"]["status"] == "off"
    assert record["latency_protocol"]["contention_check"] is False


class QuietHost:
    """A host monitor that saw nothing else running."""

    def __init__(self, threads: int) -> None:
        pass

    def evidence(self) -> ContentionEvidence:
        return ContentionEvidence(window_s=1.0, others_cores=0.0, free_cores=0.0, steal_share=0.0,
                                  probe_slowdown=None, load_1m=None)


def test_the_quiet_time_is_the_fastest_calibration_window(monkeypatch, tmp_path):
    # The host's speed moved between the windows: a slow phase must not become the yardstick.
    windows = [[2.3, 2.4, 2.2], [1.5, 1.4, 1.45], [1.9, 2.0, 1.95], [1.42, 1.41, 1.6],
               [2.1, 2.2, 2.0]]
    monkeypatch.setattr(reference_probe, "time_probe_windows", lambda time_once: windows)
    monkeypatch.setattr(reference_probe, "HostMonitor", QuietHost)
    calibration = reference_probe.calibrate(lambda: 1.0, "cpu", 2, "test-probe")
    assert calibration.quiet_ms == 1.42
    assert calibration.window_medians_ms == [2.3, 1.45, 1.95, 1.42, 2.1]
    assert calibration.samples == 15
    assert load_calibration("cpu", 2, "test-probe") == calibration


def test_the_probe_runs_its_blocks_in_turn_with_the_same_weights_in_every_process():
    probe = ReferenceProbe(1)
    inputs = probe.example_input()
    with torch.inference_mode():
        outputs = [probe(inputs) for _ in range(PROBE_BLOCKS + 1)]
        first_of_another = ReferenceProbe(1)(inputs)
    assert len({output.sum().item() for output in outputs[:PROBE_BLOCKS]}) == PROBE_BLOCKS
    assert torch.equal(outputs[PROBE_BLOCKS], outputs[0])  # after the last, the first again
    assert torch.equal(first_of_another, outputs[0])


@pytest.mark.parametrize("precision", ["int8", "bf16"])
def test_the_probe_runs_in_the_precision_it_is_given(precision):
    probe = ReferenceProbe(1, precision)
    fp32 = ReferenceProbe(1)
    linears = [m for m in probe.modules() if "Linear" in type(m).__name__]
    assert probe.name == fp32.name.replace("-fp32", f"-{precision}")
    if precision == "int8":  # dynamically quantised, as harness.precision makes an int8 candidate
        assert linears and all(type(m).__module__.startswith("torch.ao.nn.quantized")
                               for m in linears)
        assert probe.example_input().dtype == torch.float32
    else:
        assert all(m.weight.dtype == torch.bfloat16 for m in linears)
        assert probe.example_input().dtype == torch.bfloat16
    with torch.inference_mode():  # the same blocks, rounded: close to the fp32 probe's output
        output, reference = probe(probe.example_input()), fp32(fp32.example_input())
    assert torch.allclose(output.float(), reference, atol=0.2)


def test_each_precision_is_corrected_by_a_probe_in_that_precision(fast_device_file):
    from harness.config import CandidateConfig

    device, protocol = _device_and_protocol(fast_device_file)
    model = torch.nn.Sequential(torch.nn.Linear(128, 256), torch.nn.GELU(), torch.nn.Linear(256, 128))
    probes = {}
    for precision in ("fp32", "int8"):
        record = device.evaluate(CandidateConfig(precision=precision), model,
                                 torch.randn(8, 128), protocol)
        probes[precision] = record.drift.probe
        assert record.drift.status == "corrected", record.drift.reason
        assert load_calibration(device.name, logical_cores(), record.drift.probe) is not None
        # the calibration this process measured with (a quiet window may since have stored a
        # faster one for the processes after it)
        calibration = reference_probe.quiet_calibration(None, device.name, logical_cores(),
                                                        record.drift.probe)
        assert calibration.probe == record.drift.probe
        assert record.drift.probe_quiet_ms == calibration.quiet_ms
    assert probes["fp32"].endswith("-fp32") and probes["int8"].endswith("-int8")
    # the int8 probe was calibrated against the fp32 one, in the same windows
    assert calibration.anchor == probes["fp32"] and calibration.ratio_to_anchor > 0
    anchor = reference_probe.quiet_calibration(None, device.name, logical_cores(), probes["fp32"])
    assert calibration.anchor_quiet_ms == anchor.quiet_ms
    assert calibration.quiet_ms == pytest.approx(anchor.quiet_ms * calibration.ratio_to_anchor,
                                                 abs=1e-6)
    assert calibration_path(device.name, logical_cores(), probes["fp32"]) != \
        calibration_path(device.name, logical_cores(), probes["int8"])


def test_a_probe_in_another_precision_is_calibrated_in_the_fp32_probes_terms(monkeypatch):
    monkeypatch.setattr(reference_probe, "HostMonitor", QuietHost)
    monkeypatch.setattr(reference_probe, "time_probe_windows", lambda time_once: [[2.0] * 3] * 5)
    fp32 = reference_probe.quiet_calibration(lambda: 2.0, "cpu", 2, "test-fp32")
    assert fp32.quiet_ms == 2.0 and fp32.anchor is None  # calibrated in a fast phase
    # Later, in a slow phase (1.3-1.6x), the int8 probe runs at 0.8 of the fp32 one's time in
    # every window: its own fastest window would make 2.08 ms its yardstick, 1.3x the fp32's.
    speeds = [1.5, 1.3, 1.6, 1.4, 1.5]
    monkeypatch.setattr(reference_probe, "time_paired_windows", lambda time_once, anchor_once: [
        ([1.6 * speed] * 3, [2.0 * speed] * 3) for speed in speeds])
    anchor = lambda: (lambda: 2.0, "test-fp32")  # noqa: E731
    int8 = reference_probe.quiet_calibration(lambda: 1.6, "cpu", 2, "test-int8", anchor)
    assert int8.quiet_ms == pytest.approx(1.6)
    assert (int8.anchor, int8.anchor_quiet_ms, int8.ratio_to_anchor) == ("test-fp32", 2.0, 0.8)
    assert load_calibration("cpu", 2, "test-int8") == int8
    # another process retakes the fp32 calibration, faster: the next process's int8 quiet time
    # follows it without timing anything, and is never retaken on its own
    reference_probe.store_calibration(dataclasses.replace(fp32, quiet_ms=1.8))
    monkeypatch.setattr(reference_probe, "_IN_USE", {})
    monkeypatch.setattr(reference_probe, "time_paired_windows", None)  # not called
    followed = reference_probe.quiet_calibration(lambda: 1.6, "cpu", 2, "test-int8", anchor)
    assert followed.quiet_ms == pytest.approx(1.44) and followed.anchor_quiet_ms == 1.8
    assert load_calibration("cpu", 2, "test-int8") == followed
    assert reference_probe.retake_if_faster(lambda: 1.0, followed, 1.0) is None


def test_a_calibration_of_an_older_probe_version_is_retaken(monkeypatch):
    monkeypatch.setattr(reference_probe, "HostMonitor", QuietHost)
    monkeypatch.setattr(reference_probe, "time_probe_windows", lambda time_once: [[1.0] * 3] * 5)
    path = calibration_path("cpu", 2, "test-probe")
    path.parent.mkdir(parents=True, exist_ok=True)
    older = {"probe": "test-probe", "quiet_ms": 2.32, "samples": 92,
             "calibrated_at": "2026-12-02T05:00:00+00:00", "machine_fingerprint": "f" * 64,
             "device": "cpu", "threads": 2, "torch": torch.__version__, "evidence": {},
             "version": reference_probe.PROBE_VERSION - 1}
    path.write_text(json.dumps(older))
    assert load_calibration("cpu", 2, "test-probe") is None
    calibration = reference_probe.quiet_calibration(lambda: 1.0, "cpu", 2, "test-probe")
    assert calibration.quiet_ms == 1.0 and calibration.version == reference_probe.PROBE_VERSION


def test_a_calibration_caught_in_a_slow_phase_is_retaken_for_later_processes(
        fast_device_file, monkeypatch):
    device, protocol = _device_and_protocol(fast_device_file)
    probe = _evaluate(device, protocol)["drift"]["probe"]
    path = calibration_path(device.name, logical_cores(), probe)
    taken = load_calibration(device.name, logical_cores(), probe)
    # as if calibrated while the host ran 3x slow
    slow = {**taken.to_dict(), "quiet_ms": 3 * taken.quiet_ms}
    path.write_text(json.dumps(slow))
    monkeypatch.setattr(reference_probe, "_IN_USE", {})  # a new process
    result = _evaluate(device, protocol)
    assert result["drift"]["probe_quiet_ms"] == slow["quiet_ms"]  # this process keeps its yardstick
    retaken = load_calibration(device.name, logical_cores(), probe)
    assert retaken.quiet_ms < slow["quiet_ms"]
    assert _evaluate(device, protocol)["drift"]["probe_quiet_ms"] == slow["quiet_ms"]
    monkeypatch.setattr(reference_probe, "_IN_USE", {})  # the next process
    assert _evaluate(device, protocol)["drift"]["probe_quiet_ms"] == retaken.quiet_ms
