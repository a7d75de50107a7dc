"""The efficiency knobs a configuration turns on, in words, for results and reports.

Two families: *structural* knobs (token pruning, token merging, attention variants) do less work
through the same dense kernels, so every device runs them and the measured latency shows what they
are worth; *kernel* knobs (weight sparsity, precision) only pay off where the device has kernels
for them, which the device profile says (``BaseDevice.knob_support``).
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.config import CandidateConfig

KERNEL_KNOBS = ("weight_sparsity", "precision")
# The value of a kernel knob that needs no special kernel: always accelerated (it is the baseline).
BASELINE = {"weight_sparsity": "dense", "precision": "fp32"}


@dataclass(frozen=True)
class ActiveKnob:
    knob: str  # token_pruning, token_merging, attention, weight_sparsity, precision
    value: str  # the key's value (for kernel knobs) or a short description
    detail: str


def _blocks(numbers: list[int]) -> str:
    return ",".join(str(n) for n in numbers)


def _per_block(values: list[int]) -> str:
    return f"{values[0]} in every block" if len(set(values)) == 1 else f"per block {values}"


def active_knobs(config: CandidateConfig) -> list[ActiveKnob]:
    """Every knob ``config`` turns on, plus its precision (always present)."""
    blocks = range(config.depth)
    knobs = []
    pruning = [b + 1 for b in blocks if config.keep_rate_at(b) < 1]
    if pruning:
        rates = sorted({config.keep_rate_at(b - 1) for b in pruning})
        fused = "fused" if config.fuse_tokens else "dropped"
        knobs.append(ActiveKnob("token_pruning", "evit", f"keep_rate {'/'.join(map(str, rates))} "
                                f"at blocks {_blocks(pruning)}, pruned tokens {fused}"))
    merging = [config.merge_r_at(b) for b in blocks]
    if any(merging):
        merged = [counts.merged for counts in config.token_plan()]
        capped = "" if merged == merging else f", {_per_block(merged)} after ToMe's cap"
        knobs.append(ActiveKnob("token_merging", "tome", f"r {_per_block(merging)}{capped}"))
    variants = [config.attention_at(b) for b in blocks]
    if config.attention in ("window", "pooled") and config.attention not in variants:
        knobs.append(ActiveKnob("attention", config.attention, f"{config.attention} applies to no "
                                "block: tokens are reduced from block 1 on, so all are global"))
    for variant in sorted(set(variants) - {"global"}):
        size = config.window_size if variant == "window" else config.kv_pool
        where = [b + 1 for b in blocks if variants[b] == variant]
        knobs.append(ActiveKnob("attention", variant, f"{variant} ({size}) at blocks {_blocks(where)}"))
    if config.weight_sparsity != "dense":
        detail = "2 of every 4 weights zeroed" if config.weight_sparsity == "2:4" else (
            f"{config.block_sparsity:.0%} of {config.sparsity_block}x{config.sparsity_block} "
            f"blocks zeroed")
        knobs.append(ActiveKnob("weight_sparsity", config.weight_sparsity, detail))
    knobs.append(ActiveKnob("precision", config.precision, config.precision))
    return knobs
