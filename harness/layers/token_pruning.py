"""EViT token pruning with fusion (Liang et al., ICLR 2022, "Not All Patches are What You Need").

After a block's attention, the patch tokens that the class token attends to most are kept; the
others are fused into one token weighted by that attention, so later blocks compute on fewer tokens.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def tokens_after_pruning(num_tokens: int, keep_rate: float) -> int:
    """Token count (class token included) after pruning ``num_tokens`` at ``keep_rate``.

    The class token is always kept; ``ceil(keep_rate * (N - 1))`` other tokens survive and, if any
    were dropped, one fused token is appended. The cost model uses this same function.
    """
    num_keep = math.ceil(keep_rate * (num_tokens - 1))
    if num_keep >= num_tokens - 1:
        return num_tokens
    return 1 + num_keep + 1


def prune_tokens(x: torch.Tensor, cls_attention: torch.Tensor, keep_rate: float) -> torch.Tensor:
    """Keep the most attended tokens of ``x`` (B, N, C) and fuse the rest into one token.

    ``cls_attention`` (B, N - 1) is the class token's attention to every other token, averaged
    over heads. As in EViT, the fused token is the attention-weighted sum of the dropped tokens.
    """
    num_tokens = x.shape[1]
    if tokens_after_pruning(num_tokens, keep_rate) == num_tokens:
        return x
    num_keep = math.ceil(keep_rate * (num_tokens - 1))
    order = cls_attention.argsort(dim=1, descending=True)
    keep_index, drop_index = order[:, :num_keep], order[:, num_keep:]
    patches = x[:, 1:]
    channels = x.shape[-1]
    kept = patches.gather(1, keep_index.unsqueeze(-1).expand(-1, -1, channels))
    dropped = patches.gather(1, drop_index.unsqueeze(-1).expand(-1, -1, channels))
    drop_weight = cls_attention.gather(1, drop_index).unsqueeze(-1)
    fused = (dropped * drop_weight).sum(dim=1, keepdim=True)
    return torch.cat([x[:, :1], kept, fused], dim=1)


class TokenPruning(nn.Module):
    """Module wrapper of ``prune_tokens`` placed between a block's attention and its MLP."""

    def __init__(self, keep_rate: float) -> None:
        super().__init__()
        self.keep_rate = keep_rate

    def forward(self, x: torch.Tensor, cls_attention: torch.Tensor) -> torch.Tensor:
        return prune_tokens(x, cls_attention, self.keep_rate)

    def extra_repr(self) -> str:
        return f"keep_rate={self.keep_rate}"
