"""harness export: a trial or a configuration as a directory that loads without the harness."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file
from test_study import _settings

from harness.cli import main
from harness.config import CandidateConfig
from harness.report import write_report
from harness.runtimes import onnx as onnx_runtime
from harness.search.study import run_search

pytestmark = pytest.mark.skipif(bool(onnx_runtime.missing_packages()),
                                reason="harness export writes ONNX: onnxruntime/onnx/onnxscript "
                                "not installed (pip install 'vit-harness[onnx]')")
TINY = {"embed_dim": 32, "depth": 2, "num_heads": 2, "head_dim": 16, "mlp_ratio": 2.0,
        "patch_size": 8, "img_size": 32, "num_classes": 10}
# timm's VisionTransformer state_dict keys for one block (timm 1.0, class token, no fc_norm).
TIMM_KEYS = {"cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias",
             "norm.weight", "norm.bias", "head.weight", "head.bias",
             *(f"blocks.0.{name}" for name in (
                 "norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias",
                 "attn.proj.weight", "attn.proj.bias", "norm2.weight", "norm2.bias",
                 "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"))}
# Loads an export with the harness hidden: plain torch, safetensors and onnxruntime only.
LOADER = """
import sys
sys.modules["harness"] = None  # any import of the harness now fails
try:
    import harness
except ImportError:
    pass
else:
    raise SystemExit("the harness is importable")
import json, torch, onnxruntime as ort
from safetensors.torch import load_file
folder = sys.argv[1]
check = load_file(folder + "/check.safetensors")
model = torch.export.load(folder + "/model.pt2").module()
pt2 = float((model(check["images"]) - check["logits"]).abs().max())
session = ort.InferenceSession(folder + "/model.onnx", providers=["CPUExecutionProvider"])
got = session.run(None, {"images": check["images"].numpy()})[0]
onnx = float((torch.from_numpy(got) - check["logits"]).abs().max())
one = session.run(None, {"images": check["images"][:1].numpy()})[0]  # the batch is dynamic
print(json.dumps({"pt2": pt2, "onnx": onnx, "one": list(one.shape),
                  "keys": sorted(load_file(folder + "/model.safetensors"))}))
"""


def _load_without_harness(folder: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", LOADER, str(folder)], check=False, capture_output=True,
                          text=True, timeout=300, cwd=folder)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_export_of_a_configuration_loads_without_the_harness(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps({**TINY, "depth": 1}))
    out = tmp_path / "export"
    assert main(["export", "--config", str(config), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "check.safetensors", "config.yaml", "model.onnx", "model.pt2",
        "model.safetensors", "model_card.json"]
    card = json.loads((out / "model_card.json").read_text())
    assert card["weights"]["kind"] == "random" and card["measured"] is None
    assert card["onnx"]["parity"]["passed"] and card["onnx"]["dynamic_batch"]
    assert card["config_key"] == CandidateConfig(**{**TINY, "depth": 1}).key()
    assert set(card["files"]) == {p.name for p in out.iterdir()} - {"model_card.json",
                                                                    "README.md"}
    loaded = _load_without_harness(out)
    assert loaded["pt2"] < 1e-5 and loaded["onnx"] < 1e-4 and loaded["one"] == [1, 10]
    assert set(loaded["keys"]) == TIMM_KEYS  # timm's key layout
    assert "timm.models.vision_transformer.VisionTransformer(img_size=32" in (
        out / "README.md").read_text()


def test_an_existing_directory_is_refused_unless_forced(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps({**TINY, "merge_r": 2}))
    out = tmp_path / "export"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code = main(["export", "--config", str(config), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--force" in err
    assert (out / "keep.txt").read_text() == "mine"
    assert main(["export", "--config", str(config), "--out", str(out), "--force"]) == 0
    assert not (out / "keep.txt").exists() and (out / "model.pt2").exists()
    assert "timm cannot build this model: its knobs (merge_r=2)" in (out / "README.md").read_text()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_int8_exports_without_onnx_and_says_why(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps({**TINY, "precision": "int8"}))
    assert main(["export", "--config", str(config), "--out", str(tmp_path / "e")]) == 0
    card = json.loads((tmp_path / "e" / "model_card.json").read_text())
    assert card["onnx"]["file"] is None and "dynamic quantisation" in card["onnx"]["why_not"]
    assert not (tmp_path / "e" / "model.onnx").exists()


def test_export_of_a_search_trial_carries_what_was_measured(tiny_space_file, fast_device_file,
                                                            tmp_path, capsys):
    settings = _settings(tiny_space_file, fast_device_file, tmp_path, n_trials=2)
    study = run_search(settings)
    number = study.trials[-1].number
    out = tmp_path / "export"
    args = ["export", str(settings.out_dir), "--trial", str(number), "--out", str(out)]
    assert main(args) == 0
    card = json.loads((out / "model_card.json").read_text())
    trial = study.trials[number].user_attrs
    assert card["origin"] == {"study": "test", "trial": number}
    assert card["measured"]["latency_ms"] == trial["latency_ms"]
    assert card["measured"]["accuracy"]["estimator"] == trial["accuracy"]["estimator"]
    assert card["measured"]["device"] == "fastcpu"
    assert card["config"] == trial["config"] and card["harness"]["version"]
    assert card["weights"]["kind"] == "random" and "--supernet" in card["weights"]["why"]
    assert _load_without_harness(out)["pt2"] < 1e-5
    capsys.readouterr()
    bad = ["export", str(settings.out_dir), "--trial", "99", "--out", str(tmp_path / "x")]
    assert main(bad) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "trial 99" in err and "measured trials:" in err
    assert main(["export", str(settings.out_dir), "--trial", str(number), "--supernet",
                 "--out", str(tmp_path / "y")]) == 2
    assert "not a supernet" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    # one entry of pareto.json exports with its measured figures (and says it has no weights)
    write_report(study, tmp_path / "report")
    entry = json.loads((tmp_path / "report" / "pareto.json").read_text())[0]
    (tmp_path / "entry.json").write_text(json.dumps(entry))
    assert main(["export", "--config", str(tmp_path / "entry.json"), "--out",
                 str(tmp_path / "z")]) == 0
    card = json.loads((tmp_path / "z" / "model_card.json").read_text())
    assert card["measured"]["latency_ms"] == entry["latency_ms"]
    assert card["origin"]["trial"] == entry["trial"] and "no weights" in card["weights"]["why"]
    (tmp_path / "front.json").write_text(json.dumps([entry]))
    assert main(["export", "--config", str(tmp_path / "front.json"), "--out",
                 str(tmp_path / "w")]) == 2
    assert "export one with 'harness export SEARCH_OUT --trial N'" in capsys.readouterr().err


def test_an_unwritable_destination_is_refused_before_any_work(tmp_path, capsys):
    (tmp_path / "tiny.yaml").write_text(json.dumps(TINY))
    (tmp_path / "a-file").write_text("")
    assert main(["export", "--config", str(tmp_path / "tiny.yaml"), "--out",
                 str(tmp_path / "a-file" / "export")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "export directory" in err


def test_export_needs_one_source(tmp_path, capsys):
    assert main(["export", "--out", str(tmp_path / "e")]) == 2
    assert "either SEARCH_OUT with --trial N, or --config FILE" in capsys.readouterr().err


def test_export_with_the_supernet_weights_a_trial_inherits(tiny_space_file, fast_device_file,
                                                          tmp_path):
    from harness.accuracy import get_estimator

    settings = _settings(tiny_space_file, fast_device_file, tmp_path, n_trials=1,
                         estimator=get_estimator("supernet:digits@4steps"))
    study = run_search(settings)
    out = tmp_path / "export"
    assert main(["export", str(settings.out_dir), "--trial", "0", "--supernet",
                 "--out", str(out)]) == 0
    card = json.loads((out / "model_card.json").read_text())
    weights = card["weights"]
    assert weights["kind"] == "supernet" and weights["steps"] == 4 and weights["dataset"] == "digits"
    assert weights["key"] == study.trials[0].user_attrs["accuracy"]["supernet"]["key"]
    # the network its accuracy was measured on: the supernet's data shape, its architecture
    searched = study.trials[0].user_attrs["config"]
    assert card["config"]["num_classes"] == 10 and card["config"]["depth"] == searched["depth"]
    tensors = load_file(out / "model.safetensors")
    assert tensors["head.weight"].shape[0] == 10
    assert card["onnx"]["parity"]["passed"]


def test_a_checkpoint_exports_with_its_own_weights_and_classes(tmp_path):
    import torch
    from safetensors.torch import save_file

    from harness.models import build_model

    config = CandidateConfig(**{**TINY, "depth": 1, "num_classes": 7})
    trained = build_model(config, seed=5)
    weights = tmp_path / "trained.safetensors"
    save_file({name: t.contiguous() for name, t in trained.state_dict().items()}, weights)
    (tmp_path / "arch.yaml").write_text(json.dumps({**TINY, "depth": 1}))
    out = tmp_path / "export"
    assert main(["export", "--config", str(tmp_path / "arch.yaml"), "--weights", str(weights),
                 "--out", str(out)]) == 0
    card = json.loads((out / "model_card.json").read_text())
    assert card["weights"]["kind"] == "pretrained" and card["config"]["num_classes"] == 7
    assert card["weights"]["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    exported = load_file(out / "model.safetensors")
    assert all(torch.equal(exported[name], tensor)
               for name, tensor in trained.state_dict().items())


def test_a_trial_of_a_remeasured_front_exports_its_remeasured_latency(tiny_space_file,
                                                                      fast_device_file, tmp_path):
    out = tmp_path / "search"
    assert main(["search", "--accuracy", "proxy:dss", "--space", str(tiny_space_file), "--device",
                 str(fast_device_file), "--trials", "3", "--out", str(out), "--quiet"]) == 0
    entry = json.loads((out / "pareto.json").read_text())[0]
    assert main(["export", str(out), "--trial", str(entry["trial"]), "--out",
                 str(tmp_path / "e")]) == 0
    measured = json.loads((tmp_path / "e" / "model_card.json").read_text())["measured"]
    # as pareto.json gives it: re-measured where the front was, with the search's beside it
    assert measured["latency_ms"] == entry["latency_ms"]
    if entry["latency_ms"]["status"] == "remeasured":
        assert measured["search_latency_ms"] == entry["search_latency_ms"]
