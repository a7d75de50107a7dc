"""Accuracy estimators: the search's accuracy objective (higher is better).

Estimators plug in through ``BaseAccuracyEstimator`` and ``@register_estimator``; the command line
names them ``proxy:NAME``. The default is TF-TAS's DSS-indicator, a training-free score computed on
the real built model.
"""

from __future__ import annotations

import abc
import copy
import math
from typing import ClassVar

import torch

from harness.config import CandidateConfig
from harness.errors import ConfigError
from harness.models import VisionTransformer


class BaseAccuracyEstimator(abc.ABC):
    """Scores a built model; a higher score must mean a more accurate model is expected.

    Implementations are deterministic for a given model (same weights → same score) and must not
    change the model they are given.
    """

    name: ClassVar[str]
    description: ClassVar[str]

    @abc.abstractmethod
    def estimate(self, model: VisionTransformer, config: CandidateConfig) -> float:
        """The score of ``model``, built from ``config``."""


ESTIMATORS: dict[str, type[BaseAccuracyEstimator]] = {}


def register_estimator(cls: type[BaseAccuracyEstimator]) -> type[BaseAccuracyEstimator]:
    ESTIMATORS[f"proxy:{cls.name}"] = cls
    return cls


def get_estimator(spec: str) -> BaseAccuracyEstimator:
    if spec not in ESTIMATORS:
        raise ConfigError(f"unknown accuracy estimator {spec!r}; valid: {', '.join(ESTIMATORS)}")
    return ESTIMATORS[spec]()


@register_estimator
class DssIndicator(BaseAccuracyEstimator):
    """DSS-indicator of TF-TAS (Zhou et al., "Training-free Transformer Architecture Search",
    CVPR 2022), reported as log10.

    The network is linearised as in SynFlow (absolute weights, an all-ones image, float64) and the
    sum of its outputs back-propagated. Attention layers (qkv, proj) score their *synaptic
    diversity* ``‖∂L/∂W‖_nuc · ‖W‖_nuc``; MLP layers their *synaptic saliency* ``Σ|∂L/∂W ⊙ W|``.
    TF-TAS found it ranks AutoFormer-space ViTs by ImageNet accuracy far better than FLOPs or
    parameters, at the cost of one forward/backward pass.
    """

    name = "dss"
    description = "TF-TAS DSS-indicator (training-free, log10)"

    def estimate(self, model: VisionTransformer, config: CandidateConfig) -> float:
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
