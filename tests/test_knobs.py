"""Efficiency knobs: published counts, exact knob-off equivalence, the semantics of each layer,
validation, and what the device says it accelerates."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from harness.cli import main
from harness.config import CandidateConfig
from harness.cost import estimate_cost
from harness.cost_fvcore import count_cost_fvcore
from harness.devices import cpu as cpu_module
from harness.devices import get_device
from harness.errors import ConfigError
from harness.layers import (
    Attention,
    PooledAttention,
    WindowAttention,
    inference_context,
    merge_tokens,
)
from harness.models import build_model, preset_config
from harness.search.preflight import restrict_to_device
from harness.space import parse_space

# ToMe (Bolya et al. 2023, Table 10 / Fig. 4): GMACs for a constant r per block.
TOME_DEIT_S = {8: 3.4, 13: 2.7, 16: 2.3}
TOME_DEIT_T = {8: 0.9, 12: 0.8, 16: 0.6}
# 16 patch tokens (4x4 grid of 8 px patches) + the class token.
SMALL = CandidateConfig(embed_dim=32, depth=4, num_heads=2, head_dim=16, patch_size=8, img_size=32,
                        num_classes=10)
IMAGES = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(("arch", "r", "gmacs"), [("deit_small", r, g) for r, g in TOME_DEIT_S.items()]
                         + [("deit_tiny", r, g) for r, g in TOME_DEIT_T.items()])
def test_tome_matches_published_counts_in_both_counters(arch, r, gmacs):
    config = preset_config(arch).replace(merge_r=r)
    analytic = estimate_cost(config)
    assert analytic.gmacs == pytest.approx(gmacs, abs=0.05)
    if r == 16:  # tracing a DeiT takes seconds; the counters' agreement is tested on all knobs
        assert count_cost_fvcore(build_model(config), config) == analytic


def test_measure_json_reports_published_tome_count():
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "harness", "measure", "--arch", "deit_small", "--set", "merge_r=8",
         "--no-latency", "--json"], capture_output=True, text=True, check=True,
    ).stdout
    result = json.loads(out)
    assert result["gmacs"] == pytest.approx(3.4, abs=0.05) and result["gmacs_fvcore"] == result["gmacs"]
    assert result["tokens_per_block"][0] == 197 - 8
    assert [k["knob"] for k in result["knobs"]] == ["token_merging", "precision"]


KNOB_SETTINGS = [
    {"keep_rate": 0.5, "keep_layers": [2, 3]},
    {"keep_rate": [1.0, 0.7, 1.0, 0.5], "fuse_tokens": False},
    {"merge_r": 3},
    {"merge_r": [4, 0, 2, 1]},
    {"merge_r": 4, "merge_schedule": "decreasing"},
    {"merge_r": 2, "keep_rate": 0.7, "keep_layers": [2]},
    {"attention": "window", "window_size": 2},
    {"attention": "pooled", "kv_pool": 2},
    {"attention": ["window", "pooled", "global", "global"], "merge_r": [0, 0, 2, 2], "window_size": 2},
    {"attention": "window", "window_size": 2, "keep_rate": 0.5, "keep_layers": [3]},
    {"weight_sparsity": "2:4"},
    {"weight_sparsity": "block", "sparsity_block": 8, "block_sparsity": 0.75},
]


@pytest.mark.parametrize("knobs", KNOB_SETTINGS, ids=lambda k: ",".join(k))
def test_every_knob_counts_the_same_in_both_counters_and_runs(knobs):
    config = SMALL.replace(**knobs)
    model = build_model(config)
    analytic, traced = estimate_cost(config), count_cost_fvcore(model, config)
    assert (analytic.macs, analytic.params) == (traced.macs, traced.params)
    assert analytic.effective_macs == pytest.approx(traced.effective_macs, rel=1e-4)
    seen = []
    for block in model.blocks:
        block.mlp.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape[1]))
    with torch.no_grad():
        assert model(IMAGES).shape == (2, 10)
    assert seen == [counts.tokens_out for counts in config.token_plan()]


def test_every_knob_off_is_the_dense_model_exactly():
    off = SMALL.replace(keep_rate=1.0, merge_r=0, attention="global", weight_sparsity="dense",
                        precision="fp32")
    assert off == SMALL
    # A pruning module whose rate keeps every token is present and still changes nothing.
    idle = SMALL.replace(keep_rate=0.999, keep_layers=[1, 2])
    dense_model, idle_model = build_model(SMALL), build_model(idle)
    assert idle_model.blocks[0].token_pruning is not None
    with torch.no_grad():
        assert torch.equal(dense_model(IMAGES), idle_model(IMAGES))
    assert all(b.token_pruning is None and b.token_merging is None for b in dense_model.blocks)


def test_dense_attention_is_textbook_multi_head_attention():
    attention = Attention(dim=32, num_heads=2, head_dim=16).eval()
    x = torch.randn(2, 17, 32)
    q, k, v = attention.qkv(x).reshape(2, 17, 3, 2, 16).permute(2, 0, 3, 1, 4)
    weights = (q @ k.transpose(-2, -1) / 4).softmax(-1)
    expected = attention.proj((weights @ v).transpose(1, 2).reshape(2, 17, 32))
    with torch.no_grad():
        out, _, _ = attention(x)
    torch.testing.assert_close(out, expected)


def test_proportional_attention_counts_a_merged_token_as_its_copies():
    attention = Attention(dim=32, num_heads=2, head_dim=16).eval()
    x = torch.randn(1, 5, 32)
    duplicated = torch.cat([x, x[:, 3:4]], dim=1)  # token 3 twice
    size = torch.tensor([[1.0, 1.0, 1.0, 2.0, 1.0]]).unsqueeze(-1)
    with torch.no_grad():
        with_size, _, _ = attention(x, size=size)
        with_copy, _, _ = attention(duplicated)
    torch.testing.assert_close(with_size, with_copy[:, :5])


def test_merge_tokens_merges_the_most_similar_pairs_weighted_by_size():
    # cls, then A/B alternate: tokens 1 and 2 share a key, 3 and 4 are orthogonal to the rest.
    keys = torch.tensor([[[1.0, 0, 0], [0, 1, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]]])
    x = torch.arange(5, dtype=torch.float32).reshape(1, 5, 1)
    size = torch.tensor([[[1.0], [1.0], [3.0], [1.0], [1.0]]])
    merged, new_size = merge_tokens(x, keys, r=1, size=size)
    assert merged.shape == (1, 4, 1) and merged[0, 0, 0] == 0  # class token first, never merged
    assert new_size.sum() == size.sum()
    index = (new_size[0, :, 0] == 4).nonzero().item()  # token 1 (size 1) into token 2 (size 3)
    assert merged[0, index, 0].item() == pytest.approx((1 * 1 + 2 * 3) / 4)
    capped, _ = merge_tokens(x, keys, r=50)  # capped at half the mergeable tokens
    assert capped.shape[1] == 5 - 2


def test_window_attention_equals_masked_global_attention():
    window = WindowAttention(dim=32, num_heads=2, head_dim=16, grid=4, window=2).eval()
    x = torch.randn(2, 17, 32)
    q, k, v = window.qkv(x).reshape(2, 17, 3, 2, 16).permute(2, 0, 3, 1, 4)
    rows, cols = torch.arange(16) // 4, torch.arange(16) % 4
    cell = (rows // 2) * 2 + cols // 2
    allowed = torch.ones(17, 17, dtype=torch.bool)
    allowed[1:, 1:] = cell[:, None] == cell[None, :]  # patches: own window and the class token
    expected = window.proj(
        F.scaled_dot_product_attention(q, k, v, attn_mask=allowed).transpose(1, 2).reshape(2, 17, 32)
    )
    with torch.no_grad():
        out, _, _ = window(x)
    torch.testing.assert_close(out, expected)


def test_window_covering_the_grid_and_pool_of_one_equal_global_attention():
    x = torch.randn(2, 17, 32)
    attention = Attention(dim=32, num_heads=2, head_dim=16).eval()
    whole = WindowAttention(dim=32, num_heads=2, head_dim=16, grid=4, window=4).eval()
    whole.load_state_dict(attention.state_dict())
    pooled = PooledAttention(dim=32, num_heads=2, head_dim=16, grid=4, pool=1).eval()
    with torch.no_grad():
        pooled.q.weight.copy_(attention.qkv.weight[:32])
        pooled.q.bias.copy_(attention.qkv.bias[:32])
        pooled.kv.weight.copy_(attention.qkv.weight[32:])
        pooled.kv.bias.copy_(attention.qkv.bias[32:])
        pooled.proj.load_state_dict(attention.proj.state_dict())
        expected = attention(x)[0]
        torch.testing.assert_close(whole(x)[0], expected)
        torch.testing.assert_close(pooled(x)[0], expected)


def test_model_wide_grid_attention_stops_where_tokens_are_reduced():
    config = SMALL.replace(attention="window", window_size=2, keep_rate=0.5, keep_layers=[3])
    assert [config.attention_at(b) for b in range(4)] == ["window", "window", "global", "global"]
    model = build_model(config)
    assert isinstance(model.blocks[1].attn, WindowAttention)
    assert type(model.blocks[2].attn) is Attention


def test_sparsity_masks_have_their_pattern_and_change_the_output():
    model = build_model(SMALL.replace(weight_sparsity="2:4"))
    fc1 = model.blocks[0].mlp.fc1.weight
    assert torch.all((fc1.reshape(fc1.shape[0], -1, 4) != 0).sum(-1) == 2)
    dense = build_model(SMALL)
    dense_fc1 = dense.blocks[0].mlp.fc1.weight.reshape(fc1.shape[0], -1, 4).abs()
    kept = dense_fc1.gather(-1, dense_fc1.topk(2, dim=-1).indices)  # the 2 largest of each 4
    assert torch.equal(kept.sum(-1), fc1.reshape(fc1.shape[0], -1, 4).abs().sum(-1))
    blocky = build_model(SMALL.replace(weight_sparsity="block", sparsity_block=8, block_sparsity=0.75))
    tiles = blocky.blocks[0].mlp.fc2.weight.reshape(4, 8, 16, 8).abs().sum(dim=(1, 3))
    assert (tiles == 0).sum().item() == 48  # 75% of 4 x 16 tiles
    with torch.no_grad():
        assert not torch.allclose(model(IMAGES), dense(IMAGES))
    assert estimate_cost(SMALL.replace(weight_sparsity="2:4")).effective_macs < estimate_cost(SMALL).macs


def test_int8_and_bf16_run_close_to_fp32_on_the_cpu():
    device = get_device("cpu")
    model = build_model(SMALL)
    with torch.no_grad():
        reference = model(IMAGES)
        for precision, tolerance in (("int8", 0.1), ("bf16", 0.05)):
            prepared, inputs = device.prepare(build_model(SMALL), IMAGES, SMALL.replace(precision=precision))
            out = prepared(inputs).float()
            assert (out - reference).norm() / reference.norm() < tolerance, precision
    quantized, _ = device.prepare(build_model(SMALL), IMAGES, SMALL.replace(precision="int8"))
    assert isinstance(quantized.blocks[0].mlp.fc1, torch.ao.nn.quantized.dynamic.Linear)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"keep_rate": 1.5}, r"keep_rate: expected a number in \(0, 1\]"),
        ({"merge_r": 9}, r"merge_r: at most half the 16 patch tokens \(8\) can merge in a block, got 9"),
        ({"merge_r": [1, 2]}, r"merge_r: a per-layer list needs one value per block \(4\), got 2"),
        ({"attention": "window", "window_size": 3}, r"window_size: must divide the 4x4 patch grid \(valid: 1, 2, 4\), got 3"),
        ({"attention": "window", "window_size": 8}, r"window_size: must divide the 4x4 patch grid"),
        ({"attention": ["global", "global", "window", "global"], "merge_r": [0, 2, 0, 0], "window_size": 2},
         r"attention: 'window' at block 3 needs the full patch grid, but block 2 reduces tokens"),
        ({"attention": "hilo"}, r"attention: expected one of global, window, pooled, got 'hilo'"),
        ({"weight_sparsity": "2:4", "embed_dim": 30}, r"2:4 needs every Linear input width to be a multiple of 4"),
        ({"weight_sparsity": "block", "sparsity_block": 12}, r"sparsity_block: must divide every Linear width"),
        ({"precision": "int4"}, r"precision: expected one of fp32, int8, bf16, fp16, got 'int4'"),
    ],
)
def test_invalid_knob_values_name_the_key_and_the_valid_values(values, message):
    with pytest.raises(ConfigError, match=message):
        SMALL.replace(**values)


def test_invalid_knob_on_the_command_line_is_one_line_and_exit_2(capsys):
    assert main(["measure", "--arch", "deit_small", "--set", "merge_r=99", "--no-latency"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    expected = ("harness: error: --set merge_r: at most half the 196 patch tokens (98) can merge in "
                "a block, got 99")
    assert err == [expected]


def test_cpu_says_which_kernel_knobs_it_accelerates(monkeypatch):
    device = get_device("cpu")
    config = SMALL.replace(weight_sparsity="2:4", precision="bf16", merge_r=2)
    monkeypatch.setattr(cpu_module, "cpu_flags", lambda: frozenset({"avx2"}))
    support = {k.knob: k for k in device.knob_support(config)}
    assert support["token_merging"].accelerated
    assert not support["weight_sparsity"].accelerated
    assert "masks applied" in support["weight_sparsity"].how
    assert not support["precision"].accelerated and "avx512_bf16" in support["precision"].how
    assert device.accelerates("precision", "int8") == (True, "int8 with avx2")
    monkeypatch.setattr(cpu_module, "cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    assert device.accelerates("precision", "bf16")[0]


KNOB_SPACE = """\
schema_version: 1
name: knobs
params:
  embed_dim: 32
  depth: 4
  num_heads: 2
  head_dim: 16
  patch_size: 8
  img_size: 32
  num_classes: 10
  merge_r: {choices: [0, 2], per_layer: true}
  attention: {choices: [global, window], per_layer: true}
  window_size: 2
  weight_sparsity: [dense, "2:4"]
  precision: [fp32, int8, fp16]
"""


def test_search_space_drops_what_the_device_does_not_accelerate(monkeypatch):
    monkeypatch.setattr(cpu_module, "cpu_flags", lambda: frozenset({"avx2"}))
    space = parse_space(KNOB_SPACE, "knobs.yaml")
    device = get_device("cpu")
    restricted, notes = restrict_to_device(space, device)
    assert restricted.dimensions["precision"].choices == ("fp32", "int8")
    assert restricted.dimensions["weight_sparsity"].choices == ("dense",)
    assert any("fp16 is not accelerated" in n and "dropped" in n for n in notes)
    kept, notes = restrict_to_device(space, device, keep_unaccelerated=True)
    assert kept.dimensions["precision"].choices == ("fp32", "int8", "fp16")
    assert all("kept as asked" in n for n in notes)
    pinned, notes = restrict_to_device(space.with_fixed({"precision": "fp16"}), device)
    assert pinned.dimensions["precision"].choices == ("fp16",) and "kept as asked" in notes[-1]


def test_per_layer_attention_is_sampled_only_where_the_grid_is_whole():
    space = parse_space(KNOB_SPACE, "knobs.yaml")
    configs = space.sample(40, seed=3)
    assert any("window" in c.attention for c in configs)
    for config in configs:
        grid_blocks = config.grid_blocks()
        assert all(v == "global" for v in config.attention[grid_blocks:])
    costs = [estimate_cost(c).macs for c in configs]
    assert min(estimate_cost(c).macs for c in space.corner_configs()) <= min(costs)


SPARSE_CPU = """\
schema_version: 1
name: sparsecpu
kind: cpu
measurement: {batch_size: 1, threads: 1, warmup_min_s: 0.001, warmup_min_iters: 2, min_samples: 10,
              max_samples: 20, target_ci_rel: 0.05, time_cap_s: 0.05}
accelerates:
  weight_sparsity: [block, "2:4"]
"""


def test_a_device_that_accelerates_sparsity_runs_sparse_kernels(tmp_path, capsys):
    from harness.errors import DeviceError

    profile = tmp_path / "sparsecpu.yaml"
    profile.write_text(SPARSE_CPU)
    device = get_device(str(profile))
    config = SMALL.replace(weight_sparsity="block", sparsity_block=8, block_sparsity=0.75)
    model, inputs = device.prepare(build_model(config), IMAGES, config)
    assert model.blocks[0].mlp.fc1.weight.layout == torch.sparse_bsr
    with inference_context(model):  # no_grad: BSR matmul fails under inference_mode
        torch.testing.assert_close(model(inputs), build_model(config)(IMAGES), atol=1e-5, rtol=1e-4)
    timed = device.measure_latency(model, inputs, device.profile.protocol)
    assert timed.summary.n >= 10
    (support,) = [k for k in device.knob_support(config) if k.knob == "weight_sparsity"]
    assert support.accelerated and "BSR" in support.how

    two_four = SMALL.replace(weight_sparsity="2:4")
    with pytest.raises(DeviceError, match="semi-structured kernels, which need precision fp16 or bf16; got fp32"):
        device.prepare(build_model(two_four), IMAGES, two_four)
    if not torch.cuda.is_available():  # the kernels are CUDA-only: said in one line, not a traceback
        assert main(["measure", "--accuracy", "proxy:dss", "--device", str(profile), "--set", "weight_sparsity=2:4",
                     "--set", "precision=fp16"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "weight_sparsity 2:4 on sparsecpu: torch" in err[0]
