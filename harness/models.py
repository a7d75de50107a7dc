"""One Vision Transformer that builds any point of a search space, and the DeiT presets.

Read like timm's ``vision_transformer.py``: patch embedding, class token, learned position
embedding, pre-norm blocks with ``F.scaled_dot_product_attention``. Efficiency knobs are
constructor arguments and small modules of our own ``Block`` (``harness.layers``); a knob that is
off builds nothing and costs nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from harness.config import CandidateConfig
from harness.errors import ConfigError
from harness.layers import TokenPruning


class PatchEmbed(nn.Module):
    """Image (B, 3, H, W) → patch tokens (B, H/p · W/p, C) with one strided convolution."""

    def __init__(self, img_size: int, patch_size: int, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.num_patches = (img_size // patch_size) ** 2
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention whose width is ``num_heads * head_dim`` (AutoFormer style)."""

    def __init__(self, dim: int, num_heads: int, head_dim: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.scale = head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * num_heads * head_dim, bias=qkv_bias)
        self.proj = nn.Linear(num_heads * head_dim, dim)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, head_dim={self.head_dim}"

    def forward(
        self, x: torch.Tensor, return_cls_attention: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, tokens, _ = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        out = self.proj(out.transpose(1, 2).reshape(batch, tokens, -1))
        if not return_cls_attention:
            return out, None
        # Only the class token's row is needed to rank tokens: computing it apart keeps the fused
        # SDPA kernel (which never materialises the attention matrix) for the full attention.
        cls_logits = torch.matmul(q[:, :, :1] * self.scale, k.transpose(-2, -1))
        cls_attention = cls_logits.softmax(dim=-1).mean(dim=1)[:, 0, 1:]
        return out, cls_attention


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block; with ``keep_rate < 1`` it prunes tokens before its MLP (EViT)."""

    def __init__(
        self, dim: int, num_heads: int, head_dim: int, mlp_hidden_dim: int, keep_rate: float = 1.0
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, head_dim)
        self.token_pruning = TokenPruning(keep_rate) if keep_rate < 1 else None
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, mlp_hidden_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn_out, cls_attention = self.attn(self.norm1(x), self.token_pruning is not None)
        x = x + attn_out
        if self.token_pruning is not None:
            x = self.token_pruning(x, cls_attention)
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    def __init__(
        self,
        *,
        img_size: int,
        patch_size: int,
        num_classes: int,
        embed_dim: int,
        num_heads: Sequence[int],
        mlp_hidden_dims: Sequence[int],
        keep_rates: Sequence[float],
        head_dim: int = 64,
    ) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(img_size, patch_size, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, embed_dim))
        self.blocks = nn.Sequential(
            *(
                Block(embed_dim, heads, head_dim, hidden, keep_rate)
                for heads, hidden, keep_rate in zip(num_heads, mlp_hidden_dims, keep_rates)
            )
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=1e-6)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(images)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.norm(self.blocks(x))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x[:, 0])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(images))


def inherit_weights(model: nn.Module, source: dict[str, torch.Tensor]) -> nn.Module:
    """Copy into ``model`` the leading slice of each same-named, large-enough tensor of ``source``.

    With ``source`` the weights of a space's largest model, every candidate is a sub-network of one
    super-network (AutoFormer's weight entanglement), so scores computed on candidates differ by
    architecture rather than by independent random draws. Tensors ``source`` cannot cover keep
    their own seeded initialisation.
    """
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            shared = source.get(name)
            if shared is None or shared.dim() != tensor.dim():
                continue
            if all(n <= m for n, m in zip(tensor.shape, shared.shape)):
                tensor.copy_(shared[tuple(slice(0, n) for n in tensor.shape)])
    return model


def build_model(
    config: CandidateConfig, seed: int = 0, shared_weights: dict[str, torch.Tensor] | None = None
) -> VisionTransformer:
    """Build the model of ``config`` with weights drawn deterministically from ``seed``, or taken
    from ``shared_weights`` where they cover it (see ``inherit_weights``)."""
    blocks = range(config.depth)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VisionTransformer(
            img_size=config.img_size,
            patch_size=config.patch_size,
            num_classes=config.num_classes,
            embed_dim=config.embed_dim,
            num_heads=[config.heads_at(b) for b in blocks],
            mlp_hidden_dims=[config.mlp_hidden_at(b) for b in blocks],
            keep_rates=[config.keep_rate_at(b) for b in blocks],
            head_dim=config.head_dim,
        )
    if shared_weights is not None:
        inherit_weights(model, shared_weights)
    return model.eval()


PRESETS: dict[str, CandidateConfig] = {}


def register_preset(name: str, **values: object) -> CandidateConfig:
    PRESETS[name] = CandidateConfig.from_dict(values)
    return PRESETS[name]


register_preset("deit_tiny", embed_dim=192, depth=12, num_heads=3)
register_preset("deit_small", embed_dim=384, depth=12, num_heads=6)
register_preset("deit_base", embed_dim=768, depth=12, num_heads=12)


def preset_config(name: str) -> CandidateConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown architecture {name!r}; valid: {', '.join(PRESETS)}")
    return PRESETS[name]
