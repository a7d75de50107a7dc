"""``supernet:DATASET[@BUDGET][@seedK]``: a weight-sharing supernet, trained once per space and
data, scores every candidate with the weights it inherits, in about a second.

The supernet is the space's largest configuration at the dataset's image size (as in
``training.py``: a 4×4 patch grid); every candidate is the leading slice of its weights
(``models.leading_slice``, AutoFormer's weight entanglement). Training follows the sandwich rule
(BigNAS, AttentiveNAS): each step trains the largest, the smallest and ``RANDOM_PER_STEP`` random
sub-networks on one batch, their gradients summed into the shared weights. The random ones are
drawn from the space with their token knobs (keep rate, merge rate, attention variant), so token
reduction is trained rather than only tolerated; precision and weight sparsity are applied when a
candidate is scored, to the weights it inherits, exactly as it is measured (int8 is scored as int8).

A trained supernet is kept in ``$HARNESS_DATA_DIR/supernets/`` under a key of what it was
trained on (the space's trained keys, the dataset, the budget, the seed, the harness version and
this recipe's ``RECIPE_VERSION``) with its training log; later searches on the same space and data,
for any budget or device, reuse it. Training checkpoints every ``CHECKPOINT_EVERY_S`` seconds,
written atomically, and an interrupted training resumes from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import math
import pickle
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call

import harness
from harness.accuracy.base import BaseAccuracyEstimator, ReportIntermediate, register_estimator_kind
from harness.accuracy.datasets import Dataset, load_dataset, valid_datasets
from harness.accuracy.spread import pack_correct
from harness.accuracy.training import (
    LEARNING_RATE,
    WEIGHT_DECAY,
    learning_rate_factor,
    training_config,
)
from harness.config import CandidateConfig
from harness.core_sharing import share_cores
from harness.cost import estimate_cost
from harness.errors import ConfigError, FileError, shorten
from harness.files import data_home, make_dir, read_bytes, read_text, safe_name, write_atomically
from harness.layers import sparsify_linears
from harness.models import VisionTransformer, build_model, leading_slice
from harness.precision import convert_precision
from harness.records import SCHEMA_VERSION, RecordError, migrate, register_migrations, unchanged
from harness.space import SearchSpace

# Bump when the training recipe changes: supernets of another recipe are then not reused.
# 2: the random sub-networks are drawn from the trained keys only (in 1, pinning an untrained key
# such as precision changed the draws, so two trainings under one key could differ).
RECIPE_VERSION = 2
DEFAULT_BUDGET = "500steps"
BATCH_SIZE = 32  # as short training: at equal time on 2 cores, smaller batches trained better
RANDOM_PER_STEP = 2  # random sub-networks per step, besides the largest and the smallest
CHECKPOINT_EVERY_S = 30.0
LOG_EVERY = 10  # steps between two entries of the training log
SCORE_IMAGES = 1000  # held-out images a candidate is scored on: ±1.3 points of top-1 at 80%
EVAL_BATCH = 250
# Keys whose choices shape what the supernet learns; the others (precision, weight sparsity,
# image and patch size, classes) are replaced by the dataset's or applied when scoring.
TRAINED_KEYS = ("embed_dim", "depth", "num_heads", "mlp_ratio", "head_dim", "keep_rate",
                "keep_layers", "fuse_tokens", "merge_r", "merge_schedule", "attention",
                "window_size", "kv_pool")
# What training ignores: applied to the inherited weights when a candidate is scored.
_SCORED_ONLY = {"precision": "fp32", "weight_sparsity": "dense", "runtime": "eager"}
_BUDGET = re.compile(r"(?P<amount>\d+)(?P<unit>steps|s)")
_SEED = re.compile(r"seed(?P<seed>\d+)")
RECORD_KIND = "harness-supernet"
register_migrations("supernet", {1: unchanged})


class SupernetError(ConfigError):
    """A supernet cannot be trained, or its cache cannot be used."""


@dataclass(frozen=True)
class SupernetSpec:
    """What a supernet is trained on; ``key`` names it in the cache."""

    space: SearchSpace
    dataset: str
    budget: str  # "600steps" or "300s"
    seed: int = 0

    @property
    def amount(self) -> int:
        return int(_BUDGET.fullmatch(self.budget)["amount"])

    @property
    def by_time(self) -> bool:
        return self.budget.endswith("s") and not self.budget.endswith("steps")

    def trained_space(self) -> dict[str, Any]:
        """The space as training sees it: its trained keys and their choices."""
        return {key: {"choices": [list(c) if isinstance(c, tuple) else c for c in dim.choices],
                      "per_layer": dim.per_layer}
                for key, dim in sorted(self.space.dimensions.items()) if key in TRAINED_KEYS}

    def key_fields(self) -> dict[str, Any]:
        return {"space": self.trained_space(), "dataset": self.dataset, "budget": self.budget,
                "seed": self.seed, "harness_version": harness.__version__,
                "recipe_version": RECIPE_VERSION}

    @property
    def key(self) -> str:
        canonical = json.dumps(self.key_fields(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    @property
    def folder(self) -> Path:
        return supernets_dir() / (safe_name(f"{self.space.name}-{self.dataset}") + f"-{self.key}")


def supernets_dir() -> Path:
    return data_home() / "supernets"


@dataclass(frozen=True)
class TrainingProgress:
    step: int
    steps: int | None  # None: a time budget
    elapsed_s: float
    remaining_s: float | None
    loss: float  # mean loss of the last step's sub-networks
    resumed_from: int  # the step a checkpoint resumed from (0: a fresh start)


@dataclass(frozen=True)
class SupernetRecord:
    """A trained supernet: where it came from, how it trained, where its weights are."""

    key: str
    space: str
    trained_space: dict[str, Any]
    dataset: str
    dataset_title: str
    budget: str
    seed: int
    steps: int
    trained_s: float
    config: dict[str, Any]  # the supernet's own configuration (the space's largest, at the data's size)
    params_m: float
    log: list[dict[str, float]]
    heldout: dict[str, float]  # top-1 of the largest and the smallest sub-network
    harness_version: str
    recipe_version: int
    created: str
    kind: str = RECORD_KIND
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> dict[str, Any]:
        """What a study and a report say about the supernet (no log)."""
        return {key: value for key, value in self.to_dict().items()
                if key not in ("log", "trained_space", "kind", "schema_version")}

    @classmethod
    def from_json(cls, text: str, where: str) -> SupernetRecord:
        try:
            values = json.loads(text)
            if values.get("kind") != RECORD_KIND:
                raise ValueError(f"kind {values.get('kind')!r}")
            return cls(**migrate("supernet", values, values.get("schema_version"), "record"))
        except (ValueError, TypeError, AttributeError, RecordError) as error:
            raise SupernetError(f"{where}: not a supernet record of this harness ({error}); "
                                "remove the folder and the supernet is trained again") from None


def largest_and_smallest(space: SearchSpace) -> tuple[CandidateConfig, CandidateConfig]:
    """The sandwich's bread: the space's largest configuration (every weight tensor at its
    largest, no token reduction) and its cheapest (fewest MACs among the configurations that
    bound its cost from below)."""
    try:
        largest = space.largest_config()
    except ConfigError as error:
        raise SupernetError(f"space {shorten(space.name)}: its largest configuration cannot be "
                            f"built, so it has no supernet ({error})") from None
    smallest = min(space.corner_configs(), key=lambda config: estimate_cost(config).macs)
    return largest, smallest


class _RandomTrial:
    """Stands in for an Optuna trial in ``SearchSpace.suggest``: uniform choices from ``rng``."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def suggest_categorical(self, name: str, choices: tuple[Any, ...]) -> Any:
        # Only trained keys draw from the generator, so a step's sub-networks depend on exactly
        # what the cache key holds: pinning precision must not change which ones are trained.
        if name.split(".")[0] not in TRAINED_KEYS:
            return choices[0]
        return choices[int(self.rng.integers(len(choices)))]


def sandwich(space: SearchSpace, bread: tuple[CandidateConfig, CandidateConfig],
             dataset: Dataset, seed: int, step: int) -> list[CandidateConfig]:
    """The sub-networks of one training step, at the dataset's size, trained in fp32 and dense:
    the largest and the smallest (``bread``), then ``RANDOM_PER_STEP`` drawn from
    ``(seed, step)``."""
    largest, smallest = bread
    rng = np.random.default_rng([seed, step])
    drawn = [space.suggest(_RandomTrial(rng)) for _ in range(RANDOM_PER_STEP)]
    return [training_config(config.replace(**_SCORED_ONLY), dataset)
            for config in (largest, smallest, *drawn)]


def batch_indices(count: int, seed: int, step: int) -> torch.Tensor:
    """The training images of ``step``: epochs of seeded permutations, so a resumed training
    draws exactly the batches an uninterrupted one would."""
    per_epoch = count // BATCH_SIZE
    epoch, index = divmod(step, per_epoch)
    epoch_seed = int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])
    order = torch.randperm(count, generator=torch.Generator().manual_seed(epoch_seed))
    return order[index * BATCH_SIZE:(index + 1) * BATCH_SIZE]


def _skeleton(config: CandidateConfig) -> VisionTransformer:
    """The modules of ``config`` without weights of their own (they come from the supernet)."""
    with torch.device("meta"):
        return build_model(config.replace(**_SCORED_ONLY))


def subnet_weights(model: torch.nn.Module, supernet: dict[str, torch.Tensor]
                   ) -> dict[str, torch.Tensor]:
    """Each tensor of ``model`` as the leading slice of the supernet's weights it inherits."""
    weights = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        sliced = leading_slice(name, tensor.shape, supernet)
        if sliced is None:
            raise SupernetError(f"{name} {tuple(tensor.shape)} is larger than the supernet's: "
                                "the candidate is not in the space the supernet was trained on")
        weights[name] = sliced
    return weights


class SkeletonCache:
    """Weightless models by configuration: a search scores a configuration at most once, but
    training draws the largest and the smallest every step."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self._models: dict[str, VisionTransformer] = {}

    def __call__(self, config: CandidateConfig) -> VisionTransformer:
        key = config.key()
        if key not in self._models:
            if len(self._models) >= self.size:
                self._models.pop(next(iter(self._models)))
            self._models[key] = _skeleton(config)
        return self._models[key]


def train_supernet(spec: SupernetSpec, dataset: Dataset,
                   on_progress: Callable[[TrainingProgress], None] | None = None,
                   checkpoint_every_s: float = CHECKPOINT_EVERY_S) -> SupernetRecord:
    """Train (or resume training) the supernet of ``spec`` and keep it in its cache folder.

    A KeyboardInterrupt stops after writing a checkpoint; the same call resumes from it."""
    bread = largest_and_smallest(spec.space)
    supernet_config = training_config(bread[0].replace(**_SCORED_ONLY), dataset)
    folder = make_dir(spec.folder, "supernet cache")
    model = build_model(supernet_config, seed=spec.seed).train()
    weights = dict(model.named_parameters())
    optimizer = torch.optim.AdamW(weights.values(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    step, trained_s, log = 0, 0.0, []
    checkpoint = folder / "checkpoint.pt"
    if checkpoint.exists():
        state = load_file(checkpoint)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, trained_s, log = state["step"], state["trained_s"], state["log"]
    resumed_from, skeletons = step, SkeletonCache()

    def save_checkpoint() -> None:
        _save(checkpoint, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                           "step": step, "trained_s": trained_s, "log": log})

    last_saved = time.monotonic()
    try:
        while (trained_s if spec.by_time else step) < spec.amount:
            share_cores()
            start = time.perf_counter()
            progress = (trained_s if spec.by_time else step + 0.5) / spec.amount
            for group in optimizer.param_groups:
                group["lr"] = LEARNING_RATE * learning_rate_factor(min(progress, 1.0))
            indices = batch_indices(len(dataset.train_labels), spec.seed, step)
            images, labels = dataset.train_images[indices], dataset.train_labels[indices]
            optimizer.zero_grad(set_to_none=True)
            losses = []
            for config in sandwich(spec.space, bread, dataset, spec.seed, step):
                skeleton = skeletons(config)
                logits = functional_call(skeleton, subnet_weights(skeleton, weights), (images,))
                loss = F.cross_entropy(logits, labels)
                loss.backward()  # one sub-network at a time: its graph is freed before the next
                losses.append(loss.item())
            torch.nn.utils.clip_grad_norm_(weights.values(), 1.0)
            optimizer.step()
            step += 1
            trained_s += time.perf_counter() - start
            if time.monotonic() - last_saved >= checkpoint_every_s:
                save_checkpoint()
                last_saved = time.monotonic()
            if step % LOG_EVERY == 0 or step == 1:
                log.append({"step": step, "elapsed_s": round(trained_s, 2),
                            "lr": optimizer.param_groups[0]["lr"],
                            "loss_largest": losses[0], "loss_smallest": losses[1],
                            "loss_random": float(np.mean(losses[2:]))})
                if on_progress is not None:  # as often as the log: every few seconds
                    on_progress(_progress(spec, step, trained_s, float(np.mean(losses)),
                                          resumed_from))
    except KeyboardInterrupt:
        save_checkpoint()
        raise
    record = SupernetRecord(
        key=spec.key, space=spec.space.name, trained_space=spec.trained_space(),
        dataset=spec.dataset, dataset_title=dataset.title, budget=spec.budget, seed=spec.seed,
        steps=step, trained_s=round(trained_s, 2), config=supernet_config.to_dict(),
        params_m=sum(w.numel() for w in weights.values()) / 1e6, log=log,
        heldout=_heldout_bread(spec, dataset, model.state_dict()),
        harness_version=harness.__version__, recipe_version=RECIPE_VERSION,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    _save(folder / "weights.pt", model.state_dict())
    write_atomically(folder / "supernet.json", json.dumps(record.to_dict(), indent=1) + "\n")
    checkpoint.unlink(missing_ok=True)
    return record


def _progress(spec: SupernetSpec, step: int, trained_s: float, loss: float,
              resumed_from: int) -> TrainingProgress:
    done = trained_s / spec.amount if spec.by_time else step / spec.amount
    per_unit = trained_s / max(step - resumed_from, 1) if not spec.by_time else None
    remaining = (max(spec.amount - trained_s, 0.0) if spec.by_time
                 else per_unit * (spec.amount - step) if done < 1 else 0.0)
    return TrainingProgress(step, None if spec.by_time else spec.amount, trained_s, remaining,
                            loss, resumed_from)


def _heldout_bread(spec: SupernetSpec, dataset: Dataset,
                   weights: dict[str, torch.Tensor]) -> dict[str, float]:
    """Held-out top-1 of the largest and the smallest sub-network, for the training record."""
    largest, smallest = largest_and_smallest(spec.space)
    images, labels = score_split(dataset)
    return {name: round(score(config, dataset, weights, images, labels)["value"], 4)
            for name, config in (("largest_top1", largest), ("smallest_top1", smallest))}


def _save(path: Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomically(path, buffer.getvalue())


def load_file(path: Path) -> dict[str, Any]:
    try:
        return torch.load(io.BytesIO(read_bytes(path, "supernet file", max_bytes=2**34)),
                          weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError, OSError) as error:
        raise SupernetError(f"supernet file {path}: unreadable ({str(error).splitlines()[0]}); "
                            "remove it and the supernet is trained again") from None


def score_split(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed held-out images every candidate is scored on: ``SCORE_IMAGES`` of the held-out
    split, the same share of each class, chosen once (seed 0) so that every candidate of every
    search sees the same ones. Training never sees them."""
    labels = dataset.test_labels
    if len(labels) <= SCORE_IMAGES:
        return dataset.test_images, labels
    rng = np.random.default_rng(0)
    classes = labels.unique().tolist()
    chosen = np.sort(np.concatenate([
        rng.permutation(np.flatnonzero(labels.numpy() == label))[:SCORE_IMAGES // len(classes)]
        for label in classes]))
    index = torch.from_numpy(chosen)
    return dataset.test_images[index], labels[index]


def subnetwork(config: CandidateConfig, dataset: Dataset, supernet: dict[str, torch.Tensor]
               ) -> tuple[CandidateConfig, VisionTransformer]:
    """``config`` at the dataset's shape (``training_config``) and its fp32 model with the
    weights it inherits from ``supernet``, weight sparsity applied by magnitude."""
    config = training_config(config, dataset)
    model = _skeleton(config)
    model.load_state_dict({name: tensor.detach().clone() for name, tensor in
                           subnet_weights(model, supernet).items()}, assign=True)
    model.eval()
    if config.weight_sparsity != "dense":
        sparsify_linears(model.blocks, config.weight_sparsity, config.sparsity_block,
                         config.block_sparsity)
    return config, model


@torch.no_grad()
def score(config: CandidateConfig, dataset: Dataset, supernet: dict[str, torch.Tensor],
          images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Top-1 and mean cross-entropy of ``config`` with the weights it inherits, as it is
    measured: weight sparsity by magnitude on the inherited weights, then its precision; with
    which images it got right (``spread.pack_correct``), for paired comparisons."""
    config, model = subnetwork(config, dataset, supernet)
    model, sample = convert_precision(model, images[:1], config.precision)
    correct, loss = [], 0.0
    for start in range(0, len(labels), EVAL_BATCH):
        share_cores()
        batch = images[start:start + EVAL_BATCH].to(sample.dtype)
        logits = model(batch).float()
        target = labels[start:start + EVAL_BATCH]
        correct.append(logits.argmax(dim=1) == target)
        loss += float(F.cross_entropy(logits, target, reduction="sum"))
    right = torch.cat(correct).numpy()
    return {"value": int(right.sum()) / len(labels), "heldout_loss": loss / len(labels),
            "heldout_correct": pack_correct(right)}


@contextlib.contextmanager
def _training_lock(folder: Path) -> Iterator[None]:
    """One process trains a supernet; another that needs it waits, then loads it."""
    make_dir(folder, "supernet cache")
    with open(folder / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def load_or_train(spec: SupernetSpec, dataset: Dataset,
                  on_progress: Callable[[TrainingProgress], None] | None = None,
                  on_note: Callable[[str], None] | None = None,
                  ) -> tuple[SupernetRecord, dict[str, torch.Tensor]]:
    """The cached supernet of ``spec``, trained first if there is none (or resumed)."""
    largest_and_smallest(spec.space)  # a space without a buildable largest model has none
    with _training_lock(spec.folder):
        record_path = spec.folder / "supernet.json"
        if not record_path.exists():
            if on_note is not None:
                for note in _training_notes(spec):
                    on_note(note)
            record = train_supernet(spec, dataset, on_progress)
            if on_note is not None:
                on_note(f"supernet trained: {record.steps} steps in {_clock(record.trained_s)}; "
                        f"held-out top-1 of its largest sub-network "
                        f"{record.heldout['largest_top1']:.3f}, of its smallest "
                        f"{record.heldout['smallest_top1']:.3f}")
        record = SupernetRecord.from_json(read_text(record_path, "supernet record"),
                                          str(record_path))
        return record, load_file(spec.folder / "weights.pt")


def _training_notes(spec: SupernetSpec) -> list[str]:
    """What the user should know before a training starts: that it is one-time, and why a
    supernet of this space and data that exists is not used."""
    others = [path for path in supernets_dir().glob(
        safe_name(f"{spec.space.name}-{spec.dataset}") + "-*/supernet.json")
        if path.parent != spec.folder]
    notes = [(f"training the supernet of space {spec.space.name!r} on {spec.dataset} "
              f"({spec.budget}, seed {spec.seed}) once; later searches reuse it "
              f"(kept in {spec.folder})")]
    for path in others:
        try:
            values = json.loads(read_text(path, "supernet record"))
        except (FileError, ValueError):
            continue
        if values.get("harness_version") != harness.__version__ or \
                values.get("recipe_version") != RECIPE_VERSION:
            notes.append(f"{path.parent} was trained by harness {values.get('harness_version')} "
                         f"(recipe {values.get('recipe_version')}), not this one: not reused")
    return notes


def parse_spec(argument: str) -> tuple[str, str, int]:
    """``DATASET[@BUDGET][@seedK]`` → (dataset, budget, seed)."""
    dataset, budget, seed = argument, DEFAULT_BUDGET, 0
    while "@" in dataset:
        head, _, tail = dataset.rpartition("@")
        if _BUDGET.fullmatch(tail):
            dataset, budget = head, tail
        elif _SEED.fullmatch(tail):
            dataset, seed = head, int(_SEED.fullmatch(tail)["seed"])
        elif dataset.startswith("imagefolder:"):  # a folder's name may hold an "@"
            break
        else:
            raise SupernetError(f"supernet:{shorten(argument)}: expected "
                                f"supernet:DATASET[@Nsteps|@Ns][@seedK], e.g. "
                                f"supernet:mnist@{DEFAULT_BUDGET}")
    if int(_BUDGET.fullmatch(budget)["amount"]) == 0:
        raise SupernetError(f"supernet:{shorten(argument)}: the budget must be positive")
    return dataset, budget, seed


class SupernetEstimator(BaseAccuracyEstimator):
    """Held-out top-1 of a candidate with the weights it inherits from its space's supernet."""

    kind = "supernet"
    needs_space = True
    scores_as_measured = True

    def __init__(self, argument: str) -> None:
        dataset_name, self.budget, self.seed = parse_spec(argument)
        seed_part = f"@seed{self.seed}" if self.seed else ""
        super().__init__(f"{dataset_name}@{self.budget}{seed_part}")
        # Loaded now, so an unknown dataset or an unusable folder fails before a study starts.
        self.dataset = load_dataset(dataset_name)
        self.images, self.labels = score_split(self.dataset)
        self.spec_of: SupernetSpec | None = None
        self.record_of: SupernetRecord | None = None
        self._weights: dict[str, torch.Tensor] | None = None

    @property
    def description(self) -> str:
        return (f"top-1 on {len(self.labels)} held-out {self.dataset.title} images of each "
                f"candidate with the weights it inherits from the space's supernet (trained "
                f"once, sandwich rule, {self.budget}, seed {self.seed}); precision and sparsity "
                "applied as measured")

    def prepare(self, space: SearchSpace,
                on_progress: Callable[[str], None] | None = None) -> None:
        if self.spec_of is not None and _covers(self.spec_of.space, space):
            return  # trained on a space that holds every candidate of this one (--set pins)
        spec = SupernetSpec(space, self.dataset.name, self.budget, self.seed)
        say = on_progress or (lambda message: None)
        try:
            self.record_of, self._weights = load_or_train(
                spec, self.dataset, lambda progress: say(format_progress(progress)), say)
        except KeyboardInterrupt:
            say("supernet training interrupted; its last checkpoint is kept, and the same "
                "command resumes from it")
            raise
        self.spec_of = spec
        with open(spec.folder / "weights.pt", "rb") as stream:
            self._weights_sha256 = hashlib.file_digest(stream, "sha256").hexdigest()

    def fingerprint(self) -> str | None:
        """The sha256 of the supernet's weights file: training is deterministic for a seed only
        at a fixed thread count, so two trainings of one key may differ."""
        return getattr(self, "_weights_sha256", None)

    def with_seed(self, seed: int) -> SupernetEstimator:
        """The same estimator on a supernet trained with another seed."""
        return SupernetEstimator(f"{self.dataset.name}@{self.budget}@seed{seed}")

    def estimate(self, model: VisionTransformer, config: CandidateConfig,
                 report: ReportIntermediate | None = None) -> float:
        return self.record(model, config, report)["value"]

    def record(self, model: VisionTransformer, config: CandidateConfig,
               report: ReportIntermediate | None = None) -> dict[str, Any]:
        if self._weights is None or self.record_of is None:
            raise SupernetError("the supernet estimator scores candidates of a space: call "
                                "prepare(space) first (a search does)")
        result = score(config, self.dataset, self._weights, self.images, self.labels)
        trained = self.record_of
        return {**result, "heldout_images": len(self.labels),
                "supernet": {"key": trained.key, "dataset": trained.dataset,
                             "steps": trained.steps, "seed": trained.seed,
                             "weights_sha256": self.fingerprint()}}

    def metadata(self) -> dict[str, Any]:
        return {**super().metadata(),
                "supernet": None if self.record_of is None else self.record_of.summary()}


def _covers(trained: SearchSpace, space: SearchSpace) -> bool:
    """Whether every candidate of ``space`` is a candidate of ``trained`` (its trained keys)."""
    for key in TRAINED_KEYS:
        mine, theirs = space.dimensions.get(key), trained.dimensions.get(key)
        if (mine is None) != (theirs is None):
            return False
        if mine is not None and not set(mine.choices) <= set(theirs.choices):
            return False
    return True


def _clock(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}:{secs:02d}"


PROGRESS_BAR_WIDTH = 20


def format_progress(progress: TrainingProgress) -> str:
    """One progress line:
    ``supernet [####................] step 120/600 (20%), loss 1.234, elapsed 1:00, ETA 4:00``."""
    done = (progress.step / progress.steps if progress.steps
            else progress.elapsed_s / (progress.elapsed_s + (progress.remaining_s or 0.0) or 1.0))
    filled = round(PROGRESS_BAR_WIDTH * min(done, 1.0))
    bar = f"[{'#' * filled}{'.' * (PROGRESS_BAR_WIDTH - filled)}]"
    where = (f"{bar} step {progress.step}/{progress.steps} ({100 * done:.0f}%)"
             if progress.steps else f"{bar} step {progress.step} ({100 * done:.0f}% of the time)")
    resumed = f", resumed at step {progress.resumed_from}" if progress.resumed_from else ""
    return (f"supernet {where}, loss {progress.loss:.3f}, elapsed {_clock(progress.elapsed_s)}, "
            f"ETA {_clock(progress.remaining_s)}{resumed}")


@register_estimator_kind(
    "supernet", lambda: f"supernet:DATASET[@Nsteps|@Ns][@seedK] (DATASET: {valid_datasets()}; "
                        f"default @{DEFAULT_BUDGET})")
def make_supernet_estimator(argument: str) -> SupernetEstimator:
    return SupernetEstimator(argument)


__all__ = ["SupernetEstimator", "SupernetRecord", "SupernetSpec", "load_or_train",
           "train_supernet"]
