from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from harness.config import CandidateConfig
from harness.cost import estimate_cost
from harness.cost_fvcore import count_cost_fvcore
from harness.layers import prune_tokens
from harness.models import PRESETS, build_model, preset_config
from harness.space import load_space
from harness.tokens import tokens_after_pruning

# DeiT (Touvron et al. 2021) at 224 px, patch 16, 1000 classes: (GMACs, M params).
PUBLISHED = {"deit_tiny": (1.26, 5.72), "deit_small": (4.61, 22.05), "deit_base": (17.58, 86.57)}
# EViT on DeiT-S, keep rate at blocks 4, 7, 10 (Liang et al. 2022, Table 1).
EVIT_DEIT_S = {0.9: 4.0, 0.8: 3.5, 0.7: 3.0, 0.6: 2.6, 0.5: 2.3}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_presets_match_published_counts(name):
    gmacs, params_m = PUBLISHED[name]
    config = preset_config(name)
    analytic = estimate_cost(config)
    traced = count_cost_fvcore(build_model(config), config)
    for cost in (analytic, traced):
        assert cost.gmacs == pytest.approx(gmacs, rel=0.01)
        assert cost.params_m == pytest.approx(params_m, rel=0.01)


@pytest.mark.parametrize("keep_rate", sorted(EVIT_DEIT_S))
def test_evit_token_pruning_matches_published_counts(keep_rate):
    config = preset_config("deit_small").replace(keep_rate=keep_rate)
    assert config.keep_layers == (4, 7, 10)
    assert estimate_cost(config).gmacs == pytest.approx(EVIT_DEIT_S[keep_rate], abs=0.05)


@pytest.mark.parametrize("space_name", ["vit_tiny", "vit_small"])
def test_analytic_count_agrees_with_fvcore_over_space_samples(space_name):
    for config in load_space(space_name).sample(5, seed=1):
        analytic = estimate_cost(config)
        traced = count_cost_fvcore(build_model(config), config)
        assert analytic == traced, config


def test_fvcore_without_sdpa_handle_would_undercount():
    # Guard for the reason the handle exists: fvcore alone skips the fused attention.
    from fvcore.nn import FlopCountAnalysis

    config = preset_config("deit_small")
    analysis = FlopCountAnalysis(build_model(config), torch.zeros(1, 3, 224, 224))
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    assert analysis.total() / 1e9 == pytest.approx(4.25, abs=0.02)


def test_pruning_really_reduces_tokens_seen_by_later_blocks():
    config = preset_config("deit_small").replace(keep_rate=0.7)
    model = build_model(config)
    seen = []
    for block in model.blocks:
        block.mlp.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape[1]))
    with torch.no_grad():
        out = model(torch.randn(2, 3, 224, 224))
    assert out.shape == (2, 1000)
    expected, tokens = [], 197
    for block in range(12):
        tokens = tokens_after_pruning(tokens, config.keep_rate_at(block))
        expected.append(tokens)
    assert seen == expected
    assert seen[0] == 197 and seen[3] == 1 + 138 + 1 and seen[-1] < 100


def test_no_pruning_module_when_off_and_sdpa_is_used(monkeypatch):
    model = build_model(preset_config("deit_tiny"))
    assert all(block.token_pruning is None for block in model.blocks)
    calls = []
    original = F.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting)
    pruned = build_model(preset_config("deit_tiny").replace(keep_rate=0.7))
    with torch.no_grad():
        model(torch.randn(1, 3, 224, 224))
        pruned(torch.randn(1, 3, 224, 224))
    assert len(calls) == 24  # the fused kernel stays in use in pruning blocks too


def test_prune_tokens_keeps_class_token_and_most_attended_and_fuses_the_rest():
    x = torch.arange(6, dtype=torch.float32).reshape(1, 6, 1).repeat(1, 1, 2)  # cls + 5 tokens
    attention = torch.tensor([[0.1, 0.4, 0.05, 0.3, 0.15]])
    out, size, keys = prune_tokens(x, attention, keep_rate=0.4)  # ceil(0.4 * 5) = 2 kept
    assert size is None and keys is None
    assert out.shape == (1, 4, 2)
    assert out[0, 0, 0] == 0  # class token
    assert out[0, 1:3, 0].tolist() == [2.0, 4.0]  # tokens with attention 0.4 and 0.3
    fused = 0.1 * 1 + 0.05 * 3 + 0.15 * 5  # attention-weighted sum of dropped tokens
    assert out[0, 3, 0].item() == pytest.approx(fused)
    assert prune_tokens(x, attention, keep_rate=1.0)[0] is x
    dropped, _, _ = prune_tokens(x, attention, keep_rate=0.4, fuse=False)
    assert torch.equal(dropped, out[:, :3])


def test_build_is_deterministic_and_per_layer_heads_build():
    config = CandidateConfig(depth=2, num_heads=[3, 4], mlp_ratio=[3.5, 4.0])
    a, b = build_model(config), build_model(config)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert a.blocks[1].attn.qkv.out_features == 3 * 4 * 64
    assert sum(p.numel() for p in a.parameters()) == estimate_cost(config).params
    assert set(PRESETS) == {"deit_tiny", "deit_small", "deit_base"}


def test_candidates_inherit_slices_of_the_largest_model_of_the_space():
    space = load_space("vit_tiny")
    largest = space.largest_config()
    assert (largest.embed_dim, largest.depth, largest.num_heads, largest.mlp_ratio) == (240, 14, 4, 4.0)
    shared = build_model(largest).state_dict()
    config = CandidateConfig(embed_dim=192, depth=12, num_heads=[3, 4] * 6, mlp_ratio=3.5)
    model = build_model(config, shared_weights=shared)
    # 3 heads of 64: its queries, keys and values are the leading 192 rows of each of the
    # largest model's three parts (4 heads, 256 rows each)
    qkv = model.blocks[0].attn.qkv.weight
    parts = shared["blocks.0.attn.qkv.weight"].unflatten(0, (3, 256))
    assert torch.equal(qkv, parts[:, :192, :192].flatten(0, 1))
    assert torch.equal(model.blocks[0].attn.qkv.bias,
                       shared["blocks.0.attn.qkv.bias"].unflatten(0, (3, 256))[:, :192].flatten())
    fc1 = model.blocks[11].mlp.fc1.weight
    assert torch.equal(fc1, shared["blocks.11.mlp.fc1.weight"][:672, :192])
    assert torch.equal(model.pos_embed, shared["pos_embed"][:, :, :192])


def test_pooled_attention_takes_the_query_and_key_value_parts_of_the_fused_projection():
    shared = build_model(CandidateConfig(embed_dim=192, depth=1, num_heads=4)).state_dict()
    model = build_model(CandidateConfig(embed_dim=192, depth=1, num_heads=3, attention="pooled",
                                        kv_pool=2), shared_weights=shared)
    parts = shared["blocks.0.attn.qkv.weight"].unflatten(0, (3, 256))
    assert torch.equal(model.blocks[0].attn.q.weight, parts[0, :192])
    assert torch.equal(model.blocks[0].attn.kv.weight, parts[1:, :192].flatten(0, 1))
    assert torch.equal(model.blocks[0].attn.proj.weight,
                       shared["blocks.0.attn.proj.weight"][:, :192])
