"""Cost of a configuration: multiply-accumulates (MACs) and parameters.

ViT papers call MACs "FLOPs" (DeiT, EViT, ToMe, AutoFormer all report fvcore counts), so the
harness counts MACs and the budget unit ``gflop`` means GMACs, following that convention.

Two counters that must agree (tests check they are equal):

* ``estimate_cost`` — closed form, microseconds per candidate, used to decide budgets before a
  model is built; every knob's token counts come from ``CandidateConfig.token_plan``;
* ``count_cost_fvcore`` — fvcore's traced count on the real built model, with an op handle for
  ``aten::scaled_dot_product_attention`` (fvcore skips it) and fvcore's own LayerNorm convention
  (5 operations per element). ``aten::adaptive_avg_pool2d`` counts one MAC per input element.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from math import prod
from typing import Any

import torch

from harness.config import BlockTokens, CandidateConfig
from harness.layers import weight_density, zeroed_blocks

LAYER_NORM_MACS_PER_ELEMENT = 5  # fvcore's norm_flop_counter with affine parameters


@dataclass(frozen=True)
class Cost:
    """MACs per image and parameter count.

    ``effective_macs`` leaves out the MACs of zero weights of a sparse model: what a kernel that
    skips them would do. Whether a device has such kernels is the device's to say; budgets are
    checked on ``macs``.
    """

    macs: int
    params: int
    effective_macs: int

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    @property
    def effective_gmacs(self) -> float:
        return self.effective_macs / 1e9

    @property
    def params_m(self) -> float:
        return self.params / 1e6


def _zero_fraction(config: CandidateConfig, out_features: int, in_features: int) -> float:
    """Share of a block Linear's weights that ``config``'s sparsity zeroes."""
    if config.weight_sparsity == "2:4":
        return 0.5
    if config.weight_sparsity == "block":
        tiles = (out_features // config.sparsity_block) * (in_features // config.sparsity_block)
        return zeroed_blocks(tiles, config.block_sparsity) / tiles
    return 0.0


def _attention_macs(config: CandidateConfig, block: int, tokens: BlockTokens) -> list[tuple[int, int, int]]:
    """(MACs, out, in) of each Linear of the attention of ``block``, for one image."""
    dim, width, n = config.embed_dim, config.heads_at(block) * config.head_dim, tokens.tokens
    if config.attention_at(block) == "pooled":
        pooled_tokens = 1 + (config.img_size // config.patch_size // config.kv_pool) ** 2
        return [(n * dim * width, width, dim), (pooled_tokens * dim * 2 * width, 2 * width, dim),
                (n * width * dim, dim, width)]
    return [(n * dim * 3 * width, 3 * width, dim), (n * width * dim, dim, width)]


def _attention_core_macs(config: CandidateConfig, block: int, tokens: BlockTokens) -> int:
    """MACs of attention outside its Linears (scores, weighted sums, pooling, token matching)."""
    width, n = config.heads_at(block) * config.head_dim, tokens.tokens
    patches, grid = config.num_patches, config.img_size // config.patch_size
    variant = config.attention_at(block)
    if variant == "window":
        # each window's queries attend to the window and the class token; the class token to all
        macs = patches * (1 + config.window_size**2) * 2 * width + n * 2 * width
    elif variant == "pooled":
        pooled_tokens = 1 + (grid // config.kv_pool) ** 2
        macs = config.num_patches * config.embed_dim + n * pooled_tokens * 2 * width
    else:
        macs = 2 * n * n * width
    if config.keep_rate_at(block) < 1:
        macs += n * width  # the class token's attention row, computed apart
    if tokens.merged > 0:
        pruned = tokens.after_pruning
        macs += (pruned + 1) // 2 * (pruned // 2) * config.head_dim  # ToMe's key similarities
    return macs


def estimate_cost(config: CandidateConfig) -> Cost:
    """Closed-form MACs and parameters of ``config``; matches fvcore and the built model exactly."""
    dim = config.embed_dim
    macs = config.num_patches * 3 * config.patch_size**2 * dim
    params = 3 * config.patch_size**2 * dim + dim + dim + (config.num_patches + 1) * dim
    skipped = 0.0
    for block, tokens in enumerate(config.token_plan()):
        width, hidden = config.heads_at(block) * config.head_dim, config.mlp_hidden_at(block)
        out = tokens.tokens_out
        linears = _attention_macs(config, block, tokens)
        linears += [(out * dim * hidden, hidden, dim), (out * hidden * dim, dim, hidden)]
        macs += LAYER_NORM_MACS_PER_ELEMENT * (tokens.tokens + out) * dim
        macs += _attention_core_macs(config, block, tokens) + sum(m for m, _, _ in linears)
        if config.weight_sparsity != "dense":
            skipped += sum(m * _zero_fraction(config, o, i) for m, o, i in linears)
        params += 4 * dim  # two LayerNorms
        params += dim * 3 * width + 3 * width + width * dim + dim
        params += dim * hidden + hidden + hidden * dim + dim
        tokens_after = out
    macs += LAYER_NORM_MACS_PER_ELEMENT * tokens_after * dim + dim * config.num_classes
    params += 2 * dim + dim * config.num_classes + config.num_classes
    return Cost(macs=macs, params=params, effective_macs=macs - round(skipped))


def _sdpa_macs(inputs: list[Any], outputs: list[Any]) -> int:
    """MACs of ``aten::scaled_dot_product_attention``: B·H·Nq·Nk·(d_qk + d_v)."""
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(value) for value in inputs[:3])
    return prod(q[:-1]) * k[-2] * (q[-1] + v[-1])


def count_cost_fvcore(model: torch.nn.Module, config: CandidateConfig) -> Cost:
    """fvcore's count on the built model for one image; effective MACs scale each block Linear's
    count by the density of its actual weights."""
    images = torch.zeros(1, 3, config.img_size, config.img_size)
    with torch.no_grad(), warnings.catch_warnings():
        # fvcore scripts and traces with torch.jit, which torch 2.13 marks deprecated; the count
        # is unaffected.
        warnings.simplefilter("ignore", DeprecationWarning)
        from fvcore.nn import FlopCountAnalysis

        analysis = FlopCountAnalysis(model, images)
        analysis.set_op_handle("aten::scaled_dot_product_attention", _sdpa_macs)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        macs = int(analysis.total())
        per_module = analysis.by_module()
    # Only sparsity masks count: a dense model's rare exact-zero weights are skipped by nothing.
    skipped = sum(
        per_module[f"blocks.{name}"] * (1 - weight_density(layer))
        for name, layer in model.blocks.named_modules()
        if isinstance(layer, torch.nn.Linear) and config.weight_sparsity != "dense"
    )
    params = sum(p.numel() for p in model.parameters())
    return Cost(macs=macs, params=params, effective_macs=macs - round(skipped))
