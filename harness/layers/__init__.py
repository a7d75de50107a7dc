"""Efficiency knobs as small modules: a pure function does the work, a thin module wraps it."""

from harness.layers.token_pruning import TokenPruning, prune_tokens, tokens_after_pruning

__all__ = ["TokenPruning", "prune_tokens", "tokens_after_pruning"]
