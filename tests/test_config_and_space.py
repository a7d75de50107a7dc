from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from harness.config import CandidateConfig, parse_set_options
from harness.errors import ConfigError, SearchSpaceError
from harness.space import bundled_space_names, load_space, parse_space


def test_defaults_are_deit_tiny_and_lists_round_trip():
    config = CandidateConfig()
    assert (config.embed_dim, config.depth, config.heads_at(0), config.mlp_hidden_at(0)) == (192, 12, 3, 768)
    again = CandidateConfig.from_dict(config.to_dict())
    assert again == config and again.key() == config.key()


def test_per_layer_values_need_one_per_block():
    config = CandidateConfig(depth=2, num_heads=[3, 4], mlp_ratio=[3.5, 4.0])
    assert [config.heads_at(b) for b in range(2)] == [3, 4]
    assert config.mlp_hidden_at(0) == int(192 * 3.5)
    with pytest.raises(ConfigError, match="one value per block"):
        CandidateConfig(depth=3, num_heads=[3, 4])


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"embed_dims": 3}, "unknown configuration key 'embed_dims'; valid keys: embed_dim"),
        ({"keep_rate": 1.5}, r"keep_rate: expected a number in \(0, 1\]"),
        ({"keep_rate": 0.7, "keep_layers": [4, 13]}, "keep_layers: block numbers must be in 1..depth"),
        ({"patch_size": 15}, "patch_size: must divide img_size"),
        ({"depth": 0}, "depth: expected a positive integer"),
        ({"keep_layers": [7, 4]}, "strictly increasing"),
    ],
)
def test_invalid_values_name_the_key_and_what_is_valid(values, message):
    with pytest.raises(ConfigError, match=message):
        CandidateConfig.from_dict(values)


def test_set_options_parse_yaml_values():
    assert parse_set_options(["keep_rate=0.7", "keep_layers=[4, 7, 10]", "depth=14"]) == {
        "keep_rate": 0.7, "keep_layers": (4, 7, 10), "depth": 14,
    }
    with pytest.raises(ConfigError, match="expects key=value"):
        parse_set_options(["keep_rate"])
    with pytest.raises(ConfigError, match="unknown configuration key 'nope'"):
        parse_set_options(["nope=1"])


def test_bundled_spaces_match_the_published_choices():
    assert {"vit_tiny", "vit_small"} <= set(bundled_space_names())
    tiny, small = load_space("vit_tiny").dimensions, load_space("vit_small").dimensions
    assert tiny["embed_dim"].choices == (192, 216, 240)
    assert tiny["depth"].choices == (12, 13, 14)
    assert tiny["num_heads"].choices == (3, 4) and tiny["num_heads"].per_layer
    assert tiny["mlp_ratio"].choices == (3.5, 4.0) and tiny["mlp_ratio"].per_layer
    assert small["embed_dim"].choices == (320, 384, 448)
    assert small["num_heads"].choices == (5, 6, 7)
    assert small["mlp_ratio"].choices == (3.0, 3.5, 4.0)
    for dims in (tiny, small):
        assert 1.0 in dims["keep_rate"].choices and len(dims["keep_rate"].choices) > 1


def test_per_layer_choices_are_sampled_per_block(tiny_space_file: Path):
    space = load_space(str(tiny_space_file))
    params = {"embed_dim": 48, "depth": 3, "num_heads.0": 1, "num_heads.1": 2, "num_heads.2": 2,
              "mlp_ratio": 2.0, "keep_rate": 0.5}
    config = space.suggest(optuna.trial.FixedTrial(params))
    assert config.num_heads == (1, 2, 2)
    assert config.keep_rate == 0.5 and config.keep_layers == (2,)


def test_with_fixed_pins_a_key(tiny_space_file: Path):
    space = load_space(str(tiny_space_file)).with_fixed({"embed_dim": 32})
    assert space.dimensions["embed_dim"].fixed and space.dimensions["embed_dim"].choices == (32,)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("params: {embed_dim: [192, abc]}", r"bad.yaml: params.embed_dim: expected a positive integer up to 16384, got 'abc'"),
        ("params: {embeddim: 192}", r"bad.yaml: params: unknown configuration key 'embeddim'; valid keys:"),
        ("params: {depth: {low: 14, high: 12}}", r"bad.yaml: params.depth: low/high/step must be"),
        ("params: {depth: {choices: [12], per_layer: true}}", r"params.depth.per_layer: only num_heads, mlp_ratio"),
        ("params: {keep_rate: [0.7, 1.0], keep_layers: [4, 13], depth: 12}", r"params.keep_layers: block numbers must be <= the smallest depth \(12\)"),
        ("params: {embed_dim: {values: [1]}}", r"params.embed_dim: unknown field 'values'; valid: choices"),
        ("params: [1, 2]", r"bad.yaml: params: expected a mapping"),
        ("params: {embed_dim: [192\n", r"bad.yaml: line \d+: malformed YAML"),
        ("schema_version: 9\nparams: {depth: 12}", r"schema_version: expected 1, got 9"),
        ("nmae: x\nparams: {depth: 12}", r"unknown top-level key 'nmae'"),
    ],
)
def test_space_errors_name_file_key_and_valid_values(text, message):
    with pytest.raises(SearchSpaceError, match=message):
        parse_space(text, source="bad.yaml")


def test_unknown_space_lists_the_bundled_ones():
    with pytest.raises(SearchSpaceError, match="unknown search space 'vit_huge'; valid: .*vit_small, vit_tiny"):
        load_space("vit_huge")
    with pytest.raises(SearchSpaceError, match="search space file missing.yaml: no such file"):
        load_space("missing.yaml")
