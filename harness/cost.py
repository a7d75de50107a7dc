"""Cost of a configuration: multiply-accumulates (MACs) and parameters.

ViT papers call MACs "FLOPs" (DeiT, EViT, ToMe, AutoFormer all report fvcore counts), so the
harness counts MACs and the budget unit ``gflop`` means GMACs, following that convention.

Two counters that must agree (tests check they are equal):

* ``estimate_cost`` — closed form, microseconds per candidate, used to decide budgets before a
  model is built: the sum over ``harness.workload.operators``;
* ``harness.cost_fvcore.count_cost_fvcore`` — fvcore's traced count on the real built model.

This module needs only the configuration, never torch: costs are known before anything is built.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.config import CandidateConfig
from harness.errors import ConfigError
from harness.workload import Operator, operators

# Limits on what combines several keys (each key has its own bound in ``harness.config``): far
# above every published ViT, far below what exhausts a host's memory.
MAX_MLP_WIDTH = 65536  # ViT-22B: 24576
MAX_PATCH_TOKENS = 262_144  # 2048 px at patch 4; 1024 px at patch 4, the most published, is 65,536
MAX_PARAMS = 2_000_000_000  # ViT-G/14: 1.8 billion; fp32 weights of 8 GB, and a search holds two
MAX_ATTENTION_SCORES = 1_000_000_000  # per image and block; SAM's global attention (1024 px): 2.7e8
MAX_TENSOR_VALUES = 1_000_000_000  # per image and layer; a ViT-B MLP at 1024 px, patch 4: 2.0e8


@dataclass(frozen=True)
class Cost:
    """MACs per image and parameter count.

    ``effective_macs`` leaves out the MACs of zero weights of a sparse model: what a kernel that
    skips them would do. Whether a device has such kernels is the device's to say; budgets are
    checked on ``macs``.
    """

    macs: int
    params: int
    effective_macs: int

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    @property
    def effective_gmacs(self) -> float:
        return self.effective_macs / 1e9

    @property
    def params_m(self) -> float:
        return self.params / 1e6


def estimate_cost(config: CandidateConfig) -> Cost:
    """Closed-form MACs and parameters of ``config``; matches fvcore and the built model exactly."""
    ops = operators(config)
    macs = sum(op.macs for op in ops)
    skipped = sum(op.macs * op.zero_fraction for op in ops)
    return Cost(macs=macs, params=_parameters(config), effective_macs=macs - round(skipped))


def _parameters(config: CandidateConfig) -> int:
    dim = config.embed_dim
    params = 3 * config.patch_size**2 * dim + dim + dim + (config.num_patches + 1) * dim
    for block in range(config.depth):
        width, hidden = config.heads_at(block) * config.head_dim, config.mlp_hidden_at(block)
        params += 4 * dim  # two LayerNorms
        params += dim * 3 * width + 3 * width + width * dim + dim
        params += dim * hidden + hidden + hidden * dim + dim
    params += 2 * dim + dim * config.num_classes + config.num_classes
    return params


def check_buildable(config: CandidateConfig) -> None:
    """Refuse a configuration over a size limit before anything is built: the model builder and
    every command that builds a model call this first. Closed-form (``operators``), so it costs
    no more than ``estimate_cost``.

    Raises:
        ConfigError: one line naming the key or quantity, its value and the limit.
    """
    widest = max(range(config.depth), key=config.mlp_hidden_at)
    if config.mlp_hidden_at(widest) > MAX_MLP_WIDTH:
        raise ConfigError(f"mlp_ratio: embed_dim {config.embed_dim} x mlp_ratio "
                          f"{config.mlp_ratio_at(widest):g} is an MLP width of "
                          f"{config.mlp_hidden_at(widest):,}, above the limit of {MAX_MLP_WIDTH:,}")
    if config.num_patches > MAX_PATCH_TOKENS:
        raise ConfigError(f"img_size: {config.img_size} px at patch_size {config.patch_size} is "
                          f"{config.num_patches:,} patch tokens per image, above the limit of "
                          f"{MAX_PATCH_TOKENS:,}")
    params = _parameters(config)
    if params > MAX_PARAMS:
        raise ConfigError(f"parameters: {params:,} (embed_dim {config.embed_dim}, depth "
                          f"{config.depth}), above the limit of {MAX_PARAMS:,}; reduce embed_dim, "
                          "depth, num_heads, head_dim or mlp_ratio")
    ops = operators(config)
    scores = max((op for op in ops if op.kind == "softmax"), key=lambda op: op.rows * op.cols)
    if scores.rows * scores.cols > MAX_ATTENTION_SCORES:
        raise ConfigError(f"attention scores: {scores.name} holds {scores.rows * scores.cols:,} "
                          f"scores per image (heads x queries x keys), above the limit of "
                          f"{MAX_ATTENTION_SCORES:,}; use a smaller img_size, a larger "
                          "patch_size, fewer num_heads, or attention=window or pooled")
    largest = max(ops, key=_tensor_values)
    if _tensor_values(largest) > MAX_TENSOR_VALUES:
        raise ConfigError(f"activations: {largest.name} handles {_tensor_values(largest):,} "
                          f"values per image, above the limit of {MAX_TENSOR_VALUES:,}; use a "
                          "smaller img_size, a larger patch_size, or a smaller embed_dim or "
                          "mlp_ratio")


def _tensor_values(op: Operator) -> int:
    """Values in the largest tensor ``op`` reads or writes, for one image."""
    return op.rows * max(op.cols, op.outputs) * op.repeats
