"""``train:DATASET[@BUDGET]``: train the candidate briefly from scratch on real images and score it
by its top-1 accuracy on a held-out split.

A proxy ranks architectures without training; this estimator measures what a short training run
actually reaches, knobs included: token pruning and merging act during training, and weight
sparsity is re-imposed after every step, so the model evaluated is exactly as sparse as the one
deployed. The budget is ``@Nsteps`` (default ``@200steps``: deterministic for a seed), ``@Ns``
(seconds of training: comparable wall time across candidates, but not reproducible) or
``@plateau`` (until the loss on a validation part of the training split stops improving:
deterministic for a seed, and a reference for validating cheaper estimators, see below).

Recipe: AdamW (lr 1e-3, weight decay 0.05), 10% linear warm-up then cosine decay, gradient norm
clipped at 1, batch 32, images reshuffled every epoch. At equal wall time on a 2-core CPU, batch
32 for 200 steps beat batch 64 for 100 steps (62% against 45-56% held-out on MNIST for a
DeiT-Tiny shape), which is why the batch is smaller than the usual 64.

``@plateau`` keeps this recipe but its schedule: cosine decay needs its horizon in advance, and a
run stopped early on it would be scored at a high learning rate, never annealed, so architectures
that plateau early would be penalised for it. Instead the learning rate is held after the
warm-up and lowered tenfold when the validation loss stops improving (reduce on plateau), and the
run stops when it stops improving at the lowered rate: each architecture is annealed at its own
pace. The validation images are carved from the training split, per class and by the seed; the
held-out split is read once, for the score.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F

from harness.accuracy.base import BaseAccuracyEstimator, ReportIntermediate, register_estimator_kind
from harness.accuracy.datasets import Dataset, load_dataset, split_per_class, valid_datasets
from harness.config import GRID_ATTENTION, CandidateConfig
from harness.core_sharing import share_cores
from harness.errors import ConfigError
from harness.layers import sparsify_linears
from harness.models import VisionTransformer, build_model
from harness.tokens import merge_schedule

DEFAULT_BUDGET = "200steps"
BATCH_SIZE = 32
LEARNING_RATE = 1e-3
WEIGHT_DECAY = 0.05
WARMUP_FRACTION = 0.1
EVAL_BATCH = 500
# Intermediate evaluations, as fractions of the budget, reported so that a study can prune.
REPORT_AT = (0.25, 0.5, 0.75)
_BUDGET = re.compile(r"(?P<amount>\d+)(?P<unit>steps|s)|plateau")

# @plateau keeps BATCH_SIZE, so it differs from @Nsteps in schedule and length and in the images
# it sets aside: a tenth of the training split per class is enough to see the loss move (6,000
# Fashion-MNIST images) and leaves 90% of the images to train on.
PLATEAU_VALIDATION_FRACTION = 0.1
# Steps between validation losses, and the length of the linear warm-up (so every evaluation after
# the first sees the full rate): 6,400 images, 1.8 epochs of MNIST's 3,600 training images, 0.1 of
# Fashion-MNIST; 20-25 s for a DeiT-Tiny shape on a 2-core CPU.
PLATEAU_EVAL_EVERY = 200
# Evaluations without an improvement before the rate drops or training stops: 400 steps, so one
# unlucky stretch of batches is not taken for a plateau.
PLATEAU_PATIENCE = 2
# An improvement must lower the best validation loss by more than 1% of it, so that a run creeping
# down by a fraction of a percent per evaluation counts as being on its plateau.
PLATEAU_TOLERANCE = 0.01
# The rate's factor at the first plateau, after which the next plateau ends the run: one drop
# anneals it; each further drop would cost at least another PATIENCE evaluations.
PLATEAU_LR_DROP = 0.1
# Bounds a run that never plateaus: 2,000 steps, 18 epochs of MNIST's training images (where a
# DeiT-Tiny shape reaches 85-88% and creeps on), about 4 min for it on a 2-core CPU, so that a
# 30-architecture check with its noise ceiling fits a couple of hours.
PLATEAU_MAX_STEPS = 2_000


def _nearest_divisor(n: int, target: float) -> int:
    """The divisor of ``n`` closest to ``target``, the smaller on a tie."""
    return min((d for d in range(1, n + 1) if n % d == 0), key=lambda d: (abs(d - target), d))


def training_config(config: CandidateConfig, dataset: Dataset) -> CandidateConfig:
    """``config`` at the dataset's image size, patch size and class count, the architecture and
    knobs kept; knobs that depend on the patch grid are adapted minimally:

    * ``merge_r`` is lowered until no block is asked to merge more than half the patch tokens
      (ToMe's own cap, which the configuration enforces);
    * ``window_size`` keeps the number of windows per side of the grid (7 of a 14×14 grid, two
      windows per side, becomes 2 of a 4×4 grid), so windowed attention stays local;
    * ``kv_pool`` keeps its stride if it divides the new grid, else the nearest divisor.

    Raises ``ConfigError`` if the candidate still cannot be built at the dataset's token count.
    """
    grid = dataset.img_size // dataset.patch_size
    old_grid = config.img_size // config.patch_size
    changes: dict[str, object] = {
        "img_size": dataset.img_size, "patch_size": dataset.patch_size,
        "num_classes": dataset.num_classes,
    }
    half = grid * grid // 2
    if isinstance(config.merge_r, tuple):
        changes["merge_r"] = [min(r, half) for r in config.merge_r]
    else:
        # the largest r whose schedule merges at most half in every block (a decreasing schedule
        # merges 1.5·r in the first)
        changes["merge_r"] = next(
            r for r in range(config.merge_r, -1, -1)
            if max(merge_schedule(r, config.depth, config.merge_schedule)) <= half)
    used = {config.attention_at(block) for block in range(config.depth)} & set(GRID_ATTENTION)
    if "window" in used:
        changes["window_size"] = _nearest_divisor(
            grid, grid / (old_grid // config.window_size))
    if "pooled" in used and grid % config.kv_pool:
        changes["kv_pool"] = _nearest_divisor(grid, config.kv_pool)
    try:
        return config.replace(**changes)
    except ConfigError as error:
        raise ConfigError(f"cannot train configuration {config.key()} on {dataset.name} "
                          f"({grid}x{grid} patches): {error}") from None


def _batches(count: int, size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Indices of training batches forever: a fresh permutation each epoch, the ragged end of an
    epoch dropped so that every step sees ``size`` images."""
    while True:
        order = torch.randperm(count, generator=generator)
        for start in range(0, count - size + 1, size):
            yield order[start:start + size]


@torch.no_grad()
def loss_and_top1(model: VisionTransformer, images: torch.Tensor,
                  labels: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy of ``model`` on ``images`` and the fraction whose highest logit is their
    label."""
    model.eval()
    loss, correct = 0.0, 0
    for i in range(0, len(images), EVAL_BATCH):
        share_cores()
        logits = model(images[i:i + EVAL_BATCH])
        loss += float(F.cross_entropy(logits, labels[i:i + EVAL_BATCH], reduction="sum"))
        correct += int((logits.argmax(dim=1) == labels[i:i + EVAL_BATCH]).sum())
    model.train()
    return loss / len(images), correct / len(images)


def top1(model: VisionTransformer, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of ``images`` whose highest logit is their label."""
    return loss_and_top1(model, images, labels)[1]


class TrainingEstimator(BaseAccuracyEstimator):
    """Held-out top-1 after training from scratch for a step or time budget, or to a plateau:
    ``train:mnist``, ``train:digits@500steps``, ``train:imagefolder:/data/pets@120s``,
    ``train:fashion-mnist@plateau``."""

    kind = "train"

    def __init__(self, argument: str, seed: int = 0) -> None:
        dataset_name, budget = argument, DEFAULT_BUDGET
        head, at, tail = argument.rpartition("@")
        if at and _BUDGET.fullmatch(tail):
            dataset_name, budget = head, tail
        elif at and not argument.startswith("imagefolder:"):  # a folder's name may hold an "@"
            raise ConfigError(f"train:{argument}: budget must be Nsteps, Ns (seconds) or plateau, "
                              f"e.g. train:{head}@{DEFAULT_BUDGET}, train:{head}@60s or "
                              f"train:{head}@plateau")
        match = _BUDGET.fullmatch(budget)
        self.to_plateau = budget == "plateau"
        self.amount = None if self.to_plateau else int(match["amount"])
        self.by_time = not self.to_plateau and match["unit"] == "s"
        if self.amount == 0:
            raise ConfigError(f"train:{argument}: the budget must be positive")
        super().__init__(f"{dataset_name}@{budget}")
        self.seed = seed
        # Loaded now, so a missing package or folder fails before a study starts.
        self.dataset = load_dataset(dataset_name, seed)
        # Positions in the training split to train on: all of it, or what validation leaves.
        # Batches index the split through them, so grey images stay a view (not copied).
        self.trained_on = torch.arange(len(self.dataset.train_labels))
        if self.to_plateau:
            kept, validation = split_per_class(self.dataset.train_labels.numpy(),
                                               PLATEAU_VALIDATION_FRACTION, seed)
            if len(validation) == 0:
                raise ConfigError(f"train:{argument}: too few training images "
                                  f"({len(self.dataset.train_labels)}) to set "
                                  f"{PLATEAU_VALIDATION_FRACTION:.0%} aside for validation")
            self.trained_on = torch.from_numpy(kept)
            self.validation_images = self.dataset.train_images[validation]
            self.validation_labels = self.dataset.train_labels[validation]

    @property
    def description(self) -> str:
        held_out = f"top-1 on {len(self.dataset.test_labels)} held-out {self.dataset.title} images"
        if self.to_plateau:
            return (f"{held_out} after training from scratch until the loss on "
                    f"{len(self.validation_labels)} validation images of the training split "
                    f"stopped improving (at most {PLATEAU_MAX_STEPS} steps; AdamW, batch "
                    f"{BATCH_SIZE})")
        budget = (f"{self.amount} s" if self.by_time else f"{self.amount} steps")
        return (f"{held_out} after {budget} of training from scratch (AdamW, batch "
                f"{BATCH_SIZE})")

    def with_seed(self, seed: int) -> TrainingEstimator:
        return TrainingEstimator(self.argument, seed)

    def metadata(self) -> dict[str, Any]:
        plateau = {"validation_fraction": PLATEAU_VALIDATION_FRACTION,
                   "eval_every": PLATEAU_EVAL_EVERY, "patience": PLATEAU_PATIENCE,
                   "tolerance": PLATEAU_TOLERANCE, "lr_drop": PLATEAU_LR_DROP,
                   "max_steps": PLATEAU_MAX_STEPS,
                   # runs that reach the cap are annealed before it (not so before 2026-12-02)
                   "annealed_before_cap": True}
        return {**super().metadata(), "seed": self.seed, "batch_size": BATCH_SIZE,
                **({"plateau": plateau} if self.to_plateau else {})}

    def estimate(self, model: VisionTransformer, config: CandidateConfig,
                 report: ReportIntermediate | None = None) -> float:
        """Train a fresh seeded model of ``config`` (``model`` is built for other images; see
        ``training_config``) and return its held-out top-1 in [0, 1]. ``report(step, accuracy)``
        is called at a quarter, half and three quarters of a step or time budget (held-out top-1),
        or at every evaluation but the last of ``@plateau`` (validation top-1); what it raises
        stops the training and propagates."""
        return self.record(model, config, report)["value"]

    def record(self, model: VisionTransformer, config: CandidateConfig,
               report: ReportIntermediate | None = None) -> dict[str, Any]:
        """``value``: the score of ``estimate``; ``steps``: the training steps it took; for
        ``@plateau``, ``stopped``: ``plateau`` or ``max steps``."""
        config, data = training_config(config, self.dataset), self.dataset
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            trained = build_model(config, seed=self.seed).train()
            optimizer = torch.optim.AdamW(trained.parameters(), lr=LEARNING_RATE,
                                          weight_decay=WEIGHT_DECAY)
            generator = torch.Generator().manual_seed(self.seed)
            batches = _batches(len(self.trained_on), min(BATCH_SIZE, len(self.trained_on)),
                               generator)

            def train_step(lr: float) -> None:
                share_cores()
                for group in optimizer.param_groups:
                    group["lr"] = lr
                indices = self.trained_on[next(batches)]
                loss = F.cross_entropy(trained(data.train_images[indices]),
                                       data.train_labels[indices])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trained.parameters(), 1.0)
                optimizer.step()
                if config.weight_sparsity != "dense":
                    sparsify_linears(trained.blocks, config.weight_sparsity,
                                     config.sparsity_block, config.block_sparsity)

            if self.to_plateau:
                steps, stopped = self._train_to_plateau(trained, train_step, report)
                extra = {"steps": steps, "stopped": stopped}
            else:
                extra = {"steps": self._train_for_budget(trained, train_step, report)}
            return {"value": top1(trained, data.test_images, data.test_labels), **extra}

    def _train_for_budget(self, trained: VisionTransformer, train_step: Callable[[float], None],
                          report: ReportIntermediate | None) -> int:
        """Train for the step or time budget on the warm-up and cosine schedule; the steps."""
        reports = list(REPORT_AT)
        step, trained_s, last_step_s = 0, 0.0, 0.0
        while (trained_s if self.by_time else step) < self.amount:
            # the schedule at the middle of the step, so neither the first nor the last step runs
            # at a learning rate of zero
            middle = (trained_s + last_step_s / 2) if self.by_time else step + 0.5
            start = time.perf_counter()
            train_step(LEARNING_RATE * learning_rate_factor(min(middle / self.amount, 1.0)))
            last_step_s = time.perf_counter() - start
            trained_s += last_step_s
            step += 1
            done = (trained_s if self.by_time else step) / self.amount
            while reports and done >= reports[0]:
                reports.pop(0)
                if report is not None and done < 1:
                    report(step, top1(trained, self.dataset.test_images,
                                      self.dataset.test_labels))
        return step

    def _train_to_plateau(self, trained: VisionTransformer, train_step: Callable[[float], None],
                          report: ReportIntermediate | None) -> tuple[int, str]:
        """Train until the validation loss has not improved by more than ``PLATEAU_TOLERANCE``
        for ``PLATEAU_PATIENCE`` evaluations at the lowered rate, or for ``PLATEAU_MAX_STEPS``
        (the rate lowered for the last ``PLATEAU_PATIENCE`` evaluation intervals if no plateau
        lowered it before); the steps and why training stopped."""
        rate, lowered = LEARNING_RATE, False
        best, stale = math.inf, 0
        # A run that has not plateaued by then is annealed over the steps its lowered rate would
        # have had, so every run is scored annealed: in the first MNIST rank check all 30
        # architectures reached the step cap without a plateau, and were scored at full rate.
        anneal_from = PLATEAU_MAX_STEPS - PLATEAU_PATIENCE * PLATEAU_EVAL_EVERY
        for step in range(1, PLATEAU_MAX_STEPS + 1):
            if not lowered and step > anneal_from:
                rate, lowered, stale = rate * PLATEAU_LR_DROP, True, 0
            # linear warm-up over the first interval, at the middle of the step as above
            train_step(rate * min((step - 0.5) / PLATEAU_EVAL_EVERY, 1.0))
            if step % PLATEAU_EVAL_EVERY:
                continue
            loss, accuracy = loss_and_top1(trained, self.validation_images,
                                           self.validation_labels)
            if loss < best * (1 - PLATEAU_TOLERANCE):
                best, stale = loss, 0
            else:
                stale += 1
            if stale == PLATEAU_PATIENCE:
                if lowered:
                    return step, "plateau"
                rate, lowered, stale = rate * PLATEAU_LR_DROP, True, 0
            if report is not None and step < PLATEAU_MAX_STEPS:
                report(step, accuracy)
        return PLATEAU_MAX_STEPS, "max steps"


def learning_rate_factor(progress: float) -> float:
    """Learning-rate factor at ``progress`` in [0, 1] of the budget: linear warm-up, then cosine
    decay to zero. A function of progress rather than of the step, so a time budget uses it too."""
    if progress < WARMUP_FRACTION:
        return progress / WARMUP_FRACTION
    return 0.5 * (1 + math.cos(math.pi * (progress - WARMUP_FRACTION) / (1 - WARMUP_FRACTION)))


@register_estimator_kind(
    "train", lambda: f"train:DATASET[@Nsteps|@Ns|@plateau] (DATASET: {valid_datasets()}; "
                     f"default @{DEFAULT_BUDGET})")
def make_training_estimator(argument: str) -> TrainingEstimator:
    return TrainingEstimator(argument)
