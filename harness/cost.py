"""Cost of a configuration: multiply-accumulates (MACs) and parameters.

ViT papers call MACs "FLOPs" (DeiT, EViT, ToMe, AutoFormer all report fvcore counts), so the
harness counts MACs and the budget unit ``gflop`` means GMACs, following that convention.

Two counters that must agree (a test checks within 1%):

* ``estimate_cost`` — closed form, microseconds per candidate, used to decide budgets before a
  model is built;
* ``count_cost_fvcore`` — fvcore's traced count on the real built model, with an op handle for
  ``aten::scaled_dot_product_attention`` (fvcore skips it) and fvcore's own LayerNorm convention
  (5 operations per element).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from math import prod
from typing import Any

import torch

from harness.config import CandidateConfig
from harness.layers import tokens_after_pruning

LAYER_NORM_MACS_PER_ELEMENT = 5  # fvcore's norm_flop_counter with affine parameters


@dataclass(frozen=True)
class Cost:
    """MACs per image and parameter count."""

    macs: int
    params: int

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    @property
    def params_m(self) -> float:
        return self.params / 1e6


def estimate_cost(config: CandidateConfig) -> Cost:
    """Closed-form MACs and parameters of ``config``; matches the built model exactly in params."""
    dim, head_dim = config.embed_dim, config.head_dim
    tokens = config.num_patches + 1
    macs = config.num_patches * 3 * config.patch_size**2 * dim
    params = 3 * config.patch_size**2 * dim + dim + dim + tokens * dim
    for block in range(config.depth):
        width = config.heads_at(block) * head_dim
        hidden = config.mlp_hidden_at(block)
        keep_rate = config.keep_rate_at(block)
        kept = tokens_after_pruning(tokens, keep_rate)
        macs += LAYER_NORM_MACS_PER_ELEMENT * tokens * dim
        macs += tokens * dim * 3 * width + 2 * tokens * tokens * width + tokens * width * dim
        if keep_rate < 1:
            macs += tokens * width  # the class token's attention row, computed apart
        macs += LAYER_NORM_MACS_PER_ELEMENT * kept * dim + 2 * kept * dim * hidden
        tokens = kept
        params += 4 * dim  # two LayerNorms
        params += dim * 3 * width + 3 * width + width * dim + dim
        params += dim * hidden + hidden + hidden * dim + dim
    macs += LAYER_NORM_MACS_PER_ELEMENT * tokens * dim + dim * config.num_classes
    params += 2 * dim + dim * config.num_classes + config.num_classes
    return Cost(macs=macs, params=params)


def _sdpa_macs(inputs: list[Any], outputs: list[Any]) -> int:
    """MACs of ``aten::scaled_dot_product_attention``: B·H·Nq·Nk·(d_qk + d_v)."""
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(value) for value in inputs[:3])
    return prod(q[:-1]) * k[-2] * (q[-1] + v[-1])


def count_cost_fvcore(model: torch.nn.Module, config: CandidateConfig) -> Cost:
    """fvcore's count on the built model for one image."""
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
    params = sum(p.numel() for p in model.parameters())
    return Cost(macs=macs, params=params)
