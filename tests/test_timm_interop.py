"""Our ViT against timm's with the same weights: identical logits (needs timm, which is kept out of
the test install because its torchvision dependency pulls a second, CUDA build of torch).

    pip install timm && python -m pytest tests/test_timm_interop.py
"""

from __future__ import annotations

import pytest
import torch

from harness.checkpoint import Checkpoint
from harness.models import build_model, preset_config

timm = pytest.importorskip(
    "timm", reason="timm is not installed (not in the test extras: its torchvision dependency "
                   "pulls a multi-GB CUDA build of torch); test_checkpoint.py checks timm's layout")


@pytest.mark.parametrize("timm_name, ours", [("deit_tiny_patch16_224", "deit_tiny"),
                                              ("vit_small_patch16_224", "deit_small")])
def test_timm_weights_load_into_ours_with_identical_logits(timm_name, ours, tmp_path):
    reference = timm.create_model(timm_name, pretrained=False).eval()
    state = reference.state_dict()
    checkpoint = Checkpoint(tmp_path / f"{timm_name}.pth", "", dict(state))
    model = build_model(checkpoint.fit(preset_config(ours)), shared_weights=checkpoint.tensors)
    model.load_state_dict(state, strict=True)  # every tensor, by timm's names
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(model(images), reference(images), atol=1e-5, rtol=0)
