"""Search spaces: YAML files → ``SearchSpace`` → ``CandidateConfig`` per Optuna trial.

A space file looks like::

    schema_version: 1
    name: vit_tiny
    description: AutoFormer-T-like space
    params:
      embed_dim: [192, 216, 240]            # a list: one choice among these
      depth: {low: 12, high: 14}            # an integer range, both ends included
      num_heads: {choices: [3, 4], per_layer: true}   # one choice per block (AutoFormer)
      patch_size: 16                        # a scalar: fixed
      keep_layers: [4, 7, 10]               # list-valued key: a plain list is the fixed value

Keys left out take the ``CandidateConfig`` defaults. Every error names the file and the key.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.config import (
    KEY_SPECS,
    PER_LAYER_KEYS,
    SWITCHES,
    CandidateConfig,
    check_key,
    check_value,
    quoted,
    shown,
)
from harness.cost import check_buildable
from harness.errors import ConfigError, SearchSpaceError, shorten
from harness.yaml_files import bundled_names, parse_yaml, read_named_or_path, string_field

SCHEMA_VERSION = 1
SPACES_PACKAGE = "harness.search_spaces"
# Sampling order: per-layer keys need the depth; per-layer attention needs every other key.
_SAMPLING_ORDER = {"depth": 0, "attention": 2}
# Keys whose larger values never lower MACs or parameters, and keys whose larger values never
# raise them; every choice of the other keys is tried when bounding the space's cost from below.
_COST_GROWS_WITH = ("embed_dim", "depth", "num_heads", "mlp_ratio", "head_dim", "num_classes",
                    "keep_rate")
_COST_SHRINKS_WITH = ("merge_r",)
# Keys that shape the token counts and the attention of a configuration. Bounding its sizes from
# above tries their every combination; sparsity and precision keep their defaults (they change
# kernels, not sizes).
_SHAPE_TOKENS = ("img_size", "patch_size", "attention", "window_size", "kv_pool", "keep_layers",
                 "fuse_tokens", "merge_schedule")
MAX_CHOICES = 1000  # per key; Optuna's categorical sampling slows down long before
MAX_LARGEST_CONFIGS = 10_000  # combinations of _SHAPE_TOKENS checked against the size limits


@dataclass(frozen=True)
class Dimension:
    """One key of a space: a fixed value or a set of choices, shared or chosen per block."""

    key: str
    choices: tuple[Any, ...]
    per_layer: bool = False

    @property
    def fixed(self) -> bool:
        return len(self.choices) == 1 and not self.per_layer


@dataclass(frozen=True)
class SearchSpace:
    name: str
    description: str
    dimensions: dict[str, Dimension]
    source: str

    def suggest(self, trial: Any) -> CandidateConfig:
        """Sample a configuration with an Optuna trial (``suggest_categorical`` per choice).

        Per-layer attention is chosen only for the blocks that keep the full patch grid (the
        others must be global), so it is sampled last, once the token-reduction keys are known.
        """
        values: dict[str, Any] = {}
        ordered = sorted(self.dimensions.values(), key=lambda d: _SAMPLING_ORDER.get(d.key, 1))
        for dim in ordered:
            if dim.fixed:
                values[dim.key] = dim.choices[0]
            elif dim.per_layer:
                blocks = values["depth"]
                if dim.key == "attention":
                    blocks = CandidateConfig.from_dict({**values, "attention": "global"}).grid_blocks()
                values[dim.key] = [
                    trial.suggest_categorical(f"{dim.key}.{block}", dim.choices)
                    for block in range(blocks)
                ] + ["global"] * (values["depth"] - blocks)
            else:
                encoded = {_encode(choice): choice for choice in dim.choices}
                values[dim.key] = encoded[trial.suggest_categorical(dim.key, tuple(encoded))]
        return CandidateConfig.from_dict(values, where=f"{self.source}: ")

    def sample(self, n: int, seed: int = 0) -> list[CandidateConfig]:
        """``n`` configurations drawn uniformly at random (Optuna's RandomSampler, in memory)."""
        import optuna

        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        configs = []
        for _ in range(n):
            trial = study.ask()
            configs.append(self.suggest(trial))
            study.tell(trial, 0.0)
        return configs

    def with_fixed(self, overrides: dict[str, Any]) -> SearchSpace:
        """The same space with some keys pinned to one value (``--set`` on ``harness search``).

        A pinned value other than the default that no configuration of the space would use
        (``window_size`` where attention is never ``window``) is refused: it can never matter.
        """
        space = self.with_choices({key: (value,) for key, value in overrides.items()})
        for key, value in overrides.items():
            switch = SWITCHES.get(key)
            if switch is None or value == getattr(CandidateConfig, key):
                continue
            dim = space.dimensions.get(switch.key)
            if dim is not None and dim.per_layer:  # a per-block list of any of its choices
                values, described = (dim.choices,), f"chosen per block from {quoted(dim.choices)}"
            else:
                values = space._choices(switch.key)
                described = quoted(values[0]) if len(values) == 1 else f"one of {quoted(values)}"
            if not any(switch.turns_on(v) for v in values):
                raise SearchSpaceError(
                    f"{self.source}: --set {key}={shown(value)} has no effect: {switch.key} is "
                    f"{described} in every configuration of the space ({switch.how})")
        return space

    def with_choices(self, choices: dict[str, tuple[Any, ...]]) -> SearchSpace:
        """The same space with the choices of some keys replaced (shared across blocks)."""
        dims = dict(self.dimensions)
        for key, values in choices.items():
            dims[key] = Dimension(key, tuple(values))
        space = SearchSpace(self.name, self.description, dims, self.source)
        space.check_consistent()
        return space

    def corner_configs(self) -> Iterator[CandidateConfig]:
        """Configurations that bound the space's cost from below.

        Keys in ``_COST_GROWS_WITH`` take their smallest choice and ``merge_r`` its largest; the
        other keys (patch and image size, which move parameters and MACs in opposite directions,
        attention variants, token-reduction layout) are tried in every combination. Per-layer keys
        take one value for every block.
        """
        bounds = {key: min for key in _COST_GROWS_WITH} | {key: max for key in _COST_SHRINKS_WITH}
        tried = [key for key in self.dimensions if key not in bounds]
        # a fixed per-layer attention list is covered by its variants alone
        yield from (config for config in self._extreme_configs(bounds, tried)
                    if not isinstance(config.attention, tuple))

    def largest_configs(self) -> Iterator[CandidateConfig]:
        """Configurations that bound the space's sizes (parameters, tokens, attention scores)
        from above: the keys in ``_COST_GROWS_WITH`` at their largest choice, ``merge_r`` at its
        smallest, the keys in ``_SHAPE_TOKENS`` in every combination.

        Raises:
            SearchSpaceError: more than ``MAX_LARGEST_CONFIGS`` combinations to try.
        """
        bounds = {key: max for key in _COST_GROWS_WITH} | {key: min for key in _COST_SHRINKS_WITH}
        tried = [key for key in _SHAPE_TOKENS if key in self.dimensions]
        combinations = math.prod(len(self.dimensions[key].choices) for key in tried)
        if combinations > MAX_LARGEST_CONFIGS:
            raise SearchSpaceError(
                f"{self.source}: params: {combinations:,} combinations of {', '.join(tried)} to "
                f"check against the size limits, at most {MAX_LARGEST_CONFIGS:,}; offer fewer "
                "choices")
        yield from self._extreme_configs(bounds, tried)

    def _extreme_configs(self, bounds: dict[str, Any], tried: list[str]
                         ) -> Iterator[CandidateConfig]:
        """The valid configurations with each key of ``bounds`` at ``bound(its choices)`` and
        the keys ``tried`` in every combination of their choices; other keys at their defaults."""
        fixed: dict[str, Any] = {}
        for key, dim in self.dimensions.items():
            if key in bounds:
                fixed[key] = bounds[key](_flat(dim.choices))
        depth = fixed.get("depth", CandidateConfig.depth)
        for key, dim in self.dimensions.items():
            if dim.per_layer and key in fixed:  # a per-block list: keep_rate applies in every block
                fixed[key] = [fixed[key]] * depth
        for combination in itertools.product(*(self._choices(key) for key in tried)):
            values = {**fixed, **dict(zip(tried, combination))}
            try:
                yield CandidateConfig.from_dict(values)
            except ConfigError:
                continue

    def largest_config(self) -> CandidateConfig:
        """A configuration whose every weight tensor is at least as large as any candidate's:
        widest, deepest, most heads, largest MLP ratio, most tokens (largest image, smallest patch).
        """
        growing = ("embed_dim", "depth", "num_heads", "mlp_ratio", "head_dim", "num_classes",
                   "img_size")
        largest = {key: max(_flat(self._choices(key))) for key in growing}
        largest["patch_size"] = min(self._choices("patch_size"))
        return CandidateConfig.from_dict(largest)

    def size(self) -> int:
        """Number of distinct configurations (per-layer keys counted per depth)."""
        shared = math.prod(len(d.choices) for d in self.dimensions.values() if not d.per_layer)
        per_layer = [len(d.choices) for d in self.dimensions.values() if d.per_layer]
        return shared // len(self._choices("depth")) * sum(
            math.prod(n**depth for n in per_layer) for depth in self._choices("depth")
        )

    def to_dict(self) -> dict[str, Any]:
        """A plain description for reports and study metadata."""
        return {
            "name": self.name,
            "source": self.source,
            "params": {
                key: {"choices": [_plain(c) for c in dim.choices], "per_layer": dim.per_layer}
                for key, dim in sorted(self.dimensions.items())
            },
        }

    def _choices(self, key: str) -> tuple[Any, ...]:
        if key in self.dimensions:
            return self.dimensions[key].choices
        return (getattr(CandidateConfig, key),)

    def check_consistent(self) -> None:
        """Reject spaces that contain no valid configuration, some invalid ones, or ones over a
        size limit (``check_buildable``: a search builds the largest for weight sharing)."""
        where = f"{self.source}: "
        min_depth = min(self._choices("depth"))
        prunes = min(_flat(self._choices("keep_rate"))) < 1
        for layers in self._choices("keep_layers"):
            if prunes and layers and layers[-1] > min_depth:
                raise SearchSpaceError(
                    f"{where}params.keep_layers: block numbers must be <= the smallest depth "
                    f"({min_depth}), got {quoted(layers)}"
                )
        for key in PER_LAYER_KEYS:
            dim = self.dimensions.get(key)
            fixed_list = dim is not None and dim.fixed and isinstance(dim.choices[0], tuple)
            if fixed_list and (
                len(self._choices("depth")) > 1 or len(dim.choices[0]) != min_depth
            ):
                raise SearchSpaceError(
                    f"{where}params.{key}: a fixed per-layer list needs a fixed depth of the "
                    f"same length; use {{choices: [...], per_layer: true}} instead"
                )
        img_sizes, patch_sizes = self._choices("img_size"), self._choices("patch_size")
        if not any(i % p == 0 for i in img_sizes for p in patch_sizes):
            raise SearchSpaceError(
                f"{where}params.patch_size: no choice divides any img_size {quoted(img_sizes)}"
            )
        for config in self.largest_configs():
            try:
                check_buildable(config)
            except ConfigError as error:
                raise SearchSpaceError(f"{where}its largest configurations are over a size "
                                       f"limit: {error}") from None


def _flat(choices: tuple[Any, ...]) -> list[Any]:
    """The values of ``choices``, per-layer lists unpacked."""
    return [v for c in choices for v in (c if isinstance(c, tuple) else (c,))]


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _encode(value: Any) -> Any:
    # Optuna categorical choices must be scalars; list values (keep_layers) travel as strings.
    return ",".join(str(v) for v in value) if isinstance(value, tuple) else value


def bundled_space_names() -> list[str]:
    return bundled_names(SPACES_PACKAGE)


def load_space(name_or_path: str) -> SearchSpace:
    """Load a bundled space by name (``vit_tiny``) or any YAML file by path."""
    text, source = read_named_or_path(name_or_path, SPACES_PACKAGE, "search space", SearchSpaceError)
    return parse_space(text, source)


def space_from_dict(values: dict[str, Any]) -> SearchSpace:
    """The space that ``SearchSpace.to_dict`` described (a study's metadata), checked as a file
    is; its description is not kept there."""
    document = {"name": values["name"], "params": values["params"]}
    return parse_space(json.dumps(document), values["source"])


def parse_space(text: str, source: str) -> SearchSpace:
    document = parse_yaml(text, source, SearchSpaceError)
    if not isinstance(document, dict):
        raise SearchSpaceError(f"{source}: expected a mapping with keys name and params")
    where = f"{source}: "
    version = document.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise SearchSpaceError(f"{where}schema_version: expected {SCHEMA_VERSION}, got "
                               f"{shorten(version)}")
    unknown = set(document) - {"schema_version", "name", "description", "params"}
    if unknown:
        raise SearchSpaceError(
            f"{where}unknown top-level key {shorten(min(unknown, key=str))}; valid: "
            "schema_version, name, description, params"
        )
    params = document.get("params")
    if not isinstance(params, dict) or not params:
        raise SearchSpaceError(f"{where}params: expected a mapping of configuration keys")
    try:
        dims = {key: _parse_dimension(key, spec, where) for key, spec in params.items()}
    except ConfigError as error:
        raise SearchSpaceError(str(error)) from None
    space = SearchSpace(
        name=string_field(document, "name", Path(source).stem, source, SearchSpaceError),
        description=string_field(document, "description", "", source, SearchSpaceError),
        dimensions=dims,
        source=source,
    )
    space.check_consistent()
    return space


def _parse_dimension(key: Any, spec: Any, where: str) -> Dimension:
    check_key(str(key), f"{where}params: ")
    at = f"{where}params."
    list_valued = key == "keep_layers"
    if isinstance(spec, dict):
        return _parse_mapping(key, spec, at)
    if isinstance(spec, list) and not list_valued:
        return _parse_mapping(key, {"choices": spec}, at)
    return Dimension(key, (check_value(key, spec, at),))


def _parse_mapping(key: str, spec: dict[str, Any], at: str) -> Dimension:
    allowed = {"choices", "per_layer", "low", "high", "step"}
    unknown = set(spec) - allowed
    if unknown:
        raise SearchSpaceError(
            f"{at}{key}: unknown field {shorten(min(unknown, key=str))}; valid: choices, "
            "per_layer, low, high, step"
        )
    if "choices" in spec:
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise SearchSpaceError(f"{at}{key}.choices: expected a non-empty list, got "
                                   f"{shorten(choices)}")
    elif "low" in spec and "high" in spec:
        low, high, step = spec["low"], spec["high"], spec.get("step", 1)
        if not all(isinstance(v, int) for v in (low, high, step)) or step <= 0 or low > high:
            raise SearchSpaceError(
                f"{at}{key}: low/high/step must be integers with low <= high and step > 0, "
                f"got {shorten(spec)}"
            )
        choices = range(low, high + 1, step)  # not a list yet: a range may be huge
    else:
        raise SearchSpaceError(f"{at}{key}: expected 'choices' or 'low' and 'high'")
    if len(choices) > MAX_CHOICES:
        raise SearchSpaceError(f"{at}{key}: {len(choices):,} choices, at most {MAX_CHOICES:,} "
                               "per key")
    per_layer = spec.get("per_layer", False)
    if per_layer not in (True, False):
        raise SearchSpaceError(f"{at}{key}.per_layer: expected true or false, got "
                               f"{shorten(per_layer)}")
    if per_layer and key not in PER_LAYER_KEYS:
        raise SearchSpaceError(
            f"{at}{key}.per_layer: only {', '.join(PER_LAYER_KEYS)} can be chosen per layer"
        )
    values = tuple(check_value(key, choice, at) for choice in choices)
    if len(set(values)) != len(values):
        raise SearchSpaceError(f"{at}{key}.choices: duplicate values in {quoted(values)}")
    return Dimension(key, values, per_layer=bool(per_layer))


__all__ = ["KEY_SPECS", "Dimension", "SearchSpace", "bundled_space_names", "load_space", "parse_space"]
