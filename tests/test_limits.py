"""Input limits: YAML documents.

Every refusal is one line and names the file. Nothing here expands a YAML bomb: the refusals
are what is tested.
"""

from __future__ import annotations

import tracemalloc

import pytest

import harness.bench
import harness.models
import harness.study
from harness.bench import BenchError, load_suite
from harness.cli import MAX_ERROR_CHARS, main
from harness.devices import parse_profile
from harness.errors import DeviceError, SearchSpaceError
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

    for module in (harness.models, harness.study, harness.bench):
        monkeypatch.setattr(module, "build_model", refuse)


def one_error_line(capsys: pytest.CaptureFixture) -> str:
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith("harness: error: ")
    assert len(captured.err) < MAX_ERROR_CHARS and "Traceback" not in captured.err
    return captured.err


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
