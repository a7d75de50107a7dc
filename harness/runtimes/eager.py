"""PyTorch eager: the model as built and prepared by the device; every other runtime's reference."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from harness.config import CandidateConfig
from harness.runtimes.base import Runtime, register_runtime


@register_runtime
class EagerRuntime(Runtime):
    name = "eager"

    def build(self, model: nn.Module, inputs: torch.Tensor, config: CandidateConfig,
              threads: int) -> tuple[nn.Module, dict[str, Any]]:
        return model, {}
