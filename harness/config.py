"""One point of a search space: a frozen, validated Vision Transformer configuration.

Every stage after the search space (cost, model, measurement, study, report) takes a
``CandidateConfig``. Its keys are the ones users write in search-space YAML files and in ``--set``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import ConfigError, shorten
from harness.files import read_text
from harness.tokens import merge_schedule, merges_at, tokens_after_pruning
from harness.yaml_files import MAX_YAML_BYTES, parse_yaml

# Per-layer keys may hold one value for every block or a list with one value per block.
PER_LAYER_KEYS = ("num_heads", "mlp_ratio", "keep_rate", "merge_r", "attention")
ATTENTION_VARIANTS = ("global", "window", "pooled")
# Attention variants that work on the 2-D patch grid, so only before any token reduction.
GRID_ATTENTION = ("window", "pooled")
MERGE_SCHEDULES = ("constant", "decreasing")
WEIGHT_SPARSITIES = ("dense", "2:4", "block")
PRECISIONS = ("fp32", "int8", "bf16", "fp16")
# How the model is run: PyTorch eager, torch.compile (inductor), or exported to ONNX Runtime
# (``harness.runtimes``). The compile modes are torch.compile's own.
RUNTIMES = ("eager", "compile", "onnxruntime")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# Keys added after configurations were first stored: they enter ``CandidateConfig.key`` only when
# set to something other than their default, so the keys of earlier configurations stay valid.
HASHED_WHEN_SET = ("runtime", "compile_mode")

# Size limits of single keys: far above every published ViT, far below what exhausts a host's
# memory. A larger value is a typo (depth=10000) that would take minutes and many GB to build.
# Limits that combine keys (parameters, tokens, attention scores) are in ``harness.cost``.
MAX_DEPTH = 256  # ViT-22B has 48 blocks
MAX_EMBED_DIM = 16384  # ViT-22B: 6144
MAX_HEADS = 256  # ViT-22B: 48
MAX_HEAD_DIM = 1024  # ViT-22B: 128; DeiT: 64
MAX_MLP_RATIO = 64  # published ViTs use 4 (ViT-G/14: 4.9)
MAX_IMG_SIZE = 4096  # detection and segmentation ViTs (ViTDet, SAM) take 1024 px
MAX_NUM_CLASSES = 100_000  # JFT-3B has about 30,000 classes, ImageNet-21k 21,843


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class KeySpec:
    """What one configuration key accepts, with the wording used in error messages."""

    check: Callable[[Any], bool]
    valid: str
    coerce: Callable[[Any], Any] = lambda value: value


def _positive_int(value: Any) -> bool:
    return _is_int(value) and value > 0


def _int_up_to(limit: int) -> Callable[[Any], bool]:
    return lambda value: _positive_int(value) and value <= limit


def _positive_number(value: Any) -> bool:
    return _is_number(value) and value > 0


def _keep_rate(value: Any) -> bool:
    return _is_number(value) and 0 < value <= 1


def _non_negative_int(value: Any) -> bool:
    return _is_int(value) and value >= 0


def _fraction(value: Any) -> bool:
    return _is_number(value) and 0 <= value < 1


def _one_of(choices: tuple[str, ...]) -> Callable[[Any], bool]:
    return lambda value: value in choices


def _layer_numbers(value: Any) -> bool:
    return (
        isinstance(value, (list, tuple))
        and len(value) <= MAX_DEPTH
        and all(_int_up_to(MAX_DEPTH)(v) for v in value)
        and list(value) == sorted(set(value))
    )


def _up_to(limit: int) -> str:
    return f"a positive integer up to {limit}"


KEY_SPECS: dict[str, KeySpec] = {
    "embed_dim": KeySpec(_int_up_to(MAX_EMBED_DIM), _up_to(MAX_EMBED_DIM)),
    "depth": KeySpec(_int_up_to(MAX_DEPTH), _up_to(MAX_DEPTH)),
    "num_heads": KeySpec(_int_up_to(MAX_HEADS), _up_to(MAX_HEADS)),
    "mlp_ratio": KeySpec(lambda v: _positive_number(v) and v <= MAX_MLP_RATIO,
                         f"a positive number up to {MAX_MLP_RATIO}", float),
    "head_dim": KeySpec(_int_up_to(MAX_HEAD_DIM), _up_to(MAX_HEAD_DIM)),
    "patch_size": KeySpec(_int_up_to(MAX_IMG_SIZE), _up_to(MAX_IMG_SIZE)),
    "img_size": KeySpec(_int_up_to(MAX_IMG_SIZE), _up_to(MAX_IMG_SIZE)),
    "num_classes": KeySpec(_int_up_to(MAX_NUM_CLASSES), _up_to(MAX_NUM_CLASSES)),
    "keep_rate": KeySpec(_keep_rate, "a number in (0, 1] (1.0 = no token pruning)", float),
    "keep_layers": KeySpec(
        _layer_numbers, f"a strictly increasing list of 1-based block numbers up to {MAX_DEPTH}",
        tuple,
    ),
    "fuse_tokens": KeySpec(lambda v: isinstance(v, bool), "true or false"),
    "merge_r": KeySpec(_non_negative_int, "a non-negative integer (0 = no token merging)"),
    "merge_schedule": KeySpec(_one_of(MERGE_SCHEDULES), " or ".join(MERGE_SCHEDULES)),
    "attention": KeySpec(_one_of(ATTENTION_VARIANTS), "one of " + ", ".join(ATTENTION_VARIANTS)),
    "window_size": KeySpec(_positive_int, "a positive integer (patches per window side)"),
    "kv_pool": KeySpec(_positive_int, "a positive integer (pooling stride of keys/values)"),
    "weight_sparsity": KeySpec(_one_of(WEIGHT_SPARSITIES), "one of " + ", ".join(WEIGHT_SPARSITIES)),
    "sparsity_block": KeySpec(_positive_int, "a positive integer (block side)"),
    "block_sparsity": KeySpec(_fraction, "a number in [0, 1) (fraction of blocks zeroed)", float),
    "precision": KeySpec(_one_of(PRECISIONS), "one of " + ", ".join(PRECISIONS)),
    "runtime": KeySpec(_one_of(RUNTIMES), "one of " + ", ".join(RUNTIMES)),
    "compile_mode": KeySpec(_one_of(COMPILE_MODES), "one of " + ", ".join(COMPILE_MODES)),
}
VALID_KEYS = ", ".join(KEY_SPECS)


def check_key(key: str, where: str = "") -> KeySpec:
    """Return the spec of ``key`` or raise ``ConfigError`` listing the valid keys."""
    if key not in KEY_SPECS:
        raise ConfigError(f"{where}unknown configuration key {shorten(key)}; valid keys: "
                          f"{VALID_KEYS}")
    return KEY_SPECS[key]


def check_value(key: str, value: Any, where: str = "") -> Any:
    """Validate one value of ``key`` (a per-layer key may be a list) and return it normalized."""
    spec = check_key(key, where)
    if key in PER_LAYER_KEYS and isinstance(value, (list, tuple)):
        if len(value) > MAX_DEPTH:
            raise ConfigError(f"{where}{key}: a per-layer list has one value per block, at most "
                              f"{MAX_DEPTH}; got {len(value):,} values")
        if not value or not all(spec.check(v) for v in value):
            raise ConfigError(
                f"{where}{key}: expected {spec.valid} or a list of them (one per block), "
                f"got {shorten(value)}"
            )
        return tuple(spec.coerce(v) for v in value)
    if not spec.check(value):
        raise ConfigError(f"{where}{key}: expected {spec.valid}, got {shorten(value)}")
    return spec.coerce(value)


@dataclass(frozen=True)
class BlockTokens:
    """Token counts through one block: ``tokens`` enter it (and its attention), EViT pruning
    leaves ``after_pruning``, ToMe then merges ``merged`` pairs."""

    tokens: int
    after_pruning: int
    merged: int

    @property
    def tokens_out(self) -> int:
        return self.after_pruning - self.merged


@dataclass(frozen=True)
class CandidateConfig:
    """A Vision Transformer configuration; the defaults are DeiT-Tiny at 224 px, every knob off.

    ``head_dim`` is fixed per head (64, as in DeiT and AutoFormer), so the attention width is
    ``num_heads * head_dim`` and need not equal ``embed_dim``. Knobs:

    * EViT token pruning: ``keep_rate`` (one rate for the blocks in ``keep_layers``, which are
      1-based as the paper writes them, or a per-block list that ignores ``keep_layers``);
      ``fuse_tokens`` fuses the dropped tokens into one.
    * ToMe token merging: ``merge_r`` pairs per block (an integer spread by ``merge_schedule``, or a
      per-block list); ToMe caps it at half the tokens a block has.
    * ``attention``: ``global``; ``window`` (``window_size``² patches attend among themselves and to
      the class token); ``pooled`` (keys/values from a ``kv_pool``-strided average of the grid).
      The grid variants need the full patch grid: one variant for the whole model applies to the
      blocks before the first block that reduces tokens, and the rest use global attention.
    * ``weight_sparsity``: ``2:4`` or ``block`` (``block_sparsity`` of the ``sparsity_block``²
      blocks of each block Linear zeroed by magnitude).
    * ``precision``: fp32, int8 (dynamic quantisation of Linear layers), bf16 or fp16.
    * ``runtime``: ``eager`` PyTorch, ``compile`` (torch.compile in ``compile_mode``) or
      ``onnxruntime`` (exported to ONNX); the same logits, checked on every preparation.
    """

    embed_dim: int = 192
    depth: int = 12
    num_heads: int | tuple[int, ...] = 3
    mlp_ratio: float | tuple[float, ...] = 4.0
    head_dim: int = 64
    patch_size: int = 16
    img_size: int = 224
    num_classes: int = 1000
    keep_rate: float | tuple[float, ...] = 1.0
    keep_layers: tuple[int, ...] = (4, 7, 10)
    fuse_tokens: bool = True
    merge_r: int | tuple[int, ...] = 0
    merge_schedule: str = "constant"
    attention: str | tuple[str, ...] = "global"
    window_size: int = 7
    kv_pool: int = 2
    weight_sparsity: str = "dense"
    sparsity_block: int = 32
    block_sparsity: float = 0.5
    precision: str = "fp32"
    runtime: str = "eager"
    compile_mode: str = "default"

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            object.__setattr__(self, field.name, check_value(field.name, getattr(self, field.name)))
        for key in PER_LAYER_KEYS:
            value = getattr(self, key)
            if isinstance(value, tuple) and len(value) != self.depth:
                raise ConfigError(
                    f"{key}: a per-layer list needs one value per block ({self.depth}), "
                    f"got {len(value)}"
                )
        if self.img_size % self.patch_size:
            raise ConfigError(
                f"patch_size: must divide img_size ({self.img_size}), got {self.patch_size}"
            )
        prunes_by_layers = not isinstance(self.keep_rate, tuple) and self.keep_rate < 1
        if prunes_by_layers and self.keep_layers and self.keep_layers[-1] > self.depth:
            raise ConfigError(
                f"keep_layers: block numbers must be in 1..depth ({self.depth}), "
                f"got {quoted(self.keep_layers)}"
            )
        self._check_merge_r()
        self._check_grid_attention()
        self._check_weight_sparsity()

    def _check_merge_r(self) -> None:
        half = self.num_patches // 2
        largest = max(self.merge_r_at(block) for block in range(self.depth))
        if largest > half:
            raise ConfigError(
                f"merge_r: at most half the {self.num_patches} patch tokens ({half}) can merge in "
                f"a block, got {shorten(largest)}"
            )

    def _check_grid_attention(self) -> None:
        used = {self.attention_at(block) for block in range(self.depth)} & set(GRID_ATTENTION)
        grid = self.img_size // self.patch_size
        valid = ", ".join(str(n) for n in range(1, grid + 1) if grid % n == 0)
        for key, variant in (("window_size", "window"), ("kv_pool", "pooled")):
            size = getattr(self, key)
            if variant in used and grid % size:
                raise ConfigError(
                    f"{key}: must divide the {grid}x{grid} patch grid (valid: {valid}), got "
                    f"{shorten(size)}"
                )
        if isinstance(self.attention, tuple):
            grid_blocks = self.grid_blocks()
            for block, variant in enumerate(self.attention):
                if variant in GRID_ATTENTION and block >= grid_blocks:
                    raise ConfigError(
                        f"attention: {variant!r} at block {block + 1} needs the full patch grid, "
                        f"but block {grid_blocks + 1} reduces tokens; use 'global' from there on"
                    )

    def _check_weight_sparsity(self) -> None:
        widths = {self.embed_dim, *(self.heads_at(b) * self.head_dim for b in range(self.depth)),
                  *(self.mlp_hidden_at(b) for b in range(self.depth))}
        if self.weight_sparsity == "2:4" and any(width % 4 for width in widths):
            raise ConfigError(
                f"weight_sparsity: 2:4 needs every Linear input width to be a multiple of 4, "
                f"got widths {shorten(sorted(widths))}"
            )
        if self.weight_sparsity == "block" and any(width % self.sparsity_block for width in widths):
            raise ConfigError(
                f"sparsity_block: must divide every Linear width of the blocks "
                f"{shorten(sorted(widths))}, got {shorten(self.sparsity_block)}"
            )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], where: str = "") -> CandidateConfig:
        """Build from plain values (YAML, JSON, ``--set``); unknown keys raise ``ConfigError``."""
        for key in values:
            check_key(key, where)
        try:
            return cls(**values)
        except ConfigError as error:
            raise ConfigError(f"{where}{error}") from None

    def replace(self, **overrides: Any) -> CandidateConfig:
        return self.from_dict({**self.to_dict(), **overrides})

    def heads_at(self, block: int) -> int:
        return self.num_heads[block] if isinstance(self.num_heads, tuple) else self.num_heads

    def mlp_ratio_at(self, block: int) -> float:
        return self.mlp_ratio[block] if isinstance(self.mlp_ratio, tuple) else self.mlp_ratio

    def mlp_hidden_at(self, block: int) -> int:
        return int(self.embed_dim * self.mlp_ratio_at(block))

    def keep_rate_at(self, block: int) -> float:
        """Token keep rate applied after the attention of 0-based ``block`` (1.0 = none)."""
        if isinstance(self.keep_rate, tuple):
            return self.keep_rate[block]
        return self.keep_rate if block + 1 in self.keep_layers else 1.0

    def merge_r_at(self, block: int) -> int:
        """Token pairs ToMe is asked to merge in 0-based ``block`` (before ToMe's cap)."""
        if isinstance(self.merge_r, tuple):
            return self.merge_r[block]
        if self.merge_r == 0 or self.merge_schedule == "constant":
            return self.merge_r
        return merge_schedule(self.merge_r, self.depth, self.merge_schedule)[block]

    def token_plan(self) -> list[BlockTokens]:
        """Token counts through every block, as the model computes them."""
        plan, tokens = [], self.num_patches + 1
        for block in range(self.depth):
            pruned = tokens_after_pruning(tokens, self.keep_rate_at(block), self.fuse_tokens)
            merged = merges_at(pruned, self.merge_r_at(block))
            plan.append(BlockTokens(tokens, pruned, merged))
            tokens = pruned - merged
        return plan

    def grid_blocks(self) -> int:
        """How many leading blocks keep the full patch grid: the blocks before the first one that
        reduces tokens (that block's attention must rank or match every token)."""
        for block, counts in enumerate(self.token_plan()):
            if counts.tokens_out != counts.tokens:
                return block
        return self.depth

    def attention_at(self, block: int) -> str:
        """The attention variant 0-based ``block`` runs; a model-wide grid variant applies to the
        blocks that keep the full patch grid, later blocks use global attention."""
        if isinstance(self.attention, tuple):
            return self.attention[block]
        if self.attention in GRID_ATTENTION and block >= self.grid_blocks():
            return "global"
        return self.attention

    @property
    def num_patches(self) -> int:
        return (self.img_size // self.patch_size) ** 2

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (tuples become lists)."""
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in dataclasses.asdict(self).items()
        }

    def key(self) -> str:
        """A short stable identifier: the hash of the canonical JSON of the configuration."""
        values = {key: value for key, value in self.to_dict().items()
                  if key not in HASHED_WHEN_SET or value != getattr(CandidateConfig, key)}
        canonical = json.dumps(values, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def load_config_file(path: Path) -> tuple[CandidateConfig, tuple[str, ...]]:
    """A configuration from a YAML or JSON file: a mapping of keys, or an object with ``config``
    (an entry of ``pareto.json``); with the keys the file states, for ``check_keys_take_effect``
    (none for a ``pareto.json`` entry: a search chose its values, needed or not)."""
    where = f"{path}: "
    text = read_text(path, "configuration file", MAX_YAML_BYTES)
    values = parse_yaml(text, str(path), ConfigError)  # JSON is YAML
    if isinstance(values, dict) and isinstance(values.get("config"), dict):
        return CandidateConfig.from_dict(values["config"], where=where), ()
    if not isinstance(values, dict):
        raise ConfigError(f"{where}expected a mapping of configuration keys ({VALID_KEYS})")
    return CandidateConfig.from_dict(values, where=where), tuple(values)


def parse_set_options(assignments: list[str]) -> dict[str, Any]:
    """Parse ``--set key=value`` strings; values are YAML scalars or lists (``[4, 7, 10]``)."""
    overrides: dict[str, Any] = {}
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {shorten(assignment)}; valid keys: "
                              f"{VALID_KEYS}")
        check_key(key, where="--set ")
        overrides[key] = check_value(key, parse_yaml(raw, f"--set {key}", ConfigError),
                                     where="--set ")
    return overrides


@dataclass(frozen=True)
class Switch:
    """The key that turns on the knob another key configures: whether a value of it does
    (``turns_on``), and what to set (``how``)."""

    key: str
    turns_on: Callable[[Any], bool]
    how: str


def _values(value: Any) -> tuple[Any, ...]:
    return value if isinstance(value, tuple) else (value,)


# Keys that configure a knob and do nothing while it is off. A search space may sample them all
# the same (a candidate with global attention and some window_size is fine); a configuration the
# user states must not set one in vain (``check_keys_take_effect``).
SWITCHES: dict[str, Switch] = {
    "window_size": Switch("attention", lambda v: "window" in _values(v), "set attention=window"),
    "kv_pool": Switch("attention", lambda v: "pooled" in _values(v), "set attention=pooled"),
    "merge_schedule": Switch(
        "merge_r", lambda v: not isinstance(v, tuple) and v > 0,
        "set merge_r to a positive integer; a per-block list is a schedule of its own"),
    "keep_layers": Switch(
        "keep_rate", lambda v: not isinstance(v, tuple) and v < 1,
        "set keep_rate below 1; a per-block list prunes wherever its rate is below 1"),
    "fuse_tokens": Switch("keep_rate", lambda v: min(_values(v)) < 1, "set keep_rate below 1"),
    "sparsity_block": Switch("weight_sparsity", lambda v: v == "block",
                             "set weight_sparsity=block"),
    "block_sparsity": Switch("weight_sparsity", lambda v: v == "block",
                             "set weight_sparsity=block"),
    "compile_mode": Switch("runtime", lambda v: v == "compile", "set runtime=compile"),
}


def quoted(value: Any) -> str:
    """A value for an error message: lists in brackets, long ones cut short."""
    return shorten(list(value) if isinstance(value, tuple) else value)


def shown(value: Any) -> str:
    """A value as ``--set`` takes it: like ``quoted``, strings without quotes."""
    return value if isinstance(value, str) else quoted(value)


def check_keys_take_effect(config: CandidateConfig, keys: Iterable[str], where: str = "") -> None:
    """Refuse a key the user states whose value, other than the default, does nothing under the
    other keys (``window_size=5`` with global attention): what is measured would not be what was
    asked for. Not part of ``CandidateConfig`` validation, since searches sample such keys."""
    for key in dict.fromkeys(keys):
        value = getattr(config, key)
        reason = None if value == getattr(CandidateConfig, key) else _no_effect(config, key)
        if reason:
            raise ConfigError(f"{where}{key}={shown(value)} has no effect: {reason}")


def _no_effect(config: CandidateConfig, key: str) -> str | None:
    """Why ``key`` does nothing in ``config``, or None if it does something."""
    if key in SWITCHES:
        switch = SWITCHES[key]
        value = getattr(config, switch.key)
        if switch.turns_on(value):
            return None
        return f"{switch.key} is {quoted(value)} ({switch.how})"
    if key == "attention" and config.attention in GRID_ATTENTION and config.grid_blocks() == 0:
        return (f"block 1 already reduces tokens, and {config.attention} attention needs the "
                "full patch grid, so every block runs global attention (reduce tokens later: "
                "keep_layers, merge_r)")
    if key == "keep_rate" and not isinstance(config.keep_rate, tuple) and not config.keep_layers:
        return "keep_layers is empty (name the blocks after which to prune)"
    return None
