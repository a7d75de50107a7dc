"""Runtimes: eager, torch.compile and ONNX Runtime run the same model, checked against eager's
logits on every preparation; what a runtime cannot run is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import FAST_CPU
from optuna.trial import TrialState
from test_study import _settings

from harness.bench.knob_bench import KnobSetting, bench_knobs
from harness.cli import main
from harness.config import RUNTIMES, CandidateConfig, check_keys_take_effect
from harness.devices import get_device, parse_profile
from harness.errors import ConfigError, DeviceError
from harness.models import build_model
from harness.report import write_report
from harness.runtimes import (
    RUNTIME_CLASSES,
    ParityError,
    Runtime,
    RuntimeRefused,
    check_runnable,
    deploy,
)
from harness.runtimes import onnx as onnx_runtime
from harness.search.study import run_search

HAS_ONNX = not onnx_runtime.missing_packages()
needs_onnx = pytest.mark.skipif(not HAS_ONNX, reason="onnxruntime/onnx/onnxscript not installed "
                                "(pip install 'vit-harness[onnx]')")
TINY = CandidateConfig(embed_dim=32, depth=2, num_heads=2, head_dim=16, mlp_ratio=2.0,
                       patch_size=8, img_size=32, num_classes=10)
IMAGES = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
# Every structural knob that ships, on the tiny model (16 patch tokens).
KNOBS = {
    "plain": {},
    "evit": {"keep_rate": 0.5, "keep_layers": (1,)},
    "tome": {"merge_r": 4},
    "window": {"attention": "window", "window_size": 2},
    "pooled": {"attention": "pooled", "kv_pool": 2},
    "block-sparse": {"weight_sparsity": "block", "sparsity_block": 16, "block_sparsity": 0.5},
    "2:4": {"weight_sparsity": "2:4"},
    "fp16": {"precision": "fp16"},
}
# The tests' fast CPU profile, running every runtime.
RUNTIME_CPU = FAST_CPU.replace("name: fastcpu", "name: runtimecpu") + (
    "runtimes: [eager, compile, onnxruntime]\n")


@pytest.fixture
def runtime_device_file(tmp_path: Path) -> Path:
    path = tmp_path / "runtimecpu.yaml"
    path.write_text(RUNTIME_CPU)
    return path


def _eager_logits(config: CandidateConfig) -> tuple[torch.nn.Module, torch.Tensor]:
    model = build_model(config, seed=0).eval()
    from harness.precision import convert_precision

    model, images = convert_precision(model, IMAGES, config.precision)
    return model, images


def test_registry_holds_every_runtime_of_the_key():
    assert set(RUNTIME_CLASSES) == set(RUNTIMES)


def test_runtime_key_defaults_to_eager_and_keeps_earlier_keys():
    config = CandidateConfig()
    assert config.runtime == "eager" and config.compile_mode == "default"
    # keys of configurations stored before runtimes existed do not change
    assert config.key() == "614e763f13d3"  # computed before the runtime keys existed
    assert config.replace(runtime="onnxruntime").key() != config.key()
    assert "runtime" in config.to_dict()
    with pytest.raises(ConfigError, match="runtime: expected one of eager, compile, onnxruntime"):
        CandidateConfig(runtime="tensorrt")
    with pytest.raises(ConfigError, match="compile_mode=max-autotune has no effect"):
        check_keys_take_effect(config.replace(compile_mode="max-autotune"), ["compile_mode"])


def test_eager_is_the_model_itself():
    model, images = _eager_logits(TINY)
    deployed, record = deploy(model, images, TINY, "cpu", threads=1)
    assert deployed is model
    assert record.to_json() == {"runtime": "eager", "prepare_s": 0.0, "parity": None, "detail": {}}


@needs_onnx
@pytest.mark.parametrize("knob", sorted(KNOBS))
def test_onnxruntime_runs_every_knob_with_parity(knob):
    config = TINY.replace(runtime="onnxruntime", **KNOBS[knob])
    model, images = _eager_logits(config)
    deployed, record = deploy(model, images, config, "cpu", threads=1)
    parity = record.parity
    assert parity.passed and parity.images == 4
    assert parity.max_abs_diff <= (1e-4 if config.precision == "fp32" else 1e-2)
    assert record.prepare_s > 0 and record.detail["providers"] == ["CPUExecutionProvider"]
    # idle ONNX Runtime threads sleep: spinning ones would slow the probe timed between blocks
    options = deployed.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    with torch.inference_mode():
        assert torch.allclose(deployed(images).float(), model(images).float(), atol=parity.bound)


@pytest.mark.parametrize("knob", ["plain", "tome"])
def test_compile_runs_as_one_graph_with_parity(knob):
    config = TINY.replace(runtime="compile", **KNOBS[knob])
    model, images = _eager_logits(config)
    deployed, record = deploy(model, images, config, "cpu", threads=1)
    assert record.parity.passed and record.detail["fullgraph"] is True
    assert deployed is not model


def test_onnxruntime_refuses_what_onnx_cannot_carry():
    for precision, reason in (("int8", "dynamic quantisation"), ("bf16", "no bf16 kernels")):
        with pytest.raises(RuntimeRefused, match=reason):
            check_runnable(TINY.replace(runtime="onnxruntime", precision=precision), "cpu")


def test_a_runtime_not_installed_is_refused_naming_the_package(monkeypatch, capsys):
    monkeypatch.setattr(onnx_runtime, "missing_packages", lambda: ["onnxruntime"])
    with pytest.raises(RuntimeRefused, match=r"onnxruntime not installed .*vit-harness\[onnx\]"):
        check_runnable(TINY.replace(runtime="onnxruntime"), "cpu")
    code = main(["measure", "--arch", "deit_tiny", "--set", "runtime=onnxruntime"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "pip install 'vit-harness[onnx]'" in err


class _OffByOne(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images) + 1e-3


class _WrongRuntime(Runtime):
    name = "compile"

    def build(self, model, inputs, config, threads):
        return _OffByOne(model), {}


def test_a_runtime_that_computes_other_logits_fails_with_the_figures(monkeypatch,
                                                                     runtime_device_file):
    monkeypatch.setitem(RUNTIME_CLASSES, "compile", _WrongRuntime)
    config = TINY.replace(runtime="compile")
    model, images = _eager_logits(config)
    with pytest.raises(ParityError, match=r"max \|logit - eager\| 0.001 \(bound 0.0001\)"):
        deploy(model, images, config, "cpu", threads=1)
    device = get_device(str(runtime_device_file))
    with pytest.raises(ParityError):
        device.evaluate(config, build_model(config), IMAGES, device.profile.protocol)


def test_profiles_list_their_runtimes():
    assert get_device("cpu").profile.runtimes == ("eager", "compile", "onnxruntime")
    assert get_device("zcu102").profile.runtimes == ("eager",)
    with pytest.raises(DeviceError, match="zcu102' does not run runtime compile"):
        get_device("zcu102").check_runtime(TINY.replace(runtime="compile"))
    base = "name: x\nkind: cpu\nruntimes: "
    with pytest.raises(DeviceError, match="unknown runtime 'tvm'; valid: eager, compile"):
        parse_profile(base + "[eager, tvm]", "x.yaml")
    with pytest.raises(DeviceError, match="includes eager"):
        parse_profile(base + "[onnxruntime]", "x.yaml")


@needs_onnx
def test_measure_records_the_runtime_and_refuses_a_combination(runtime_device_file, tmp_path,
                                                               capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps({key: value for key, value in TINY.to_dict().items()
                                  if key in ("embed_dim", "depth", "num_heads", "head_dim",
                                             "mlp_ratio", "patch_size", "img_size",
                                             "num_classes")}))
    args = ["measure", "--config", str(config), "--device", str(runtime_device_file),
            "--no-energy", "--json"]
    assert main([*args, "--set", "runtime=onnxruntime"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["runtime"]["runtime"] == "onnxruntime"
    assert result["runtime"]["parity"]["passed"] and result["runtime"]["prepare_s"] > 0
    assert result["phase_s"]["runtime_prepare"] == pytest.approx(result["runtime"]["prepare_s"],
                                                                abs=1e-3)
    assert result["latency_ms"]["n"] >= 10
    code = main([*args, "--set", "runtime=onnxruntime", "--set", "precision=int8"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "no ONNX export" in err


def test_search_refuses_a_runtime_its_device_does_not_list(tiny_space_file, fast_device_file,
                                                           capsys):
    code = main(["search", "--space", str(tiny_space_file), "--device", str(fast_device_file),
                 "--set", "runtime=compile", "--trials", "1", "--accuracy", "proxy:params"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "does not run runtime compile (its profile lists: eager)" in err


@needs_onnx
def test_search_chooses_a_runtime_and_fails_what_it_cannot_run(tmp_path, runtime_device_file):
    space_file = tmp_path / "space.yaml"
    space_file.write_text("""\
schema_version: 1
name: runtimes
params:
  embed_dim: 32
  depth: 2
  num_heads: 2
  head_dim: 16
  mlp_ratio: 2.0
  patch_size: 8
  img_size: 32
  num_classes: 10
  runtime: [eager, onnxruntime]
  precision: [fp32, int8]
""")
    settings = _settings(space_file, runtime_device_file, tmp_path, n_trials=8)
    study = run_search(settings)
    measured = [t for t in study.trials if t.state == TrialState.COMPLETE]
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    by_runtime = {t.user_attrs["config"]["runtime"] for t in measured}
    assert by_runtime == {"eager", "onnxruntime"}
    for trial in measured:
        runtime = trial.user_attrs["runtime"]
        assert runtime["runtime"] == trial.user_attrs["config"]["runtime"]
        assert (runtime["parity"] is None) == (runtime["runtime"] == "eager")
    for trial in failed:
        config = trial.user_attrs["config"]
        assert (config["runtime"], config["precision"]) == ("onnxruntime", "int8")
        assert "no ONNX export" in trial.user_attrs["error"]
    write_report(study, tmp_path / "report")
    pareto = json.loads((tmp_path / "report" / "pareto.json").read_text())
    assert pareto and all("runtime" in entry for entry in pareto)
    html = (tmp_path / "report" / "report.html").read_text()
    assert "<th>runtime</th>" in html


@needs_onnx
def test_a_fixed_runtime_drops_the_precisions_it_cannot_run(tmp_path, runtime_device_file,
                                                            capsys, monkeypatch):
    monkeypatch.setenv("HARNESS_CPU_FLAGS", "avx2")  # int8 accelerated on any host: kept until then
    space_file = tmp_path / "space.yaml"
    space_file.write_text("schema_version: 1\nname: prec\nparams:\n" + "".join(
        f"  {key}: {value}\n" for key, value in TINY.to_dict().items()
        if key in ("embed_dim", "depth", "num_heads", "head_dim", "mlp_ratio", "patch_size",
                   "img_size", "num_classes")) + "  precision: [fp32, int8]\n")
    args = ["search", "--space", str(space_file), "--device", str(runtime_device_file),
            "--accuracy", "proxy:params", "--set", "runtime=onnxruntime", "--trials", "2",
            "--no-remeasure", "--quiet", "--out", str(tmp_path / "out")]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert ("precision int8 dropped from the space: runtime onnxruntime cannot run it "
            "(int8 is torch's dynamic quantisation") in err
    trials = json.loads((tmp_path / "out" / "trials.json").read_text())["trials"]
    assert {t["state"] for t in trials} == {"COMPLETE"}
    assert {t["config"]["precision"] for t in trials} == {"fp32"}
    assert main([*args[:-2], "--out", str(tmp_path / "other"), "--set", "precision=int8"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "runtime onnxruntime cannot run precision int8" in err


@needs_onnx
def test_knob_bench_times_a_runtime_against_eager(runtime_device_file):
    device = get_device(str(runtime_device_file))
    result = bench_knobs(device, {"tiny": TINY}, [1],
                         [KnobSetting("runtime=onnxruntime", {"runtime": "onnxruntime"})],
                         rounds=2, iters=3)
    (row,) = result.rows
    assert row.knob == "runtime=onnxruntime" and len(row.round_speedups) == 2
    assert "runtime: onnxruntime, logits checked against eager" in row.how
    assert row.gmacs == row.dense_gmacs  # the same model, run another way


def test_a_failed_preparation_is_one_line_without_terminal_colours(monkeypatch):
    class _Broken(Runtime):
        name = "compile"

        def build(self, model, inputs, config, threads):
            raise RuntimeError("\x1b[96mstep 2/3\x1b[0m of exporting failed\nmore detail")

    monkeypatch.setitem(RUNTIME_CLASSES, "compile", _Broken)
    config = TINY.replace(runtime="compile")
    model, images = _eager_logits(config)
    with pytest.raises(DeviceError) as raised:
        deploy(model, images, config, "cpu", threads=1)
    assert str(raised.value) == ("runtime compile could not prepare the model: RuntimeError: "
                                 "step 2/3 of exporting failed")


def test_compile_refuses_cuda_graph_mode_on_a_cpu():
    with pytest.raises(RuntimeRefused, match="reduce-overhead records CUDA graphs"):
        check_runnable(TINY.replace(runtime="compile", compile_mode="reduce-overhead"), "cpu")
