"""Weight sparsity of the Linear layers in transformer blocks: 2:4 (GPUSQ-ViT) and block
(LPViT-style), both chosen by magnitude.

The masks are applied to the weights themselves, so the accuracy effect is real on every device.
Whether a device also runs them faster depends on its kernels (2:4 semi-structured kernels need
CUDA compute capability 8.0+ in fp16/bf16); the device says so, and only then stores the weights
in a sparse format (``use_sparse_kernels``).
"""

from __future__ import annotations

import warnings
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import nn

from harness.tokens import zeroed_blocks


def two_four_mask(weight: torch.Tensor) -> torch.Tensor:
    """Keep the 2 largest-magnitude weights of every 4 consecutive inputs of each output row."""
    rows, cols = weight.shape
    groups = weight.abs().reshape(rows, cols // 4, 4)
    mask = torch.zeros_like(groups, dtype=torch.bool)
    mask.scatter_(-1, groups.topk(2, dim=-1).indices, True)
    return mask.reshape(rows, cols)


def block_mask(weight: torch.Tensor, block: int, sparsity: float) -> torch.Tensor:
    """Zero the ``sparsity`` fraction of ``block``×``block`` tiles with the smallest L2 norm."""
    rows, cols = weight.shape
    tiles = weight.pow(2).reshape(rows // block, block, cols // block, block).sum(dim=(1, 3))
    keep = torch.ones(tiles.numel(), dtype=torch.bool)
    keep[tiles.flatten().argsort()[: zeroed_blocks(tiles.numel(), sparsity)]] = False
    keep = keep.reshape(tiles.shape)
    return keep.repeat_interleave(block, dim=0).repeat_interleave(block, dim=1)


def sparsify_linears(module: nn.Module, pattern: str, block: int = 32, sparsity: float = 0.5) -> None:
    """Zero weights of every Linear in ``module`` in place: ``pattern`` is ``2:4`` or ``block``."""
    with torch.no_grad():
        for layer in module.modules():
            if not isinstance(layer, nn.Linear):
                continue
            if pattern == "2:4":
                mask = two_four_mask(layer.weight)
            else:
                mask = block_mask(layer.weight, block, sparsity)
            layer.weight.mul_(mask)


# Kernels that skip zero weights, per pattern: what a device that accelerates it runs.
SPARSE_KERNELS = {
    "2:4": "weights stored 2:4 semi-structured (torch.sparse.to_sparse_semi_structured)",
    "block": "weights stored as BSR with sparsity_block blocks (Tensor.to_sparse_bsr)",
}


def use_sparse_kernels(module: nn.Module, pattern: str, block: int = 32) -> None:
    """Store the (already masked) weight of every Linear in ``module`` in the sparse format whose
    kernels skip the zeros: 2:4 semi-structured (CUDA, compute capability 8.0+, fp16/bf16) or BSR
    with ``block``×``block`` blocks. ``F.linear`` dispatches to the sparse kernels.

    Raises:
        RuntimeError: the installed torch has no such kernel for this device or dtype.
    """
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            weight = layer.weight.detach()
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*is in beta state.*")
                if pattern == "2:4":
                    sparse = torch.sparse.to_sparse_semi_structured(weight)
                else:
                    sparse = weight.to_sparse_bsr((block, block))
            layer.weight = nn.Parameter(sparse, requires_grad=False)


def weight_density(layer: nn.Linear) -> float:
    """Fraction of non-zero weights: the share of a sparse layer's MACs that do work."""
    return float(torch.count_nonzero(layer.weight)) / layer.weight.numel()


def inference_context(model: torch.nn.Module) -> AbstractContextManager[Any]:
    """``torch.inference_mode()``, except for a model with sparse-format weights: torch 2.13's BSR
    matmul fails under it ("Cannot set version_counter for inference tensor"), so ``no_grad``."""
    if any(p.layout != torch.strided for p in model.parameters()):
        return torch.no_grad()
    return torch.inference_mode()


__all__ = ["block_mask", "inference_context", "sparsify_linears", "two_four_mask",
           "weight_density"]
