"""Input limits: model sizes, YAML documents, list lengths, and stated keys that take no effect.

Every refusal is one line, comes before any model is built, and names the key, the value and the
limit. Nothing here builds a large model or expands a YAML bomb: the refusals are what is tested.
"""

from __future__ import annotations

import json
import tracemalloc

import optuna
import pytest

import harness.bench.knob_bench
import harness.bench.suites
import harness.models
import harness.search.objective
from harness.bench.suites import BenchError, load_suite
from harness.budget import parse_budget
from harness.cli import MAX_ERROR_CHARS, main
from harness.config import CandidateConfig, check_keys_take_effect, parse_set_options
from harness.cost import check_buildable, estimate_cost
from harness.devices import parse_profile
from harness.errors import BudgetError, ConfigError, DeviceError, SearchSpaceError
from harness.space import load_space, parse_space
from harness.yaml_files import UnreadableYaml, load_yaml

# "Billion laughs" in a description: nine levels of nine aliases, 9^9 (387 million) strings once
# expanded, which str() of the loaded description would do.
BOMB_DESCRIPTION = (
    "description:\n  - &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    + "".join(f"  - &a{level} [{', '.join([f'*a{level - 1}'] * 9)}]\n" for level in range(1, 9))
    + "  - [*a8, *a8, *a8, *a8, *a8, *a8, *a8, *a8, *a8]\n")
MAX_BOMB_MEMORY = 20 * 1024 * 1024  # bytes Python may allocate while refusing a bomb


@pytest.fixture
def nothing_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if any command builds a model (every module that calls the builder)."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was built")

    for module in (harness.models, harness.search.objective, harness.bench.suites,
                   harness.bench.knob_bench):
        monkeypatch.setattr(module, "build_model", refuse)


def one_error_line(capsys: pytest.CaptureFixture) -> str:
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith("harness: error: ")
    assert len(captured.err) < MAX_ERROR_CHARS and "Traceback" not in captured.err
    return captured.err


# --- model size ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (["depth=10000"], "--set depth: expected a positive integer up to 256, got 10000"),
        (["num_heads=100000"],
         "--set num_heads: expected a positive integer up to 256, got 100000"),
        (["embed_dim=20000"],
         "--set embed_dim: expected a positive integer up to 16384, got 20000"),
        (["head_dim=2048"], "--set head_dim: expected a positive integer up to 1024, got 2048"),
        (["num_classes=1000000"], "--set num_classes: expected a positive integer up to 100000"),
        (["img_size=8192"], "--set img_size: expected a positive integer up to 4096, got 8192"),
        (["mlp_ratio=.inf"], "--set mlp_ratio: expected a positive number up to 64, got inf"),
        (["embed_dim=16384", "mlp_ratio=8"],
         ("mlp_ratio: embed_dim 16384 x mlp_ratio 8 is an MLP width of 131,072, above the limit of "
          "65,536")),
        (["img_size=4096", "patch_size=4"],
         ("img_size: 4096 px at patch_size 4 is 1,048,576 patch tokens per image, above the limit "
          "of 262,144")),
        # each key within its own bound, 38.7 billion parameters together
        (["embed_dim=8192", "depth=48", "num_heads=64", "head_dim=128"],
         ("parameters: 38,675,948,520 (embed_dim 8192, depth 48), above the limit of "
          "2,000,000,000")),
        (["img_size=2048", "patch_size=8"],
         ("attention scores: blocks.0.attn.softmax holds 12,885,295,107 scores per image (heads x "
          "queries x keys), above the limit of 1,000,000,000")),
        (["img_size=2048", "patch_size=8", "attention=window", "window_size=8", "depth=1",
          "embed_dim=4096"],
         ("activations: blocks.0.mlp.fc1 handles 1,073,758,208 values per image, above the limit "
          "of 1,000,000,000")),
    ],
)
def test_measure_refuses_an_oversized_model_in_one_line_without_building_it(
        settings, message, nothing_is_built, capsys):
    args = ["measure", "--device", "zcu102", "--no-latency"]
    assert main([*args, *(f"--set={setting}" for setting in settings)]) == 2
    assert message in one_error_line(capsys)


def test_published_vits_are_within_the_limits_and_vit_22b_is_not():
    vit_g14 = CandidateConfig(embed_dim=1664, depth=48, num_heads=16, head_dim=104,
                              mlp_ratio=8192 / 1664, patch_size=14)
    sam_vit_h = CandidateConfig(embed_dim=1280, depth=32, num_heads=16, head_dim=80,
                                img_size=1024, patch_size=16)
    for config in (vit_g14, sam_vit_h):
        check_buildable(config)
    assert estimate_cost(vit_g14).params == pytest.approx(1.84e9, rel=0.01)
    # every key of ViT-22B is within its own bound; its 21.8 billion parameters are not
    vit_22b = CandidateConfig(embed_dim=6144, depth=48, num_heads=48, head_dim=128, patch_size=14)
    with pytest.raises(ConfigError, match="parameters: 21,758,467,048 .* above the limit"):
        check_buildable(vit_22b)
    with pytest.raises(ConfigError, match="parameters: "):
        harness.models.build_model(vit_22b)  # refused before a single weight is allocated


def test_a_space_with_depth_10000_is_refused_when_loaded(tmp_path, nothing_is_built, capsys):
    space = tmp_path / "deep.yaml"
    space.write_text("params:\n  embed_dim: 192\n  depth: 10000\n")
    assert main(["search", "--space", str(space), "--accuracy", "proxy:params"]) == 2
    assert (f"{space}: params.depth: expected a positive integer up to 256, got 10000"
            in one_error_line(capsys))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ("{embed_dim: [192, 8192], depth: [12, 48], num_heads: 64, head_dim: 128}",
         (r"big.yaml: its largest configurations are over a size limit: parameters: "
          r"38,675,948,520 \(embed_dim 8192, depth 48\), above the limit of 2,000,000,000")),
        ("{embed_dim: [192, 16384], mlp_ratio: {choices: [4.0, 8.0], per_layer: true}}",
         (r"big.yaml: its largest configurations are over a size limit: mlp_ratio: embed_dim "
          r"16384 x mlp_ratio 8 is an MLP width of 131,072")),
        ("{img_size: [224, 1024], patch_size: [16, 4], num_heads: 1, attention: [window, global]}",
         (r"big.yaml: its largest configurations are over a size limit: attention scores: "
          r"blocks.0.attn.softmax holds 4,295,098,369")),
    ],
)
def test_a_space_whose_largest_configurations_exceed_a_limit_is_refused(params, message):
    with pytest.raises(SearchSpaceError, match=message):
        parse_space(f"params: {params}\n", "big.yaml")


def test_space_limits_follow_the_attention_the_space_can_run():
    """65,536 tokens in 8x8 windows are fine; the same tokens in global attention are not."""
    windows = ("params: {img_size: 1024, patch_size: 4, embed_dim: 64, depth: 2, num_heads: 1, "
               "head_dim: 16, attention: window, window_size: 8}\n")
    assert parse_space(windows, "windows.yaml").largest_config().num_patches == 65536
    with pytest.raises(SearchSpaceError, match="attention scores"):
        parse_space(windows.replace("attention: window", "attention: [window, global]"), "x.yaml")


def test_a_space_with_too_many_token_shapes_to_check_is_refused():
    text = "params: {img_size: {low: 32, high: 1031}, patch_size: {low: 1, high: 100}}\n"
    with pytest.raises(SearchSpaceError, match=r"params: 100,000 combinations of img_size, "
                       r"patch_size to check against the size limits, at most 10,000"):
        parse_space(text, "wide.yaml")


def test_a_suite_entry_over_a_limit_is_refused_when_loaded(tmp_path, nothing_is_built, capsys):
    suite = tmp_path / "suite.yaml"
    suite.write_text("entries:\n  - {name: huge, arch: deit_base, set: {embed_dim: 8192, "
                     "depth: 48, num_heads: 64, head_dim: 128}}\n")
    with pytest.raises(BenchError, match=r"suite.yaml: entries\[0\]: parameters: 38,675,948,520"):
        load_suite(str(suite))
    assert main(["bench", "--suite", str(suite), "--out", str(tmp_path / "out")]) == 2
    assert "entries[0]: parameters:" in one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_hls_synth_refuses_an_oversized_model_before_writing_anything(tmp_path, capsys):
    out = tmp_path / "kernels"
    assert main(["hls", "synth", "--device", "zcu102", "--set", "img_size=4096", "--set",
                 "patch_size=4", "--out", str(out)]) == 2
    assert "patch tokens per image, above the limit of 262,144" in one_error_line(capsys)
    assert not out.exists()


# --- YAML documents -----------------------------------------------------------------------------

def _refused_without_memory_growth(load, *args) -> str:
    tracemalloc.start()
    try:
        with pytest.raises((SearchSpaceError, DeviceError, BenchError)) as refusal:
            load(*args)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MAX_BOMB_MEMORY
    message = str(refusal.value)
    assert "\n" not in message and len(message) < MAX_ERROR_CHARS
    return message


@pytest.mark.parametrize(
    ("file_name", "document", "load"),
    [
        ("space.yaml", "params: {depth: 12}\n", lambda path: load_space(str(path))),
        ("device.yaml", "kind: cpu\n", lambda path: parse_profile(path.read_text(), str(path))),
        ("suite.yaml", "entries: [{name: t, arch: deit_tiny}]\n",
         lambda path: load_suite(str(path))),
    ],
)
def test_an_alias_bomb_in_a_description_is_refused_without_expanding_it(
        tmp_path, file_name, document, load):
    path = tmp_path / file_name
    path.write_text(document + BOMB_DESCRIPTION)
    message = _refused_without_memory_growth(load, path)
    assert message == (f"{path}: its aliases expand to more than 100,000 values (an alias "
                       "bomb?)")


def test_an_alias_bomb_is_one_line_from_the_command_line(tmp_path, nothing_is_built, capsys):
    space = tmp_path / "bomb.yaml"
    space.write_text("params: {depth: 12}\n" + BOMB_DESCRIPTION)
    assert main(["search", "--space", str(space), "--accuracy", "proxy:params"]) == 2
    assert "bomb.yaml: its aliases expand to more than 100,000 values" in one_error_line(capsys)


def test_a_2_mib_yaml_file_is_refused_before_it_is_parsed(tmp_path, capsys):
    path = tmp_path / "huge.yaml"
    path.write_text("params: {depth: 12}\n" + "# padding\n" * (2 * 1024 * 1024 // 10))
    message = _refused_without_memory_growth(load_space, str(path))
    assert message == f"search space file {path}: larger than 1 MiB; is it the right file?"
    with pytest.raises(UnreadableYaml, match="larger than 1 MiB"):
        load_yaml(path.read_text())
    assert main(["measure", "--config", str(path), "--no-latency"]) == 2
    assert f"configuration file {path}: larger than 1 MiB" in one_error_line(capsys)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("&a [1, *a]", "an alias refers to a value that contains it"),
        ("a: " + "[" * 150 + "]" * 150, r"a\[0\]\[0\].*: nested more than 100 levels deep"),
        ("a: {b: [" + ", ".join(["1"] * 10_001) + "]}", r"a.b: a list of more than 10,000 items"),
        ("{" + ", ".join(f"k{i}: 1" for i in range(50_001)) + "}", "more than 100,000 values"),
        ("depth: 1" + "0" * 5000, "cannot load a value: Exceeds the limit"),
        ("date: 2026-13-01", "cannot load a value: month must be in 1..12"),
    ],
)
def test_yaml_over_a_limit_is_refused_in_one_line(text, message):
    with pytest.raises(SearchSpaceError, match=message) as refusal:
        parse_space(text, "bad.yaml")
    assert str(refusal.value).startswith("bad.yaml: ") and len(str(refusal.value)) < 300


def test_shared_aliases_within_the_limits_still_load():
    assert load_yaml("a: &a [1, 2]\nb: *a\nc: [*a, *a]") == {"a": [1, 2], "b": [1, 2],
                                                             "c": [[1, 2], [1, 2]]}


@pytest.mark.parametrize(
    ("load", "document", "message"),
    [
        (lambda text: parse_space(text, "s.yaml"), "description: [a, b]\nparams: {depth: 12}\n",
         "s.yaml: description: expected a string, got ['a', 'b']"),
        (lambda text: parse_space(text, "s.yaml"), "name: {a: 1}\nparams: {depth: 12}\n",
         "s.yaml: name: expected a string, got {'a': 1}"),
        (lambda text: parse_profile(text, "d.yaml"), "kind: cpu\ndescription: [a]\n",
         "d.yaml: description: expected a string, got ['a']"),
        (lambda text: parse_profile(text, "d.yaml"), "kind: cpu\nname: [cpu]\n",
         "d.yaml: name: expected a string, got ['cpu']"),
    ],
)
def test_name_and_description_must_be_strings(load, document, message):
    with pytest.raises((SearchSpaceError, DeviceError)) as refusal:
        load(document)
    assert str(refusal.value) == message


def test_a_suite_description_must_be_a_string(tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text("description: {a: 1}\nentries: [{name: t, arch: deit_tiny}]\n")
    with pytest.raises(BenchError, match=r"suite.yaml: description: expected a string, got "
                       r"\{'a': 1\}$"):
        load_suite(str(suite))


# --- list lengths and echoed values -------------------------------------------------------------

def test_a_200000_item_choice_list_is_one_short_line_naming_the_key_and_the_limit(
        tmp_path, nothing_is_built, capsys):
    space = tmp_path / "long.yaml"
    space.write_text("params:\n  embed_dim: [" + ", ".join(["192"] * 200_000) + "]\n")
    assert main(["search", "--space", str(space), "--accuracy", "proxy:params"]) == 2
    assert f"{space}: params.embed_dim: a list of more than 10,000 items" in one_error_line(capsys)
    space.write_text("params:\n  embed_dim: {low: 1, high: 200000}\n")
    assert main(["search", "--space", str(space), "--accuracy", "proxy:params"]) == 2
    assert (f"{space}: params.embed_dim: 200,000 choices, at most 1,000 per key"
            in one_error_line(capsys))


def test_a_huge_range_is_counted_not_listed():
    with pytest.raises(SearchSpaceError, match=r"params.depth: 1,000,000,000,000 choices, at "
                       r"most 1,000 per key"):
        parse_space("params: {depth: {low: 1, high: 1000000000000}}\n", "r.yaml")


def test_per_layer_lists_are_bounded_by_the_depth_limit():
    with pytest.raises(ConfigError, match=r"--set num_heads: a per-layer list has one value per "
                       r"block, at most 256; got 300 values"):
        parse_set_options([f"num_heads=[{', '.join(['3'] * 300)}]"])
    with pytest.raises(ConfigError, match=r"keep_layers: expected a strictly increasing list of "
                       r"1-based block numbers up to 256, got \[1, 2, 3, 4, 5, 6, 7, 8, \.\.\.\]"):
        parse_set_options([f"keep_layers=[{', '.join(str(n) for n in range(1, 301))}]"])


@pytest.mark.parametrize(
    ("refuse", "error"),
    [
        (lambda: parse_budget("1" * 5000 + "x"), BudgetError),
        (lambda: parse_space("params: {embed_dim: {choices: " + "x" * 100_000 + "}}", "s.yaml"),
         SearchSpaceError),
        (lambda: parse_space("params: {depth: [" + ", ".join(["1"] * 1000) + "]}", "s.yaml"),
         SearchSpaceError),
        (lambda: parse_profile("kind: " + "x" * 100_000, "d.yaml"), DeviceError),
        (lambda: parse_set_options(["depth=" + "9" * 4000]), ConfigError),
    ],
)
def test_echoed_values_are_cut_short(refuse, error):
    with pytest.raises(error) as refusal:
        refuse()
    assert "..." in str(refusal.value) and len(str(refusal.value)) < 300


# --- stated keys that take no effect ------------------------------------------------------------

@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (["window_size=5"],
         "window_size=5 has no effect: attention is 'global' (set attention=window)"),
        (["kv_pool=7"], "kv_pool=7 has no effect: attention is 'global' (set attention=pooled)"),
        (["merge_schedule=decreasing"], "merge_schedule=decreasing has no effect: merge_r is 0"),
        (["merge_r=[8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8]", "merge_schedule=decreasing"],
         ("merge_schedule=decreasing has no effect: merge_r is [8, 8, 8, 8, 8, 8, 8, 8, ...] (set "
          "merge_r to a positive integer; a per-block list is a schedule of its own)")),
        (["keep_layers=[2, 5]"], "keep_layers=[2, 5] has no effect: keep_rate is 1.0"),
        (["fuse_tokens=false"], "fuse_tokens=False has no effect: keep_rate is 1.0"),
        (["sparsity_block=16"],
         "sparsity_block=16 has no effect: weight_sparsity is 'dense' (set weight_sparsity=block)"),
        (["block_sparsity=0.7"], "block_sparsity=0.7 has no effect: weight_sparsity is 'dense'"),
        (["keep_rate=0.7", "keep_layers=[]"],
         "keep_rate=0.7 has no effect: keep_layers is empty"),
        (["attention=window", "keep_rate=0.5", "keep_layers=[1]"],
         "attention=window has no effect: block 1 already reduces tokens"),
    ],
)
def test_measure_refuses_a_set_key_that_has_no_effect(settings, message, nothing_is_built,
                                                      capsys):
    assert main(["measure", "--no-latency", *(f"--set={setting}" for setting in settings)]) == 2
    assert message in one_error_line(capsys)


@pytest.mark.parametrize(
    "values",
    [
        {"attention": "window", "window_size": 14},
        {"attention": "pooled", "kv_pool": 7},
        {"window_size": 7},  # the default: nothing stated beyond it
        {"merge_r": 8, "merge_schedule": "decreasing"},
        {"keep_rate": 0.7, "keep_layers": (2, 5), "fuse_tokens": False},
        {"keep_rate": [1.0] * 3 + [0.7] * 9, "fuse_tokens": False},
        {"weight_sparsity": "block", "sparsity_block": 16, "block_sparsity": 0.7},
    ],
)
def test_keys_that_take_effect_pass(values):
    check_keys_take_effect(CandidateConfig.from_dict(values), values)


def test_a_search_candidate_may_hold_keys_without_effect():
    """Spaces sample such keys regardless of the knob; only stated configurations are checked."""
    space = parse_space("params: {attention: [global, window], window_size: [2, 7]}\n", "s.yaml")
    config = space.suggest(optuna.trial.FixedTrial({"attention": "global", "window_size": 2}))
    assert config.attention == "global" and config.window_size == 2


def test_config_files_state_their_keys_but_pareto_entries_do_not(tmp_path, capsys):
    plain = tmp_path / "plain.yaml"
    plain.write_text("embed_dim: 192\nwindow_size: 5\n")
    assert main(["measure", "--config", str(plain), "--no-latency"]) == 2
    assert "window_size=5 has no effect: attention is 'global'" in one_error_line(capsys)
    # a search chose this entry's window_size alongside global attention: it is measured as is
    entry = tmp_path / "winner.json"
    entry.write_text(json.dumps({"trial": 3, "config": {"depth": 2, "window_size": 5}}))
    assert main(["measure", "--config", str(entry), "--no-latency", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["window_size"] == 5
    assert main(["measure", "--config", str(entry), "--no-latency", "--set", "kv_pool=4"]) == 2
    assert "kv_pool=4 has no effect" in one_error_line(capsys)


def test_suite_entries_state_their_keys(tmp_path):
    suite = tmp_path / "suite.yaml"
    for entry in ("{name: w, arch: deit_tiny, set: {window_size: 5}}",
                  "{name: w, config: {depth: 2, kv_pool: 4}}"):
        suite.write_text(f"entries:\n  - {entry}\n")
        with pytest.raises(BenchError, match=r"entries\[0\]: (window_size=5|kv_pool=4) has no "
                           r"effect: attention is 'global'"):
            load_suite(str(suite))
    for name in ("smoke", "nightly"):  # the bundled suites state only keys that take effect
        assert load_suite(name).entries


def test_bench_knobs_refuses_a_knob_without_effect_before_timing(fast_device_file, capsys):
    assert main(["bench-knobs", "--knob", "window_size=5", "--arch", "deit_tiny", "--device",
                 str(fast_device_file)]) == 2
    assert one_error_line(capsys) == (
        "harness: error: knob window_size=5 on deit_tiny: window_size=5 has no effect: attention "
        "is 'global' (set attention=window)\n")


def test_hls_synth_refuses_a_key_without_effect(tmp_path, capsys):
    out = tmp_path / "kernels"
    assert main(["hls", "synth", "--device", "zcu102", "--set", "kv_pool=7", "--out",
                 str(out)]) == 2
    assert "kv_pool=7 has no effect: attention is 'global'" in one_error_line(capsys)
    assert not out.exists()


def test_search_refuses_a_pin_no_configuration_of_the_space_uses(nothing_is_built, capsys):
    assert main(["search", "--set", "window_size=5", "--accuracy", "proxy:params"]) == 2
    assert one_error_line(capsys) == (
        "harness: error: vit_tiny.yaml: --set window_size=5 has no effect: attention is 'global' "
        "in every configuration of the space (set attention=window)\n")
    with pytest.raises(SearchSpaceError, match=r"--set merge_schedule=decreasing has no effect: "
                       r"merge_r is chosen per block from \[0, 8, 16, 24\]"):
        load_space("deit_small_tokens").with_fixed({"merge_schedule": "decreasing"})


def test_search_pins_that_can_take_effect_are_kept():
    tokens = load_space("deit_small_tokens").with_fixed({"window_size": 2})
    assert tokens.dimensions["window_size"].choices == (2,)  # attention may be window per block
    tiny = load_space("vit_tiny").with_fixed({"window_size": 7, "fuse_tokens": False})
    assert tiny.dimensions["fuse_tokens"].choices == (False,)  # vit_tiny prunes tokens
