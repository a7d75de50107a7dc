"""Attention variants of a block: global (SDPA), local window, and pooled keys/values.

All three return ``(output, cls_attention, keys)``. Only global attention can also give the class
token's attention row (EViT ranks tokens by it), the per-token keys (ToMe matches tokens on them)
and take token sizes (ToMe's proportional attention): token reduction happens in blocks with
global attention, because the grid variants need the full patch grid (``CandidateConfig`` checks).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

AttentionOutput = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]


class _MultiHead(nn.Module):
    """Head bookkeeping shared by the variants; each creates its own projections."""

    def __init__(self, num_heads: int, head_dim: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.scale = head_dim**-0.5

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, head_dim={self.head_dim}"

    def _heads(self, x: torch.Tensor, parts: int) -> tuple[torch.Tensor, ...]:
        """(B, N, parts·H·d) → ``parts`` tensors of shape (B, H, N, d)."""
        batch, tokens, _ = x.shape
        x = x.reshape(batch, tokens, parts, self.num_heads, self.head_dim)
        return x.permute(2, 0, 3, 1, 4).unbind(0)

    def _merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, tokens, _ = x.shape
        return self.proj(x.transpose(1, 2).reshape(batch, tokens, -1))


class _GridVariant:
    """Mixin of the variants that need the whole patch grid: they run only in blocks that do not
    reduce tokens, so they never take token sizes nor give the class attention row or keys."""

    def forward(
        self,
        x: torch.Tensor,
        size: torch.Tensor | None = None,
        need_cls_attention: bool = False,
        need_keys: bool = False,
    ) -> AttentionOutput:
        if size is not None or need_cls_attention or need_keys:
            raise ValueError("grid attention variants run only in blocks that do not reduce tokens")
        return self.attend(x), None, None

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class Attention(_MultiHead):
    """Global multi-head self-attention, width ``num_heads * head_dim`` (AutoFormer style)."""

    def __init__(self, dim: int, num_heads: int, head_dim: int) -> None:
        super().__init__(num_heads, head_dim)
        self.qkv = nn.Linear(dim, 3 * num_heads * head_dim)
        self.proj = nn.Linear(num_heads * head_dim, dim)

    def forward(
        self,
        x: torch.Tensor,
        size: torch.Tensor | None = None,
        need_cls_attention: bool = False,
        need_keys: bool = False,
    ) -> AttentionOutput:
        q, k, v = self._heads(self.qkv(x), 3)
        # Proportional attention (ToMe): a token standing for s tokens gets log(s) more logit.
        bias = None if size is None else size.log().transpose(1, 2).unsqueeze(1)
        out = self._merge_heads(F.scaled_dot_product_attention(q, k, v, attn_mask=bias))
        cls_attention = None
        if need_cls_attention:
            # Only the class token's row ranks tokens: computing it apart keeps the fused SDPA
            # kernel (which never materialises the attention matrix) for the full attention.
            cls_logits = torch.matmul(q[:, :, :1] * self.scale, k.transpose(-2, -1))
            if bias is not None:
                cls_logits = cls_logits + bias
            cls_attention = cls_logits.softmax(dim=-1).mean(dim=1)[:, 0, 1:]
        keys = k.mean(dim=1) if need_keys else None
        return out, cls_attention, keys


class WindowAttention(_GridVariant, Attention):
    """Local attention: each ``window``×``window`` patch window attends to itself and the class
    token (Swin-style windows, without shifting); the class token attends to every token."""

    def __init__(self, dim: int, num_heads: int, head_dim: int, grid: int, window: int) -> None:
        super().__init__(dim, num_heads, head_dim)
        self.grid = grid
        self.window = window

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, window={self.window}"

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._heads(self.qkv(x), 3)
        batch, heads, _, dim = q.shape
        side, window = self.grid // self.window, self.window

        def to_windows(t: torch.Tensor) -> torch.Tensor:  # (B, H, 1+g², d) → (B·n, H, w², d)
            t = t[:, :, 1:].reshape(batch, heads, side, window, side, window, dim)
            return t.permute(0, 2, 4, 1, 3, 5, 6).reshape(-1, heads, window * window, dim)

        cls_k = k[:, :, :1].repeat_interleave(side * side, dim=0)
        cls_v = v[:, :, :1].repeat_interleave(side * side, dim=0)
        local = F.scaled_dot_product_attention(
            to_windows(q), torch.cat([cls_k, to_windows(k)], 2), torch.cat([cls_v, to_windows(v)], 2)
        )
        local = local.reshape(batch, side, side, heads, window, window, dim)
        local = local.permute(0, 3, 1, 4, 2, 5, 6).reshape(batch, heads, -1, dim)
        cls_out = F.scaled_dot_product_attention(q[:, :, :1], k, v)
        return self._merge_heads(torch.cat([cls_out, local], dim=2))


class PooledAttention(_GridVariant, _MultiHead):
    """Global attention to pooled keys/values (PVT's spatial reduction; HiLo's low-frequency
    path): keys and values come from the class token and the patch grid averaged over
    ``pool``×``pool`` cells, so the key/value projection and the attention shrink by ~``pool``²."""

    def __init__(self, dim: int, num_heads: int, head_dim: int, grid: int, pool: int) -> None:
        super().__init__(num_heads, head_dim)
        self.grid = grid
        self.pool = pool
        width = num_heads * head_dim
        self.q = nn.Linear(dim, width)
        self.kv = nn.Linear(dim, 2 * width)
        self.proj = nn.Linear(width, dim)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, pool={self.pool}"

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, channels = x.shape
        patches = x[:, 1:].transpose(1, 2).reshape(batch, channels, self.grid, self.grid)
        pooled = F.adaptive_avg_pool2d(patches, self.grid // self.pool).flatten(2).transpose(1, 2)
        (q,) = self._heads(self.q(x), 1)
        k, v = self._heads(self.kv(torch.cat([x[:, :1], pooled], dim=1)), 2)
        return self._merge_heads(F.scaled_dot_product_attention(q, k, v))
