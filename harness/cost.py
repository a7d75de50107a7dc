"""Cost of a configuration: multiply-accumulates (MACs) and parameters.

ViT papers call MACs "FLOPs" (DeiT, EViT, ToMe, AutoFormer all report fvcore counts), so the
harness counts MACs and the budget unit ``gflop`` means GMACs, following that convention.

Two counters that must agree (tests check they are equal):

* ``estimate_cost`` — closed form, microseconds per candidate, used to decide budgets before a
  model is built: the sum over ``harness.workload.operators``;
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

from harness.config import CandidateConfig
from harness.layers import weight_density
from harness.workload import operators


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


def estimate_cost(config: CandidateConfig) -> Cost:
    """Closed-form MACs and parameters of ``config``; matches fvcore and the built model exactly."""
    ops = operators(config)
    macs = sum(op.macs for op in ops)
    skipped = sum(op.macs * op.zero_fraction for op in ops)
    dim = config.embed_dim
    params = 3 * config.patch_size**2 * dim + dim + dim + (config.num_patches + 1) * dim
    for block in range(config.depth):
        width, hidden = config.heads_at(block) * config.head_dim, config.mlp_hidden_at(block)
        params += 4 * dim  # two LayerNorms
        params += dim * 3 * width + 3 * width + width * dim + dim
        params += dim * hidden + hidden + hidden * dim + dim
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
