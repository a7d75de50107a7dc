"""Pretrained weights (``--weights PATH``): a state dict in timm's key names, checked against the
architecture before anything is built from it.

Our ViT keeps timm's parameter names, so a timm ``deit_small_patch16_224`` state dict loads into
``deit_small`` as it is. Nothing but tensors is ever unpickled: ``torch.load(weights_only=True)``
for ``.pth``/``.pt``/``.bin``, or safetensors. A checkpoint fits a configuration when it holds
exactly the tensors of that configuration's plain model (no token reduction, global attention,
dense, fp32), shape for shape; its knobs then apply to the trained weights as they are (pooled
attention takes its projections from the fused ``qkv``, see ``models.leading_slice``).
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness.config import CandidateConfig
from harness.cost import MAX_PARAMS
from harness.errors import FileError, shorten
from harness.files import check_readable_file
from harness.models import build_model
from harness.space import SearchSpace

SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
# DeiT's released checkpoints keep the weights under "model"; Lightning-style ones under
# "state_dict"; a nested EMA copy is not what a user means by the checkpoint.
NESTED_KEYS = ("model", "state_dict")
# Knob values under which a configuration is its plain, trained architecture.
KNOBS_OFF = {"keep_rate": 1.0, "merge_r": 0, "attention": "global", "weight_sparsity": "dense",
             "precision": "fp32"}
# What a search may vary on a trained model without training it: ToMe merging, EViT pruning
# (without fine-tuning, pessimistic), precision, magnitude sparsity (likewise).
TRAINING_FREE_KEYS = ("merge_r", "merge_schedule", "keep_rate", "keep_layers", "fuse_tokens",
                      "precision", "weight_sparsity", "sparsity_block", "block_sparsity")
NAMES_SHOWN = 5
# fp32 weights of the largest model the harness builds (cost.MAX_PARAMS), and 64 MiB to spare
MAX_CHECKPOINT_BYTES = 4 * MAX_PARAMS + 64 * 2**20


class CheckpointError(FileError):
    """A checkpoint cannot be read, or does not fit the architecture it is loaded into."""


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    sha256: str
    tensors: dict[str, torch.Tensor]

    @property
    def num_classes(self) -> int | None:
        """The classes of the checkpoint's classifier, None without a 2-D ``head.weight``."""
        head = self.tensors.get("head.weight")
        return head.shape[0] if head is not None and head.dim() == 2 else None

    @property
    def params_m(self) -> float:
        return sum(tensor.numel() for tensor in self.tensors.values()) / 1e6

    def describe(self) -> dict[str, Any]:
        """What a result records about the weights it was measured or scored with."""
        return {"path": str(self.path), "sha256": self.sha256, "params_m": self.params_m,
                "num_classes": self.num_classes}

    def fit(self, config: CandidateConfig) -> CandidateConfig:
        """``config`` with the checkpoint's number of classes, after checking that the checkpoint
        holds exactly the tensors of its plain architecture; one line naming the first mismatch
        otherwise."""
        if self.num_classes is not None:
            config = config.replace(num_classes=self.num_classes)
        expected = build_model(config.replace(**KNOBS_OFF)).state_dict()
        unexpected = [name for name in self.tensors if name not in expected]
        if unexpected:
            raise CheckpointError(
                f"checkpoint {self.path}: {len(unexpected)} tensors are not in this model "
                f"(it takes timm's ViT key names, e.g. blocks.0.attn.qkv.weight): "
                f"{_names(unexpected)}")
        missing = [name for name in expected if name not in self.tensors]
        if missing:
            raise CheckpointError(f"checkpoint {self.path}: {len(missing)} tensors of this model "
                                  f"are missing: {_names(missing)}")
        for name, tensor in expected.items():
            if tuple(self.tensors[name].shape) != tuple(tensor.shape):
                raise CheckpointError(
                    f"checkpoint {self.path} does not fit the architecture "
                    f"(embed_dim {config.embed_dim}, depth {config.depth}, patch "
                    f"{config.patch_size}, {config.img_size} px): {name} is "
                    f"{_shape(self.tensors[name])} in the checkpoint, {_shape(tensor)} in the model")
        return config


def fit_space(checkpoint: Checkpoint, space: SearchSpace) -> SearchSpace:
    """``space`` with the checkpoint's classes, after checking that it varies only training-free
    knobs and that its architecture is the checkpoint's."""
    varied = [key for key, dim in space.dimensions.items()
              if not dim.fixed and key not in TRAINING_FREE_KEYS]
    if varied:
        raise CheckpointError(
            f"--weights keeps the checkpoint's architecture, and space {space.name} varies "
            f"{', '.join(varied)}, which would need training; with --weights a space may vary "
            f"only {', '.join(TRAINING_FREE_KEYS)} (e.g. the bundled deit_small_knobs)")
    fitted = checkpoint.fit(space.largest_config())
    return space.with_fixed({"num_classes": fitted.num_classes})


def load_checkpoint(path: Path) -> Checkpoint:
    """Read the tensors of ``path``; raises ``CheckpointError`` in one line."""
    if path.suffix not in SUFFIXES:
        raise CheckpointError(f"--weights {shorten(str(path))}: unknown checkpoint format "
                              f"{path.suffix or '(no suffix)'!r}; valid: {', '.join(SUFFIXES)}")
    check_readable_file(path, "checkpoint")
    size = path.stat().st_size
    if size > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"checkpoint {path}: {size / 2**30:.1f} GiB, above the limit of "
                              f"{MAX_CHECKPOINT_BYTES / 2**30:.1f} GiB (fp32 weights of "
                              f"{MAX_PARAMS:,} parameters); is it the right file?")
    try:
        with path.open("rb") as stream:
            digest = hashlib.file_digest(stream, "sha256").hexdigest()
        if path.suffix == ".safetensors":
            from safetensors import SafetensorError
            from safetensors.torch import load_file
            try:
                tensors = load_file(path)
            except SafetensorError as error:
                raise CheckpointError(f"checkpoint {path}: not a readable safetensors file "
                                      f"({shorten(str(error))})") from None
        else:
            tensors = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as error:
        raise CheckpointError(f"checkpoint {path}: cannot read it ({error.strerror or error})"
                              ) from None
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        raise CheckpointError(f"checkpoint {path}: not a state dict of tensors that can be read "
                              f"without running code ({shorten(str(error).splitlines()[0])})"
                              ) from None
    for key in NESTED_KEYS:
        if isinstance(tensors, dict) and isinstance(tensors.get(key), dict):
            tensors = tensors[key]
            break
    if not isinstance(tensors, dict) or not tensors or \
            not all(isinstance(value, torch.Tensor) for value in tensors.values()):
        raise CheckpointError(f"checkpoint {path}: expected a state dict (names to tensors), "
                              f"alone or under one of {', '.join(map(repr, NESTED_KEYS))}")
    return Checkpoint(path, digest, {str(name): tensor.float() if tensor.is_floating_point()
                                     else tensor for name, tensor in tensors.items()})


def _names(names: list[str]) -> str:
    more = f" and {len(names) - NAMES_SHOWN} more" if len(names) > NAMES_SHOWN else ""
    return ", ".join(names[:NAMES_SHOWN]) + more


def _shape(tensor: torch.Tensor) -> str:
    return "×".join(map(str, tensor.shape)) or "a scalar"
