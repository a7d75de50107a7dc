"""Training-free proxies: ``proxy:NAME`` scores the real built model in one or two passes.

Proxies register with ``@register_proxy``. The default estimator of a search is TF-TAS's
DSS-indicator.
"""

from __future__ import annotations

import copy
import math
from typing import ClassVar

import torch

from harness.accuracy.base import (
    BaseAccuracyEstimator,
    ReportIntermediate,
    register_estimator_kind,
    valid_estimators,
)
from harness.config import CandidateConfig
from harness.errors import ConfigError
from harness.models import VisionTransformer


class Proxy(BaseAccuracyEstimator):
    """A training-free score of the built model: ``proxy:NAME``."""

    kind = "proxy"
    name: ClassVar[str]
    summary: ClassVar[str]

    def __init__(self, argument: str | None = None) -> None:
        super().__init__(self.name)

    @property
    def description(self) -> str:
        return self.summary


PROXIES: dict[str, type[Proxy]] = {}


def register_proxy(cls: type[Proxy]) -> type[Proxy]:
    PROXIES[cls.name] = cls
    return cls


@register_estimator_kind("proxy", lambda: f"proxy:NAME ({', '.join(PROXIES)})")
def make_proxy(name: str) -> Proxy:
    if name not in PROXIES:
        raise ConfigError(f"unknown accuracy estimator 'proxy:{name}'; valid: "
                          f"{valid_estimators()}")
    return PROXIES[name]()


@register_proxy
class DssIndicator(Proxy):
    """DSS-indicator of TF-TAS (Zhou et al., "Training-free Transformer Architecture Search",
    CVPR 2022), reported as log10.

    The network is linearised as in SynFlow (absolute weights, an all-ones image, float64) and the
    sum of its outputs back-propagated. Attention layers (qkv, proj) score their *synaptic
    diversity* ``‖∂L/∂W‖_nuc · ‖W‖_nuc``; MLP layers their *synaptic saliency* ``Σ|∂L/∂W ⊙ W|``.
    TF-TAS found it ranks AutoFormer-space ViTs by ImageNet accuracy far better than FLOPs or
    parameters, at the cost of one forward/backward pass.
    """

    name = "dss"
    summary = "TF-TAS DSS-indicator (training-free, log10)"

    def estimate(self, model: VisionTransformer, config: CandidateConfig,
                 report: ReportIntermediate | None = None) -> float:
        linearised = copy.deepcopy(model).double()
        with torch.no_grad():
            for parameter in linearised.parameters():
                parameter.abs_()
        images = torch.ones(1, 3, config.img_size, config.img_size, dtype=torch.float64)
        linearised(images).sum().backward()
        score = torch.zeros((), dtype=torch.float64)
        with torch.no_grad():
            for block in linearised.blocks:
                for layer in (block.attn.qkv, block.attn.proj):
                    score += torch.linalg.matrix_norm(layer.weight.grad, "nuc") * torch.linalg.matrix_norm(
                        layer.weight, "nuc"
                    )
                for layer in (block.mlp.fc1, block.mlp.fc2):
                    score += (layer.weight.grad * layer.weight).abs().sum()
        return math.log10(float(score))
