"""The operators a configuration runs for one image, in order: what every cost model sums.

The MAC counter (``harness.cost``) and the FPGA latency model (``harness.fpga.estimate``) both read
this one list, so a knob changes both the same way: token pruning and merging shrink ``rows``,
window and pooled attention shrink the keys each query sees, sparsity sets ``zero_fraction``.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.config import BlockTokens, CandidateConfig
from harness.tokens import zeroed_blocks

LAYER_NORM_MACS_PER_ELEMENT = 5  # fvcore's norm_flop_counter with affine parameters


@dataclass(frozen=True)
class Operator:
    """One operator: a matmul of ``rows`` × ``cols`` by ``cols`` × ``outputs`` (``repeats`` times,
    once per head for attention), or a row-wise pipeline over ``rows`` rows of ``cols`` values.

    ``has_weights`` marks the Linear layers (their weights come from memory; attention's matmuls
    multiply two activations). ``zero_fraction`` is the share of those weights sparsity zeroes.
    """

    name: str
    kind: str
    rows: int
    cols: int
    outputs: int = 0
    repeats: int = 1
    has_weights: bool = False
    zero_fraction: float = 0.0

    @property
    def macs(self) -> int:
        """MACs as fvcore counts them: softmax and GELU count none, LayerNorm 5 per value, pooling
        one per input value."""
        if self.kind == "matmul":
            return self.rows * self.cols * self.outputs * self.repeats
        if self.kind == "layernorm":
            return LAYER_NORM_MACS_PER_ELEMENT * self.rows * self.cols
        if self.kind == "pool":
            return self.rows * self.cols
        return 0

    @property
    def weight_count(self) -> int:
        return self.cols * self.outputs if self.has_weights else 0


def operators(config: CandidateConfig) -> list[Operator]:
    """Every operator of ``config`` for one image, in execution order."""
    dim = config.embed_dim
    ops = [Operator("patch_embed", "matmul", config.num_patches, 3 * config.patch_size**2, dim,
                    has_weights=True)]
    for block, tokens in enumerate(config.token_plan()):
        ops += _block_operators(config, block, tokens)
        tokens_after = tokens.tokens_out
    ops.append(Operator("norm", "layernorm", tokens_after, dim))
    ops.append(Operator("head", "matmul", 1, dim, config.num_classes, has_weights=True))
    return ops


def _block_operators(config: CandidateConfig, block: int, tokens: BlockTokens) -> list[Operator]:
    dim, heads, head_dim = config.embed_dim, config.heads_at(block), config.head_dim
    width, hidden = heads * head_dim, config.mlp_hidden_at(block)
    n, out, at = tokens.tokens, tokens.tokens_out, f"blocks.{block}."

    def linear(name: str, rows: int, inputs: int, outputs: int) -> Operator:
        return Operator(at + name, "matmul", rows, inputs, outputs, has_weights=True,
                        zero_fraction=_zero_fraction(config, outputs, inputs))

    def attend(name: str, queries: int, keys: int) -> list[Operator]:
        """Scores, softmax and weighted sum of ``queries`` over ``keys``, in every head."""
        return [Operator(at + name + ".scores", "matmul", queries, head_dim, keys, heads),
                Operator(at + name + ".softmax", "softmax", heads * queries, keys),
                Operator(at + name + ".context", "matmul", queries, keys, head_dim, heads)]

    ops = [Operator(at + "norm1", "layernorm", n, dim)]
    variant = config.attention_at(block)
    if variant == "pooled":
        grid = config.img_size // config.patch_size
        pooled = 1 + (grid // config.kv_pool) ** 2
        ops += [linear("attn.q", n, dim, width),
                Operator(at + "attn.pool", "pool", config.num_patches, dim),
                linear("attn.kv", pooled, dim, 2 * width)]
        ops += attend("attn", n, pooled)
    elif variant == "window":
        # each window's queries attend to the window and the class token; the class token to all
        ops.append(linear("attn.qkv", n, dim, 3 * width))
        ops += attend("attn.windows", config.num_patches, 1 + config.window_size**2)
        ops += attend("attn.class_token", 1, n)
    else:
        ops.append(linear("attn.qkv", n, dim, 3 * width))
        ops += attend("attn", n, n)
    if config.keep_rate_at(block) < 1:
        # EViT ranks tokens by the class token's attention row, computed apart
        ops.append(Operator(at + "token_pruning.class_attention", "matmul", 1, head_dim, n, heads))
    ops.append(linear("attn.proj", n, width, dim))
    if tokens.merged > 0:
        pruned = tokens.after_pruning
        ops.append(Operator(at + "token_merging.similarity", "matmul", (pruned + 1) // 2, head_dim,
                            pruned // 2))
    ops += [Operator(at + "norm2", "layernorm", out, dim),
            linear("mlp.fc1", out, dim, hidden),
            Operator(at + "mlp.act", "gelu", out, hidden),
            linear("mlp.fc2", out, hidden, dim)]
    return ops


def _zero_fraction(config: CandidateConfig, out_features: int, in_features: int) -> float:
    """Share of a block Linear's weights that ``config``'s sparsity zeroes."""
    if config.weight_sparsity == "2:4":
        return 0.5
    if config.weight_sparsity == "block":
        tiles = (out_features // config.sparsity_block) * (in_features // config.sparsity_block)
        return zeroed_blocks(tiles, config.block_sparsity) / tiles
    return 0.0
