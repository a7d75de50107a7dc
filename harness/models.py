"""One Vision Transformer that builds any point of a search space, and the DeiT presets.

Read like timm's ``vision_transformer.py``: patch embedding, class token, learned position
embedding, pre-norm blocks with ``F.scaled_dot_product_attention``. Efficiency knobs are small
modules of our own ``Block`` (``harness.layers``), chosen per block by ``build_block``; a knob that
is off builds nothing and costs nothing, so a model with every knob off is the plain ViT.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from harness.config import CandidateConfig
from harness.cost import check_buildable
from harness.errors import ConfigError, shorten
from harness.layers import (
    Attention,
    PooledAttention,
    TokenMerging,
    TokenPruning,
    WindowAttention,
    sparsify_linears,
)

if TYPE_CHECKING:  # the space is only named here; it builds no model
    from harness.space import SearchSpace


class PatchEmbed(nn.Module):
    """Image (B, 3, H, W) → patch tokens (B, H/p · W/p, C) with one strided convolution."""

    def __init__(self, img_size: int, patch_size: int, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.num_patches = (img_size // patch_size) ** 2
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block. Token reduction sits between its attention and its MLP:
    EViT pruning (``token_pruning``), then ToMe merging (``token_merging``); either is None when
    off. ``size`` is how many tokens each token stands for, tracked once ToMe has merged."""

    def __init__(
        self,
        dim: int,
        attn: nn.Module,
        mlp_hidden_dim: int,
        token_pruning: TokenPruning | None = None,
        token_merging: TokenMerging | None = None,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = attn
        self.token_pruning = token_pruning
        self.token_merging = token_merging
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, mlp_hidden_dim)

    def forward(
        self, x: torch.Tensor, size: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn_out, cls_attention, keys = self.attn(
            self.norm1(x), size, self.token_pruning is not None, self.token_merging is not None
        )
        x = x + attn_out
        if self.token_pruning is not None:
            x, size, keys = self.token_pruning(x, cls_attention, size, keys)
        if self.token_merging is not None:
            x, size = self.token_merging(x, keys, size)
        return x + self.mlp(self.norm2(x)), size


def build_attention(config: CandidateConfig, block: int) -> nn.Module:
    """The attention module ``config`` asks for in 0-based ``block``."""
    dim, heads, head_dim = config.embed_dim, config.heads_at(block), config.head_dim
    grid = config.img_size // config.patch_size
    variant = config.attention_at(block)
    if variant == "window":
        return WindowAttention(dim, heads, head_dim, grid, config.window_size)
    if variant == "pooled":
        return PooledAttention(dim, heads, head_dim, grid, config.kv_pool)
    return Attention(dim, heads, head_dim)


def build_block(config: CandidateConfig, block: int) -> Block:
    keep_rate, merge_r = config.keep_rate_at(block), config.merge_r_at(block)
    return Block(
        config.embed_dim,
        build_attention(config, block),
        config.mlp_hidden_at(block),
        token_pruning=TokenPruning(keep_rate, config.fuse_tokens) if keep_rate < 1 else None,
        token_merging=TokenMerging(merge_r) if merge_r > 0 else None,
    )


class VisionTransformer(nn.Module):
    def __init__(
        self, *, img_size: int, patch_size: int, num_classes: int, embed_dim: int,
        blocks: Sequence[Block],
    ) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(img_size, patch_size, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, embed_dim))
        self.blocks = nn.ModuleList(blocks)
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
        size = None
        for block in self.blocks:
            x, size = block(x, size)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x[:, 0])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(images))


# The fused query/key/value projection of global and window attention stacks three parts; pooled
# attention keeps the query part apart (``q``) and fuses keys and values (``kv``). A candidate's
# projection takes the leading rows of each part it has, so its queries come from the larger
# model's queries, its keys from its keys, whatever the widths.
_QKV = ".attn.qkv."
_FUSED_PARTS = {_QKV: (0, 3), ".attn.q.": (0, 1), ".attn.kv.": (1, 3)}


def leading_slice(name: str, shape: torch.Size, source: dict[str, torch.Tensor]
                  ) -> torch.Tensor | None:
    """The leading slice of ``source``'s weights that the tensor ``name`` of shape ``shape`` of a
    smaller model takes (AutoFormer's weight entanglement), or None where ``source`` cannot
    cover it. Differentiable: a supernet trains through it."""
    for marker, (first, last) in _FUSED_PARTS.items():
        if marker in name:
            fused = source.get(name.replace(marker, _QKV))
            if fused is None or fused.dim() != len(shape):
                return None
            parts = fused.unflatten(0, (3, -1))[first:last]
            target = (last - first, shape[0] // (last - first), *shape[1:])
            sliced = _leading(parts, target)
            return None if sliced is None else sliced.flatten(0, 1)
    shared = source.get(name)
    return None if shared is None or shared.dim() != len(shape) else _leading(shared, shape)


def _leading(tensor: torch.Tensor, shape: Sequence[int]) -> torch.Tensor | None:
    if any(n > m for n, m in zip(shape, tensor.shape)):
        return None
    return tensor[tuple(slice(0, n) for n in shape)]


def inherit_weights(model: nn.Module, source: dict[str, torch.Tensor]) -> nn.Module:
    """Copy into ``model`` the leading slice of ``source`` each of its tensors takes
    (``leading_slice``).

    With ``source`` the weights of a space's largest model, every candidate is a sub-network of one
    super-network (AutoFormer's weight entanglement), so scores computed on candidates differ by
    architecture rather than by independent random draws. Tensors ``source`` cannot cover keep
    their own seeded initialisation.
    """
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            sliced = leading_slice(name, tensor.shape, source)
            if sliced is not None:
                tensor.copy_(sliced)
    return model


def build_model(
    config: CandidateConfig, seed: int = 0, shared_weights: dict[str, torch.Tensor] | None = None
) -> VisionTransformer:
    """Build the fp32 model of ``config`` with weights drawn deterministically from ``seed``, or
    taken from ``shared_weights`` where they cover it (see ``inherit_weights``). Weight-sparsity
    masks are applied here; precision is the device's business (``BaseDevice.prepare``).

    Raises:
        ConfigError: ``config`` is over a size limit (``check_buildable``).
    """
    check_buildable(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VisionTransformer(
            img_size=config.img_size,
            patch_size=config.patch_size,
            num_classes=config.num_classes,
            embed_dim=config.embed_dim,
            blocks=[build_block(config, block) for block in range(config.depth)],
        )
    if shared_weights is not None:
        inherit_weights(model, shared_weights)
    if config.weight_sparsity != "dense":
        sparsify_linears(model.blocks, config.weight_sparsity, config.sparsity_block,
                         config.block_sparsity)
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
        raise ConfigError(f"unknown architecture {shorten(name)}; valid: {', '.join(PRESETS)}")
    return PRESETS[name]


def shared_weights(space: SearchSpace) -> dict[str, torch.Tensor] | None:
    """Weights of the space's largest model, which every candidate inherits a slice of."""
    try:
        return build_model(space.largest_config()).state_dict()
    except ConfigError:
        # the smallest patch does not divide the largest image, or the default global attention
        # is over a size limit in a space that runs only window or pooled attention
        return None
