"""fvcore's count of a built model: the cross-check of the closed form in ``harness.cost``.

fvcore traces the real model, with an op handle for ``aten::scaled_dot_product_attention``
(fvcore skips it) and fvcore's own LayerNorm convention (5 operations per element);
``aten::adaptive_avg_pool2d`` counts one MAC per input element. The tests check both counters
agree on every knob.
"""

from __future__ import annotations

import warnings
from math import prod
from typing import Any

import torch

from harness.config import CandidateConfig
from harness.cost import Cost
from harness.layers import weight_density


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
