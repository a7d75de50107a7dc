"""EViT token pruning with fusion (Liang et al., ICLR 2022, "Not All Patches are What You Need").

After a block's attention, the patch tokens that the class token attends to most are kept; the
others are fused into one token weighted by that attention (or dropped, without fusion), so later
blocks compute on fewer tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from harness.tokens import tokens_after_pruning, tokens_kept


def choose_tokens(
    cls_attention: torch.Tensor, keep_rate: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (into the patch tokens) of the ``ceil(keep_rate · (N-1))`` tokens the class token
    attends to most, and of the rest. ``cls_attention`` is (B, N - 1), averaged over heads."""
    num_keep = tokens_kept(cls_attention.shape[1] + 1, keep_rate)
    order = cls_attention.argsort(dim=1, descending=True)
    return order[:, :num_keep], order[:, num_keep:]


def gather_tokens(
    x: torch.Tensor,
    keep_index: torch.Tensor,
    drop_index: torch.Tensor,
    fuse_weight: torch.Tensor | None,
) -> torch.Tensor:
    """The class token and the kept patch tokens of ``x`` (B, N, C), then, with ``fuse_weight``
    (B, N - 1 - kept, 1), one token fused as the weighted sum of the dropped ones."""

    def take(index: torch.Tensor) -> torch.Tensor:
        return x[:, 1:].gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))

    parts = [x[:, :1], take(keep_index)]
    if fuse_weight is not None:
        parts.append((take(drop_index) * fuse_weight).sum(dim=1, keepdim=True))
    return torch.cat(parts, dim=1)


def prune_tokens(
    x: torch.Tensor,
    cls_attention: torch.Tensor,
    keep_rate: float,
    fuse: bool = True,
    size: torch.Tensor | None = None,
    keys: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Keep the most attended tokens of ``x`` (B, N, C); fuse the rest into one token or drop them.

    As in EViT, the fused token is the sum of the dropped tokens weighted by the class token's
    attention. When ToMe also runs, the token ``size`` (B, N, 1) and the ``keys`` (B, N, d) it
    matches on follow the tokens (a fused token's size is the sum of the sizes it fused).
    """
    if tokens_after_pruning(x.shape[1], keep_rate, fuse) == x.shape[1]:
        return x, size, keys
    keep_index, drop_index = choose_tokens(cls_attention, keep_rate)
    weight = cls_attention.gather(1, drop_index).unsqueeze(-1) if fuse else None
    x = gather_tokens(x, keep_index, drop_index, weight)
    if size is not None:
        size = gather_tokens(size, keep_index, drop_index, torch.ones_like(weight) if fuse else None)
    if keys is not None:
        keys = gather_tokens(keys, keep_index, drop_index, weight)
    return x, size, keys


class TokenPruning(nn.Module):
    """Module wrapper of ``prune_tokens`` placed between a block's attention and its MLP."""

    def __init__(self, keep_rate: float, fuse: bool = True) -> None:
        super().__init__()
        self.keep_rate = keep_rate
        self.fuse = fuse

    def forward(
        self,
        x: torch.Tensor,
        cls_attention: torch.Tensor,
        size: torch.Tensor | None = None,
        keys: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        return prune_tokens(x, cls_attention, self.keep_rate, self.fuse, size, keys)

    def extra_repr(self) -> str:
        return f"keep_rate={self.keep_rate}, fuse={self.fuse}"
