"""ToMe token merging (Bolya et al., ICLR 2023, "Token Merging: Your ViT but Faster").

Between a block's attention and its MLP, ``r`` pairs of similar tokens are merged: tokens are
split alternately into sets A and B, each A token is matched to its most similar B token by the
cosine similarity of the attention keys (averaged over heads), and the ``r`` best-matched A tokens
are averaged into their partners, weighted by how many tokens each already stands for (``size``).
Later attention adds ``log(size)`` to its logits (proportional attention), so a merged token
weighs as much as the tokens it replaced. The class token is never merged.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from harness.tokens import merges_at


def merge_tokens(
    x: torch.Tensor, keys: torch.Tensor, r: int, size: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge ``r`` token pairs of ``x`` (B, N, C), matched on ``keys`` (B, N, d).

    Returns the merged tokens (B, N - r', C) and their sizes (B, N - r', 1), where ``r'`` is ``r``
    capped at half the mergeable tokens. The class token (index 0) stays first.
    """
    if size is None:
        size = torch.ones_like(x[..., :1])
    r = merges_at(x.shape[1], r)
    if r == 0:
        return x, size
    with torch.no_grad():
        keys = keys / keys.norm(dim=-1, keepdim=True)
        scores = keys[:, ::2] @ keys[:, 1::2].transpose(-1, -2)
        scores[:, 0, :] = -math.inf  # the class token (first of set A) never merges
        best_score, best_partner = scores.max(dim=-1)
        ranked = best_score.argsort(dim=-1, descending=True).unsqueeze(-1)
        kept_a = ranked[:, r:].sort(dim=1).values  # sorted: the class token stays first
        merged_a = ranked[:, :r]
        partner = best_partner.unsqueeze(-1).gather(1, merged_a)

    # Whole token rows are gathered and added by flat row index (index_select, index_add): one
    # index per row rather than one per element, which exported runtimes copy row by row.
    batch = x.shape[0]
    rows_a = torch.arange(batch, device=x.device).unsqueeze(1) * ((x.shape[1] + 1) // 2)
    rows_b = torch.arange(batch, device=x.device).unsqueeze(1) * (x.shape[1] // 2)
    kept_rows = (kept_a.squeeze(-1) + rows_a).flatten()
    merged_rows = (merged_a.squeeze(-1) + rows_a).flatten()
    partner_rows = (partner.squeeze(-1) + rows_b).flatten()

    def merge(values: torch.Tensor) -> torch.Tensor:
        channels = values.shape[-1]
        set_a = values[:, ::2].reshape(-1, channels)
        set_b = values[:, 1::2].reshape(-1, channels)
        unmerged = set_a.index_select(0, kept_rows).reshape(batch, -1, channels)
        set_b = set_b.index_add(0, partner_rows, set_a.index_select(0, merged_rows))
        return torch.cat([unmerged, set_b.reshape(batch, -1, channels)], dim=1)

    merged = merge(x * size)
    new_size = merge(size)
    return merged / new_size, new_size


class TokenMerging(nn.Module):
    """Module wrapper of ``merge_tokens`` placed between a block's attention and its MLP."""

    def __init__(self, r: int) -> None:
        super().__init__()
        self.r = r

    def forward(
        self, x: torch.Tensor, keys: torch.Tensor, size: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return merge_tokens(x, keys, self.r, size)

    def extra_repr(self) -> str:
        return f"r={self.r}"
