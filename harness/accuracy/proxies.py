"""Training-free proxies: ``proxy:NAME`` scores the real built model in one or two passes.

Proxies register with ``@register_proxy``. ``dss`` is TF-TAS's DSS-indicator (a search's
default is the supernet, ``supernet:mnist``); ``params`` and ``gmacs`` are the baselines zero-cost proxy papers compare with, and
``naswot``, ``synflow`` and ``gradnorm`` the zero-cost proxies TF-TAS and ZiCo compare against.

The data-based proxies (``naswot``, ``gradnorm``) feed Gaussian images from a fixed-seed generator:
a search needs no dataset, and a fixed batch makes a score a function of the model alone.
"""

from __future__ import annotations

import copy
import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from harness.accuracy.base import (
    BaseAccuracyEstimator,
    ReportIntermediate,
    register_estimator_kind,
    valid_estimators,
)
from harness.config import CandidateConfig
from harness.cost import estimate_cost
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


def _weighted_layers(model: nn.Module) -> list[nn.Module]:
    """Every Linear and the patch-embedding convolution (a Linear applied to patches): the layers
    whose weights SynFlow and grad-norm score, as the zero-cost proxies' reference code does."""
    return [layer for layer in model.modules() if isinstance(layer, (nn.Linear, nn.Conv2d))]


def _linearised(model: VisionTransformer, config: CandidateConfig) -> VisionTransformer:
    """SynFlow's linearisation as TF-TAS applies it to ViTs: a float64 copy of ``model`` with
    absolute parameters, after the sum of its output on one all-ones image has been
    back-propagated, so each weight's ``.grad`` holds ∂R/∂θ.

    LayerNorms stay, as in TF-TAS: the vectors they normalise are not constant (patch and position
    embeddings differ per channel), so they are well defined. Without them (the identity, as
    SynFlow's eval-mode BatchNorm is at initialisation) activations grow a few hundredfold per block
    and attention, quadratic in its weights, drives DeiT-Tiny's SynFlow to ~1e257 and DeiT-Small's
    past float64 (NaN).

    On an all-ones image the patch tokens differ only by their position embeddings, so EViT
    pruning and ToMe merging drop or average near-copies: scores from this pass barely see token
    reduction (DeiT-Tiny's DSS and SynFlow move in the fifth digit with ``merge_r`` = 8).
    """
    linearised = copy.deepcopy(model).double()
    with torch.no_grad():
        for parameter in linearised.parameters():
            parameter.abs_()
    images = torch.ones(1, 3, config.img_size, config.img_size, dtype=torch.float64)
    linearised(images).sum().backward()
    return linearised


# Batch of the data-based proxies: NASWOT's kernel is BATCH×BATCH; 8 keeps DeiT-Tiny under ~2 s.
BATCH = 8
SEED = 0


def _gaussian_images(config: CandidateConfig, generator: torch.Generator) -> torch.Tensor:
    """``BATCH`` standard-normal images: the statistics of normalised ImageNet inputs."""
    return torch.randn(BATCH, 3, config.img_size, config.img_size, generator=generator)


@register_proxy
class DssIndicator(Proxy):
    """DSS-indicator of TF-TAS (Zhou et al., "Training-free Transformer Architecture Search",
    CVPR 2022), reported as log10.

    The network is linearised as in SynFlow (``_linearised``: absolute weights, an all-ones image,
    float64) and the sum of its outputs back-propagated. Attention layers (qkv or q and kv, proj)
    score their *synaptic diversity* ``‖∂L/∂W‖_nuc · ‖W‖_nuc``; MLP layers their *synaptic
    saliency* ``Σ|∂L/∂W ⊙ W|``. TF-TAS found it ranks AutoFormer-space ViTs by ImageNet accuracy
    far better than FLOPs or parameters, at the cost of one forward/backward pass.
    """

    name = "dss"
    summary = "TF-TAS DSS-indicator (training-free, log10)"

    def estimate(self, model: VisionTransformer, config: CandidateConfig,
                 report: ReportIntermediate | None = None) -> float:
        linearised = _linearised(model, config)
        score = torch.zeros((), dtype=torch.float64)
        with torch.no_grad():
            for block in linearised.blocks:
                for layer in block.attn.modules():
                    if isinstance(layer, nn.Linear):
                        score += (torch.linalg.matrix_norm(layer.weight.grad, "nuc")
                                  * torch.linalg.matrix_norm(layer.weight, "nuc"))
                for layer in (block.mlp.fc1, block.mlp.fc2):
                    score += (layer.weight.grad * layer.weight).abs().sum()
        return math.log10(float(score))


@register_proxy
class Params(Proxy):
    """Parameter count of the built model in millions: the baseline every zero-cost proxy paper
    compares with. Pruned (zeroed) weights still count; token reduction has no parameters."""

    name = "params"
    summary = "parameter count (millions; baseline)"

    def estimate(self, model: VisionTransformer, config: CandidateConfig,
                 report: ReportIntermediate | None = None) -> float:
        return sum(parameter.numel() for parameter in model.parameters()) / 1e6


@register_proxy
class Gmacs(Proxy):
    """GMACs per image, ``estimate_cost(config).gmacs``: the FLOPs baseline of zero-cost proxy
    papers. Unlike ``params`` it sees token pruning and merging, which the configuration carries;
    it counts the MACs of zeroed weights (dense MACs)."""

    name = "gmacs"
    summary = "GMACs per image (baseline)"

    def estimate(self, model: VisionTransformer, config: CandidateConfig,
                 report: ReportIntermediate | None = None) -> float:
        return estimate_cost(config).gmacs


@register_proxy
class Naswot(Proxy):
    """NASWOT (Mellor et al., "Neural Architecture Search without Training", ICML 2021), with
    GELU in place of ReLU.

    ``BATCH`` = 8 fixed-seed Gaussian images (a search has no dataset) go through the model. Each
    GELU's pre-activation (the output of every block's ``mlp.fc1``) is binarised as ``x > 0``; an
    image's code ``c`` is the concatenation of these bits over every hidden unit of every token of
    every block. The kernel ``K = c·cᵀ + (1−c)·(1−c)ᵀ`` counts, for each pair of images, the units
    whose codes agree (code length minus Hamming distance); the score is ``log|det K|``. Every
    token is kept, as the paper keeps every spatial position of a CNN's feature maps: the class
    token alone would drop the patch tokens the MLPs mostly work on, and averaging codes over
    tokens would no longer give a Hamming kernel. Tokens removed by pruning or merging contribute
    no bits, so token reduction lowers the score. Higher when the network separates images into
    more distinct activation patterns.
    """

    name = "naswot"
    summary = "NASWOT log|det| of the GELU-code Hamming kernel (8 Gaussian images)"

    def kernel(self, model: VisionTransformer, config: CandidateConfig) -> torch.Tensor:
        """The BATCH×BATCH float64 kernel ``K`` of the docstring."""
        kernel = torch.zeros(BATCH, BATCH, dtype=torch.float64)

        def accumulate(layer: nn.Module, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
            # Block by block, so the concatenated code never exists. (1−c)·(1−c)ᵀ expands to
            # L − s_i − s_j + c·cᵀ (s: each image's count of ones): one matmul instead of two.
            # float32 sums of 0/1 products are exact below 2**24 units; longer codes need float64.
            codes = (output > 0).flatten(1)
            codes = codes.float() if codes.shape[1] < 2**24 else codes.double()
            ones = codes.sum(dim=1, dtype=torch.float64)
            agree = 2 * (codes @ codes.T).double() - ones[:, None] - ones[None, :] + codes.shape[1]
            kernel.add_(agree)

        hooked = copy.deepcopy(model)  # the hooks go on a copy: the caller's model stays as it is
        for block in hooked.blocks:
            block.mlp.fc1.register_forward_hook(accumulate)
        with torch.inference_mode():
            hooked(_gaussian_images(config, torch.Generator().manual_seed(SEED)))
        return kernel

    def estimate(self, model: VisionTransformer, config: CandidateConfig,
                 report: ReportIntermediate | None = None) -> float:
        return float(torch.linalg.slogdet(self.kernel(model, config)).logabsdet)


@register_proxy
class SynFlow(Proxy):
    """SynFlow (Tanaka et al., "Pruning neural networks without any data by iteratively conserving
    synaptic flow", NeurIPS 2020), the zero-cost baseline of TF-TAS and ZiCo, reported as log10.

    On the network linearised as TF-TAS does (``_linearised``: float64, absolute parameters,
    LayerNorms kept, one all-ones image, ``R`` = the sum of the outputs), the score is
    ``log10 Σ |θ ⊙ ∂R/∂θ|`` over the weights of every Linear and of the patch embedding. It is the
    DSS-indicator without its nuclear-norm treatment of attention, from the same backward pass.
    """

    name = "synflow"
    summary = "SynFlow synaptic saliency (training-free, log10)"

    def estimate(self, model: VisionTransformer, config: CandidateConfig,
                 report: ReportIntermediate | None = None) -> float:
        linearised = _linearised(model, config)
        with torch.no_grad():
            score = sum((layer.weight * layer.weight.grad).abs().sum()
                        for layer in _weighted_layers(linearised))
        return math.log10(float(score))


@register_proxy
class GradNorm(Proxy):
    """grad-norm (Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS", ICLR 2021),
    reported as log10.

    The cross-entropy of the model's logits on ``BATCH`` = 8 fixed-seed Gaussian images against
    fixed-seed uniformly random labels is back-propagated once (fp32, on a copy of the model); the
    score is ``log10 Σ ‖∂L/∂W‖₂`` over the weights of every Linear and of the patch embedding, as
    the paper's code sums the gradient norms of its Linear and convolution layers.
    """

    name = "gradnorm"
    summary = "grad-norm: summed weight-gradient L2 norms (8 Gaussian images, log10)"

    def estimate(self, model: VisionTransformer, config: CandidateConfig,
                 report: ReportIntermediate | None = None) -> float:
        generator = torch.Generator().manual_seed(SEED)
        images = _gaussian_images(config, generator)
        labels = torch.randint(config.num_classes, (BATCH,), generator=generator)
        network = copy.deepcopy(model)  # backward fills .grad: keep it off the caller's model
        F.cross_entropy(network(images), labels).backward()
        with torch.no_grad():
            score = sum(layer.weight.grad.norm() for layer in _weighted_layers(network))
        return math.log10(float(score))
