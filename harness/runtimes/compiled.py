"""torch.compile with the inductor backend, as one graph (``fullgraph``): a graph break or a
recompilation past the limit raises, so a model never falls back to eager in silence."""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import nn

from harness.config import CandidateConfig
from harness.runtimes.base import Runtime, register_runtime

# Compiled models still referenced; when none is, dynamo's caches are cleared before the next
# compilation, so a long search does not pile up guards that every later call would check.
_LIVE: weakref.WeakSet[nn.Module] = weakref.WeakSet()


@register_runtime
class CompileRuntime(Runtime):
    name = "compile"

    def refusal(self, config: CandidateConfig, device_kind: str) -> str | None:
        if config.compile_mode == "reduce-overhead" and device_kind != "cuda":
            return "compile_mode reduce-overhead records CUDA graphs, which need a CUDA device"
        return None

    def build(self, model: nn.Module, inputs: torch.Tensor, config: CandidateConfig,
              threads: int) -> tuple[nn.Module, dict[str, Any]]:
        if not _LIVE:
            torch._dynamo.reset()
        torch._dynamo.config.fail_on_recompile_limit_hit = True
        compiled = torch.compile(model, mode=config.compile_mode, fullgraph=True, dynamic=False)
        _LIVE.add(compiled)
        return compiled, {"backend": "inductor", "mode": config.compile_mode, "fullgraph": True,
                          "torch": torch.__version__}
