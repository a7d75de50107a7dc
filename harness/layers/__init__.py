"""Efficiency knobs as small modules: a pure function does the work, a thin module wraps it."""

from harness.layers.attention import Attention, PooledAttention, WindowAttention
from harness.layers.sparsity import (
    SPARSE_KERNELS,
    inference_context,
    sparsify_linears,
    use_sparse_kernels,
    weight_density,
)
from harness.layers.token_merging import TokenMerging, merge_tokens
from harness.layers.token_pruning import TokenPruning, prune_tokens

__all__ = [
    "SPARSE_KERNELS",
    "Attention",
    "PooledAttention",
    "TokenMerging",
    "TokenPruning",
    "WindowAttention",
    "inference_context",
    "merge_tokens",
    "prune_tokens",
    "sparsify_linears",
    "use_sparse_kernels",
    "weight_density",
]
