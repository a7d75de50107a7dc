"""One point of a search space: a frozen, validated Vision Transformer configuration.

Every stage after the search space (cost, model, measurement, study, report) takes a
``CandidateConfig``. Its keys are the ones users write in search-space YAML files and in ``--set``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import ConfigError

# Per-layer keys may hold one value for every block or a list with one value per block.
PER_LAYER_KEYS = ("num_heads", "mlp_ratio")


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


def _positive_number(value: Any) -> bool:
    return _is_number(value) and value > 0


def _keep_rate(value: Any) -> bool:
    return _is_number(value) and 0 < value <= 1


def _layer_numbers(value: Any) -> bool:
    return (
        isinstance(value, (list, tuple))
        and all(_positive_int(v) for v in value)
        and list(value) == sorted(set(value))
    )


KEY_SPECS: dict[str, KeySpec] = {
    "embed_dim": KeySpec(_positive_int, "a positive integer"),
    "depth": KeySpec(_positive_int, "a positive integer"),
    "num_heads": KeySpec(_positive_int, "a positive integer"),
    "mlp_ratio": KeySpec(_positive_number, "a positive number", float),
    "head_dim": KeySpec(_positive_int, "a positive integer"),
    "patch_size": KeySpec(_positive_int, "a positive integer"),
    "img_size": KeySpec(_positive_int, "a positive integer"),
    "num_classes": KeySpec(_positive_int, "a positive integer"),
    "keep_rate": KeySpec(_keep_rate, "a number in (0, 1] (1.0 = no token pruning)", float),
    "keep_layers": KeySpec(
        _layer_numbers, "a strictly increasing list of 1-based block numbers", tuple
    ),
}
VALID_KEYS = ", ".join(KEY_SPECS)


def check_key(key: str, where: str = "") -> KeySpec:
    """Return the spec of ``key`` or raise ``ConfigError`` listing the valid keys."""
    if key not in KEY_SPECS:
        raise ConfigError(f"{where}unknown configuration key {key!r}; valid keys: {VALID_KEYS}")
    return KEY_SPECS[key]


def check_value(key: str, value: Any, where: str = "") -> Any:
    """Validate one value of ``key`` (a per-layer key may be a list) and return it normalized."""
    spec = check_key(key, where)
    if key in PER_LAYER_KEYS and isinstance(value, (list, tuple)):
        if not value or not all(spec.check(v) for v in value):
            raise ConfigError(
                f"{where}{key}: expected {spec.valid} or a list of them (one per block), "
                f"got {value!r}"
            )
        return tuple(spec.coerce(v) for v in value)
    if not spec.check(value):
        raise ConfigError(f"{where}{key}: expected {spec.valid}, got {value!r}")
    return spec.coerce(value)


@dataclass(frozen=True)
class CandidateConfig:
    """A Vision Transformer configuration; the defaults are DeiT-Tiny at 224 px.

    ``head_dim`` is fixed per head (64, as in DeiT and AutoFormer), so the attention width is
    ``num_heads * head_dim`` and need not equal ``embed_dim``. ``keep_layers`` are 1-based block
    numbers, as the EViT paper writes them ("layers 4, 7 and 10").
    """

    embed_dim: int = 192
    depth: int = 12
    num_heads: int | tuple[int, ...] = 3
    mlp_ratio: float | tuple[float, ...] = 4.0
    head_dim: int = 64
    patch_size: int = 16
    img_size: int = 224
    num_classes: int = 1000
    keep_rate: float = 1.0
    keep_layers: tuple[int, ...] = (4, 7, 10)

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
        if self.keep_rate < 1 and self.keep_layers and self.keep_layers[-1] > self.depth:
            raise ConfigError(
                f"keep_layers: block numbers must be in 1..depth ({self.depth}), "
                f"got {list(self.keep_layers)}"
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
        return self.keep_rate if block + 1 in self.keep_layers else 1.0

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
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def load_config_file(path: Path) -> CandidateConfig:
    """A configuration from a YAML or JSON file: a mapping of keys, or an object with ``config``
    (an entry of ``pareto.json``)."""
    import yaml

    where = f"{path}: "
    try:
        values = yaml.safe_load(path.read_text())  # JSON is YAML
    except OSError as error:
        raise ConfigError(f"cannot read configuration file {path}: {error.strerror}") from None
    except yaml.YAMLError:
        raise ConfigError(f"{where}malformed YAML/JSON") from None
    if isinstance(values, dict) and isinstance(values.get("config"), dict):
        values = values["config"]
    if not isinstance(values, dict):
        raise ConfigError(f"{where}expected a mapping of configuration keys ({VALID_KEYS})")
    return CandidateConfig.from_dict(values, where=where)


def parse_set_options(assignments: list[str]) -> dict[str, Any]:
    """Parse ``--set key=value`` strings; values are YAML scalars or lists (``[4, 7, 10]``)."""
    import yaml

    overrides: dict[str, Any] = {}
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {assignment!r}; valid keys: {VALID_KEYS}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ConfigError(f"--set {key}: cannot parse value {raw!r}") from None
        overrides[key] = check_value(key, value, where="--set ")
    return overrides
