"""FPGA devices: importing reports, calibrating the cost model, estimating candidates, searching.

The calibration fixture (``fixtures/hls/calibration/zcu102``, written by ``write_reports.py``
there) holds csynth reports of the harness's kernels, two co-simulations and three implemented
designs, in the formats of Vitis HLS 2023.2 and Vivado 2022.2.
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from harness.cli import main
from harness.cost import estimate_cost
from harness.devices import get_device, parse_profile
from harness.errors import DeviceError
from harness.fpga.calibration import calibration_dir, fit_calibration, import_reports, load_entries
from harness.fpga.estimate import Engine, FpgaTarget, estimate
from harness.fpga.kernels import kernel, kernel_from_name
from harness.fpga.records import HlsReportError
from harness.models import preset_config
from harness.records import SCHEMA_VERSION

FIXTURES = Path(__file__).parent / "fixtures" / "hls"
CALIBRATION = FIXTURES / "calibration" / "zcu102"
ZCU102_PART = "xczu9eg-ffvb1156-2-e"
DEIT_S_INT8 = preset_config("deit_small").replace(precision="int8")


@pytest.fixture
def zcu102():
    """The bundled zcu102 profile, calibrated on the fixture reports."""
    import_reports([CALIBRATION], "zcu102", ZCU102_PART, 300.0)
    return get_device("zcu102")


def test_kernel_names_carry_their_parameters():
    spec = kernel("matmul", n=197, k=192, m=576, pe=16, simd=16, b=8)
    assert spec.name == "hk_matmul_n197_k192_m576_pe16_simd16_b8"
    assert kernel_from_name(spec.name) == spec
    assert spec.ideal_cycles == 36 * 12 * 197  # FINN: ceil(M/PE)·ceil(K/SIMD)·N
    for other in ("matmul", "hk_matmul_n197_k192", "hk_conv_r1_c2_l3_b8", "hk_gelu_r0_c2_l1_b8"):
        assert kernel_from_name(other) is None


def test_import_stores_versioned_json_once_and_skips_other_parts():
    first = import_reports([CALIBRATION, FIXTURES / "zynq7020_power_routed.rpt"], "zcu102",
                           ZCU102_PART, 300.0)
    assert len(first.stored) == 23
    assert [reason for _, reason in first.skipped] == [
        "part xc7z020clg400-1 is not zcu102's xczu9eg-ffvb1156-2-e"]
    files = sorted(calibration_dir("zcu102").glob("*.json"))
    assert len(files) == 23
    entry = json.loads(files[0].read_text())
    assert entry["schema_version"] == entry["record"]["schema_version"] == SCHEMA_VERSION
    assert entry["clock_mhz"] == 300.0 and len(entry["sha256"]) == 64
    again = import_reports([CALIBRATION], "zcu102", ZCU102_PART, 300.0)
    assert not again.stored and len(again.already_imported) == 23


def test_a_report_imported_with_a_wrong_clock_is_re_imported_with_the_right_one():
    import_reports([CALIBRATION], "zcu102", ZCU102_PART, 250.0)
    fixed = import_reports([CALIBRATION], "zcu102", ZCU102_PART, 300.0)
    assert not fixed.stored and not fixed.already_imported
    assert len(fixed.reclocked) == 23 and {clock for _, clock in fixed.reclocked} == {250.0}
    assert {e["clock_mhz"] for e in load_entries("zcu102")} == {300.0}
    assert len(load_entries("zcu102")) == 23


@pytest.mark.parametrize("clock_mhz", [-5.0, 0.0, float("nan"), 3e8])
def test_an_impossible_clock_is_refused_and_nothing_is_stored(clock_mhz):
    with pytest.raises(HlsReportError, match="expected MHz in"):
        import_reports([CALIBRATION], "zcu102", ZCU102_PART, clock_mhz)
    assert not calibration_dir("zcu102").exists()


def test_a_profile_name_cannot_move_the_store_out_of_the_data_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "data"))
    assert calibration_dir("../../outside") == tmp_path / "data" / "fpga" / "outside"


def test_calibration_fits_each_operator_and_says_how_well():
    import_reports([CALIBRATION], "zcu102", ZCU102_PART, 300.0)
    calibration = fit_calibration("zcu102", load_entries("zcu102"))
    assert set(calibration.latency) == {"matmul", "softmax", "layernorm", "gelu"}
    matmul = calibration.latency["matmul"]
    assert matmul.n == 6 and matmul.error_kind == "held-out" and matmul.error_pct < 2
    # every row restarts the fold pipeline: a per-row overhead of several cycles
    assert matmul.coefficients[0] == pytest.approx(1, abs=0.01) and matmul.coefficients[1] > 4
    assert calibration.resource_fit("matmul", 8)["DSP"].coefficients[0] == pytest.approx(0.5)
    assert calibration.power.model == "shared" and calibration.power.n_designs == 3
    assert calibration.power.static_w == pytest.approx(0.721)
    assert calibration.label == (f"estimated from HLS reports (15 reports, fit error "
                                 f"{calibration.latency_error_pct:.1f}%)")


def test_co_simulated_latency_is_preferred_to_the_synthesis_estimate():
    import_reports([CALIBRATION], "zcu102", ZCU102_PART, 300.0)
    entries = load_entries("zcu102")
    with_cosim = fit_calibration("zcu102", entries)
    without = fit_calibration("zcu102", [e for e in entries if e["record"]["kind"] != "cosim"])
    assert with_cosim.latency["matmul"].coefficients != without.latency["matmul"].coefficients


def test_hls_calibrate_cli_prints_every_fit(zcu102, capsys):
    assert main(["hls", "calibrate", "--device", "zcu102"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("zcu102: estimated from HLS reports (15 reports, fit error")
    for operator in ("matmul", "softmax", "layernorm", "gelu"):
        assert f"  {operator}" in out and "held-out" in out
    assert main(["hls", "calibrate", "--device", "zcu102", "--json"]) == 0
    fitted = json.loads(capsys.readouterr().out)
    assert fitted["n_reports"] == 15 and fitted["power"]["model"] == "shared"


@pytest.mark.parametrize(("args", "message"), [
    (["hls", "import", str(CALIBRATION), "--device", "cpu"],
     "device 'cpu' is of kind 'cpu'; HLS reports calibrate fpga-hls devices: pynq-z2, u250"),
    (["hls", "import", "no/such/dir", "--device", "zcu102"], "no/such/dir: no such file"),
    (["hls", "calibrate", "--device", "vu9p"], "unknown device 'vu9p'"),
])
def test_hls_cli_errors_are_one_line_with_exit_code_2(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_damaged_calibration_record_makes_the_device_unavailable_with_the_file_named():
    store = calibration_dir("zcu104")
    store.mkdir(parents=True)
    (store / "csynth-x.json").write_text("{not json")
    with pytest.raises(DeviceError, match=r"zcu104.*csynth-x.json: not a readable calibration"):
        get_device("zcu104")


@pytest.mark.parametrize("clock_mhz", [200, 300])
@pytest.mark.parametrize("template", ["layer_reuse", "dataflow"])
@pytest.mark.parametrize("calibrated", [False, True])
def test_deit_b_never_beats_the_dsp_bound_of_a_zcu102(clock_mhz, template, calibrated):
    """17.6 GMACs at int8 cannot run faster than MACs / (DSPs × 2 MACs per DSP × f)."""
    if calibrated:
        import_reports([CALIBRATION], "zcu102", ZCU102_PART, clock_mhz)
    calibration = fit_calibration("zcu102", load_entries("zcu102"))
    deit_b = preset_config("deit_base").replace(precision="int8")
    target = FpgaTarget(ZCU102_PART, {"LUT": 274080, "FF": 548160, "BRAM_18K": 1824,
                                      "DSP": 2520, "URAM": 0}, clock_mhz, 19.2)
    result = estimate(deit_b, 1, Engine(template, 64, 32, 8), target, calibration)
    bound_ms = estimate_cost(deit_b).macs / (2520 * 2 * clock_mhz * 1e6) * 1e3
    assert estimate_cost(deit_b).gmacs == pytest.approx(17.58, abs=0.01)
    assert result.latency_ms >= bound_ms
    assert result.latency_ms < 20 * bound_ms  # and the engine is not absurdly slow


def test_token_reduction_and_attention_variants_cost_fewer_cycles(zcu102):
    dense = zcu102.estimate(DEIT_S_INT8, 1)
    for knob in ({"merge_r": 16}, {"keep_rate": 0.7}, {"attention": "window"}):
        reduced = zcu102.estimate(DEIT_S_INT8.replace(**knob), 1)
        assert reduced.latency_ms < dense.latency_ms, knob
    assert dense.fits


def test_precision_decides_whether_the_engine_fits_the_part(zcu102):
    fp32 = zcu102.estimate(DEIT_S_INT8.replace(precision="fp32"), 1)
    assert not fp32.fits and fp32.violations["fpga:DSP"] > 1  # ~3 DSPs per float MAC lane
    assert zcu102.estimate(DEIT_S_INT8, 1).violations["fpga:DSP"] < 0


def test_sparsity_speeds_up_only_an_engine_that_skips_zeros(zcu102):
    sparse = DEIT_S_INT8.replace(weight_sparsity="2:4")
    calibration, target = zcu102.calibration, zcu102.target
    dense_engine = Engine("layer_reuse", 64, 32, 8)
    skipping = Engine("layer_reuse", 64, 32, 8, sparsity=("2:4",))
    baseline = estimate(DEIT_S_INT8, 1, dense_engine, target, calibration)
    assert estimate(sparse, 1, dense_engine, target, calibration).latency_ms == baseline.latency_ms
    faster = estimate(sparse, 1, skipping, target, calibration)
    assert faster.busy_ms_by_operator["matmul"] < 0.7 * baseline.busy_ms_by_operator["matmul"]


def test_dataflow_keeps_weights_on_chip(zcu102):
    calibration = zcu102.calibration
    zcu102_dataflow = estimate(DEIT_S_INT8, 1, Engine("dataflow", 64, 32, 8), zcu102.target,
                               calibration)
    assert zcu102_dataflow.violations["fpga:memory"] > 0  # 22 M int8 weights > 32 Mb of BRAM
    u250 = get_device("u250")
    on_u250 = estimate(DEIT_S_INT8, 1, u250.engine, u250.target, calibration)
    assert on_u250.fits
    assert on_u250.throughput_per_s > 1e3 / on_u250.latency_ms  # stages overlap across images


def test_energy_is_estimated_from_the_power_fit_or_unavailable_with_why(zcu102):
    protocol = zcu102.profile.protocol
    result = zcu102.evaluate(DEIT_S_INT8, None, None, protocol).to_json()
    energy, latency = result["energy"], result["latency_ms"]
    assert energy["status"] == "estimated" and energy["source"] == "hls_power_model"
    power_w = result["fpga"]["power_w"]
    assert energy["joules_per_call"] == pytest.approx(power_w * latency["median"] / 1e3)
    assert latency["status"] == "estimated" and latency["ci95"] is None and latency["n"] == 0
    assert latency["source"].startswith("estimated from HLS reports (15 reports")
    uncalibrated = get_device("zcu104").evaluate(DEIT_S_INT8, None, None, protocol).to_json()
    assert uncalibrated["energy"]["status"] == "unavailable"
    assert "no implemented design" in uncalibrated["energy"]["reason"]
    assert uncalibrated["latency_ms"]["source"].startswith("estimated by the uncalibrated")


@pytest.mark.parametrize(("extra", "message"), [
    ("", "engine: required for kind fpga-hls"),
    ("engine: {template: systolic, pe: 4, simd: 4, lanes: 1}\n",
     "engine.template: expected one of layer_reuse, dataflow"),
    ("engine: {template: dataflow, pe: 0, simd: 4, lanes: 1}\n",
     "engine.pe: expected a positive integer, got 0"),
    ("engine: {template: dataflow, pe: 4, simd: 4}\n", "engine.lanes: required"),
])
def test_malformed_fpga_profiles_name_the_file_and_key(extra, message):
    text = ("kind: fpga-hls\nhardware: {part: xc7z020-clg400-1, clock_mhz: 100, "
            "memory_bandwidth_gbs: 4.2, resources: {LUT: 1, FF: 1, BRAM_18K: 1, DSP: 1, "
            "URAM: 0}}\n" + extra)
    with pytest.raises(DeviceError, match=message):
        parse_profile(text, "board.yaml")
    with pytest.raises(DeviceError, match="engine: devices of kind 'cpu' have no engine"):
        parse_profile("kind: cpu\nengine: {template: dataflow}\n", "cpu.yaml")


SMALL_FPGA = """\
schema_version: 1
name: smallfpga
kind: fpga-hls
description: a part with few DSPs, so float candidates do not fit
accelerates:
  precision: [int8]
hardware:
  part: xczu9eg-ffvb1156-2-e
  resources: {LUT: 274080, FF: 548160, BRAM_18K: 1824, DSP: 400, URAM: 0}
  clock_mhz: 300
  memory_bandwidth_gbs: 19.2
engine: {template: layer_reuse, pe: 16, simd: 16, lanes: 8}
"""


def test_search_on_an_fpga_estimates_and_rejects_what_does_not_fit(tiny_space_file, tmp_path,
                                                                     capsys):
    import_reports([CALIBRATION], "smallfpga", ZCU102_PART, 300.0)
    space = tiny_space_file.read_text() + "  precision: [fp32, int8]\n"
    tiny_space_file.write_text(space)
    profile = tmp_path / "smallfpga.yaml"
    profile.write_text(SMALL_FPGA)
    out = tmp_path / "out"
    args = ["search", "--accuracy", "proxy:dss", "--space", str(tiny_space_file), "--device", str(profile), "--trials", "6",
            "--out", str(out), "--quiet"]
    assert main(args) == 0
    study = optuna.load_study(study_name=None, storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(out / "study.journal"))))
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    rejected = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert len(complete) == 6 and rejected
    assert all(t.user_attrs["config"]["precision"] == "int8" for t in complete)
    assert all("fpga:DSP at" in t.user_attrs["rejected"] for t in rejected)
    assert all(set(t.constraints) == {"fpga:DSP", "fpga:LUT", "fpga:FF", "fpga:memory"}
               for t in study.trials)
    assert all(t.user_attrs["latency_ms"]["status"] == "estimated" for t in complete)
    report = (out / "report.html").read_text()
    assert "estimated from HLS reports (15 reports, fit error" in report
    assert "Estimated FPGA resources" in report and "<b>Latency</b>: NOT measured" in report


def test_a_space_that_cannot_fit_the_part_is_refused_before_the_search(tiny_space_file, tmp_path,
                                                                        capsys):
    """fp32 matrix units need more DSPs than the part has: every candidate would be rejected."""
    profile = tmp_path / "smallfpga.yaml"
    profile.write_text(SMALL_FPGA)
    args = ["search", "--accuracy", "proxy:dss", "--space", str(tiny_space_file), "--device",
            str(profile), "--out", str(tmp_path / "out"), "--quiet"]
    assert main([*args, "--set", "precision=fp32"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("harness: error: no configuration of space 'tiny' fits device "
                          "'smallfpga' at batch size 1: the smallest needs fpga:DSP at ")
    assert err.count("\n") == 1 and not (tmp_path / "out").exists()
    assert main([*args, "--set", "precision=int8", "--trials", "1"]) == 0


def test_a_study_refuses_to_resume_under_another_calibration(tiny_space_file, tmp_path, capsys):
    profile = tmp_path / "smallfpga.yaml"
    profile.write_text(SMALL_FPGA)
    args = ["search", "--accuracy", "proxy:dss", "--space", str(tiny_space_file), "--device", str(profile), "--trials", "2",
            "--out", str(tmp_path / "out"), "--quiet", "--set", "precision=int8"]
    assert main(args) == 0  # uncalibrated
    import_reports([CALIBRATION], "smallfpga", ZCU102_PART, 300.0)
    assert main(args) == 2
    assert "already exists with a different latency_model" in capsys.readouterr().err
