"""Arithmetic of the knobs, shared by the configuration, the model and the cost model: the
tokens that pruning and merging leave, and the blocks that block sparsity zeroes.

Pure Python (no torch) so that the analytic cost of a candidate needs nothing but its config.
"""

from __future__ import annotations

import math


def tokens_kept(num_tokens: int, keep_rate: float) -> int:
    """Patch tokens EViT keeps out of the ``num_tokens - 1`` after the class token."""
    return math.ceil(keep_rate * (num_tokens - 1))


def tokens_after_pruning(num_tokens: int, keep_rate: float, fuse: bool = True) -> int:
    """Token count (class token included) after EViT pruning of ``num_tokens`` at ``keep_rate``.

    The class token is always kept and ``ceil(keep_rate * (N - 1))`` others survive; with ``fuse``
    the dropped ones become one fused token.
    """
    kept = tokens_kept(num_tokens, keep_rate)
    if kept >= num_tokens - 1:
        return num_tokens
    return 1 + kept + (1 if fuse else 0)


def merges_at(num_tokens: int, r: int) -> int:
    """Token pairs ToMe merges in a layer of ``num_tokens``: ``r`` capped at half the tokens
    that may merge (the class token never does), as ``bipartite_soft_matching`` caps it."""
    return max(0, min(r, (num_tokens - 1) // 2))


def merge_schedule(r: int, depth: int, schedule: str) -> list[int]:
    """ToMe's per-layer ``r`` for one integer: ``constant`` merges ``r`` in every layer;
    ``decreasing`` goes linearly from 1.5·r to 0.5·r (ToMe's inflection -0.5), merging the same
    total early, where tokens are many."""
    if schedule == "constant" or depth == 1:
        return [r] * depth
    first, last = int(r * 1.5), 2 * r - int(r * 1.5)
    step = (last - first) / (depth - 1)
    return [int(first + step * layer) for layer in range(depth)]


def zeroed_blocks(total: int, sparsity: float) -> int:
    """How many of ``total`` blocks a block-sparsity fraction zeroes (the cost model uses this)."""
    return int(total * sparsity + 0.5)
