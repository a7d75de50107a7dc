"""Pretrained weights (``--weights``): timm's key names, exact loading, one-line refusals."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from safetensors.torch import save_file

from harness.checkpoint import CheckpointError, load_checkpoint
from harness.cli import main
from harness.config import CandidateConfig
from harness.errors import FileError
from harness.models import build_model, preset_config

SMALL = CandidateConfig(embed_dim=32, depth=2, num_heads=2, head_dim=16, mlp_ratio=2.0,
                        img_size=32, patch_size=8, num_classes=7)


def _trained(config: CandidateConfig) -> torch.nn.Module:
    """A model trained for a few steps, so that its weights are no seeded initialisation."""
    model = build_model(config, seed=5).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        images = torch.randn(8, 3, config.img_size, config.img_size, generator=generator)
        labels = torch.randint(0, config.num_classes, (8,), generator=generator)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
    return model.eval()


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)))


@pytest.mark.parametrize("layout", ["plain.pth", "nested.pth", "plain.bin", "weights.safetensors"])
def test_a_checkpoint_loads_exactly_with_its_classes(layout, tmp_path):
    trained = _trained(SMALL)
    path = tmp_path / layout
    state = trained.state_dict()
    if path.suffix == ".safetensors":
        save_file({name: tensor.contiguous() for name, tensor in state.items()}, path)
    else:
        torch.save({"model": state, "epoch": 3} if layout.startswith("nested") else state, path)
    checkpoint = load_checkpoint(path)
    # the architecture comes from the user, the classes from the checkpoint's head
    config = checkpoint.fit(SMALL.replace(num_classes=1000))
    assert config.num_classes == 7 and len(checkpoint.sha256) == 64
    loaded = build_model(config, shared_weights=checkpoint.tensors)
    assert torch.equal(_logits(loaded), _logits(trained))


def test_a_checkpoint_in_timms_layout_fits_our_deit_tiny(tmp_path):
    """The key names and shapes of timm's deit_tiny_patch16_224, written down from timm's
    VisionTransformer (cls token, learned position embedding, fused qkv, pre-norm blocks)."""
    timm_shapes = {"cls_token": (1, 1, 192), "pos_embed": (1, 197, 192),
                   "patch_embed.proj.weight": (192, 3, 16, 16), "patch_embed.proj.bias": (192,),
                   "norm.weight": (192,), "norm.bias": (192,),
                   "head.weight": (1000, 192), "head.bias": (1000,)}
    for block in range(12):
        for name, shape in {"norm1.weight": (192,), "norm1.bias": (192,),
                            "attn.qkv.weight": (576, 192), "attn.qkv.bias": (576,),
                            "attn.proj.weight": (192, 192), "attn.proj.bias": (192,),
                            "norm2.weight": (192,), "norm2.bias": (192,),
                            "mlp.fc1.weight": (768, 192), "mlp.fc1.bias": (768,),
                            "mlp.fc2.weight": (192, 768), "mlp.fc2.bias": (192,)}.items():
            timm_shapes[f"blocks.{block}.{name}"] = shape
    generator = torch.Generator().manual_seed(0)
    released = {name: torch.randn(shape, generator=generator) for name, shape in timm_shapes.items()}
    path = tmp_path / "deit_tiny_patch16_224-a1311bcf.pth"
    torch.save({"model": released}, path)  # DeiT's release nests the weights under "model"
    checkpoint = load_checkpoint(path)
    model = build_model(checkpoint.fit(preset_config("deit_tiny")),
                        shared_weights=checkpoint.tensors)
    assert all(torch.equal(model.state_dict()[name], tensor) for name, tensor in released.items())


def test_knobs_apply_to_the_trained_weights_and_off_they_change_nothing(tmp_path):
    trained = _trained(SMALL)
    path = tmp_path / "small.pth"
    torch.save(trained.state_dict(), path)
    checkpoint = load_checkpoint(path)
    merged = checkpoint.fit(SMALL.replace(merge_r=2, precision="int8"))
    assert (merged.merge_r, merged.precision) == (2, "int8")  # knobs are not architecture
    plain = build_model(checkpoint.fit(SMALL.replace(merge_r=0)), shared_weights=checkpoint.tensors)
    assert torch.equal(_logits(plain), _logits(trained))


def _bad_checkpoints(tmp_path):
    small = _trained(SMALL).state_dict()
    wider = build_model(SMALL.replace(embed_dim=48, head_dim=24)).state_dict()
    torch.save(wider, tmp_path / "wider.pth")
    torch.save({**small, "fc_norm.weight": torch.ones(32)}, tmp_path / "extra.pth")
    torch.save({f"module.{name}": tensor for name, tensor in small.items()},
               tmp_path / "prefixed.pth")
    torch.save({name: t for name, t in small.items() if name != "norm.bias"},
               tmp_path / "missing.pth")
    torch.save({"model": small, "args": argparse.Namespace(lr=1)}, tmp_path / "pickled.pth")
    (tmp_path / "truncated.pth").write_bytes((tmp_path / "wider.pth").read_bytes()[:100])
    (tmp_path / "weights.ckpt").write_bytes(b"")
    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")


@pytest.mark.parametrize("name, message", [
    ("wider.pth", (r"does not fit the architecture \(embed_dim 32, depth 2, patch 8, 32 px\): "
                  r"cls_token is 1×1×48 in the checkpoint, 1×1×32 in the model$")),
    ("extra.pth", (r": 1 tensors are not in this model \(it takes timm's ViT key names, e\.g\. "
                  r"blocks\.0\.attn\.qkv\.weight\): fc_norm\.weight$")),
    ("prefixed.pth", (r": 32 tensors are not in this model .*: module\.cls_token, module\.pos_embed, "
                     r"module\.patch_embed\.proj\.weight, module\.patch_embed\.proj\.bias, "
                     r"module\.blocks\.0\.norm1\.weight and 27 more$")),
    ("missing.pth", r": 1 tensors of this model are missing: norm\.bias$"),
    ("pickled.pth", r": not a state dict of tensors that can be read without running code"),
    ("truncated.pth", r": not a state dict of tensors that can be read without running code"),
    ("weights.ckpt", (r"unknown checkpoint format '\.ckpt'; valid: \.pth, \.pt, \.bin, "
                     r"\.safetensors$")),
    ("broken.safetensors", r": not a readable safetensors file"),
    ("absent.pth", r"checkpoint .*absent\.pth: no such file$"),
])
def test_a_checkpoint_that_does_not_fit_is_one_line(name, message, tmp_path):
    _bad_checkpoints(tmp_path)
    expected = FileError if name == "absent.pth" else CheckpointError
    with pytest.raises(expected, match=message) as raised:
        load_checkpoint(tmp_path / name).fit(SMALL)
    assert "\n" not in str(raised.value)


def test_measure_with_weights_from_the_command_line(tmp_path, capsys):
    path = tmp_path / "small.pth"
    torch.save(_trained(SMALL).state_dict(), path)
    config = tmp_path / "small.json"
    config.write_text(json.dumps(SMALL.replace(num_classes=1000).to_dict()))
    assert main(["measure", "--config", str(config), "--weights", str(path), "--no-latency",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["config"]["num_classes"] == 7
    assert result["weights"]["path"] == str(path) and result["weights"]["num_classes"] == 7
    assert result["weights"]["params_m"] == pytest.approx(result["params_m"], rel=1e-3)
    wider = tmp_path / "wider.pth"
    torch.save(build_model(SMALL.replace(embed_dim=48, head_dim=24)).state_dict(), wider)
    assert main(["measure", "--config", str(config), "--weights", str(wider),
                 "--no-latency"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "cls_token is 1×1×48 in the checkpoint" in error
