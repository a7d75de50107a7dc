"""A pretrained checkpoint scored on your validation images, with every knob applied as measured:
top-1, and its change against the unmodified checkpoint with a paired 95% CI.

Training-free knobs (ToMe merging, EViT pruning, precision, magnitude sparsity) change a trained
model's accuracy; what a user needs is how much, and whether that is more than the luck of the
images. Every candidate is scored on the same decoded images as the unmodified model, so the
change is a paired comparison (McNemar, ``spread.paired_error``): only the images on which the
two disagree count.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch

from harness.accuracy.base import BaseAccuracyEstimator, ReportIntermediate
from harness.accuracy.spread import pack_correct, paired_error
from harness.accuracy.validation import ValidationImages
from harness.checkpoint import KNOBS_OFF, Checkpoint
from harness.config import CandidateConfig
from harness.core_sharing import share_cores
from harness.models import VisionTransformer, build_model
from harness.precision import convert_precision

EVAL_BATCH = 50


def untuned_knobs(config: CandidateConfig) -> list[str]:
    """The knobs of ``config`` that papers fine-tune after applying, labelled: scored on the
    checkpoint as it is, their accuracy loss is pessimistic."""
    keep = config.keep_rate if isinstance(config.keep_rate, tuple) else (config.keep_rate,)
    labels = []
    if any(rate < 1.0 for rate in keep):
        labels.append("EViT token pruning without fine-tuning (pessimistic)")
    if config.weight_sparsity != "dense":
        labels.append(f"{config.weight_sparsity} magnitude sparsity without fine-tuning "
                      "(pessimistic)")
    return labels


class PretrainedEstimator(BaseAccuracyEstimator):
    """Top-1 of the candidate, built on the checkpoint's weights, on the validation images."""

    kind = "pretrained"
    scores_as_measured = True

    def __init__(self, checkpoint: Checkpoint, data: ValidationImages) -> None:
        super().__init__(data.source)
        self.checkpoint = checkpoint
        self.data = data
        self._baseline: dict[CandidateConfig, torch.Tensor] = {}

    @property
    def description(self) -> str:
        return (f"top-1 on {len(self.data.labels)} of your validation images ({self.data.source})"
                f" with the weights of {self.checkpoint.path.name} (sha256 "
                f"{self.checkpoint.sha256[:12]}), every knob applied as measured, and its change "
                "against the unmodified checkpoint with a paired 95% CI")

    def estimate(self, model: VisionTransformer, config: CandidateConfig,
                 report: ReportIntermediate | None = None) -> float:
        return self.record(model, config, report)["value"]

    def record(self, model: VisionTransformer, config: CandidateConfig,
               report: ReportIntermediate | None = None) -> dict[str, Any]:
        correct = self.correct(model, config.precision)
        baseline = self.baseline(config)
        images = len(self.data.labels)
        delta = (int(correct.sum()) - int(baseline.sum())) / images
        error = paired_error(correct, baseline)
        return {"value": int(correct.sum()) / images, "top1": int(correct.sum()) / images,
                "delta_top1": delta, "ci95": [delta - error, delta + error],
                "baseline_top1": int(baseline.sum()) / images, "heldout_images": images,
                "heldout_correct": pack_correct(correct),
                "without_fine_tuning": untuned_knobs(config),
                "weights": self.checkpoint.describe(), "data": self.data.describe()}

    def baseline(self, config: CandidateConfig):
        """Which images the unmodified checkpoint gets right (its plain architecture, fp32)."""
        plain = config.replace(**KNOBS_OFF)
        if plain not in self._baseline:
            model = build_model(plain, shared_weights=self.checkpoint.tensors)
            self._baseline[plain] = self.correct(model, "fp32")
        return self._baseline[plain]

    @torch.no_grad()
    def correct(self, model: torch.nn.Module, precision: str):
        """Which validation images ``model`` in ``precision`` classifies correctly; ``model``
        itself is left as it was."""
        images, labels = self.data.images, self.data.labels
        if precision != "fp32":
            model, sample = convert_precision(copy.deepcopy(model), images[:1], precision)
        else:
            sample = images[:1]
        model.eval()
        right = []
        for start in range(0, len(labels), EVAL_BATCH):
            share_cores()
            logits = model(images[start:start + EVAL_BATCH].to(sample.dtype)).float()
            right.append(logits.argmax(dim=1) == labels[start:start + EVAL_BATCH])
        return torch.cat(right).numpy()

    def prepare(self, space, on_progress: Callable[[str], None] | None = None) -> None:
        """Nothing to prepare: the images are decoded and the checkpoint read already."""

    def metadata(self) -> dict[str, Any]:
        return {**super().metadata(), "weights": self.checkpoint.describe(),
                "data": self.data.describe()}
