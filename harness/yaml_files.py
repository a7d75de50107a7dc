"""YAML files that are either bundled with the harness (found by name) or given by path."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from harness.errors import FileError, HarnessError, shorten
from harness.files import read_text

# Limits on what one YAML document may hold. The harness's files are a few KB; an alias bomb
# ("billion laughs") of 1 KB expands to 10^9 values when anything walks the loaded data.
MAX_YAML_BYTES = 1024 * 1024  # far above any space, profile, suite or annotations file
MAX_YAML_VALUES = 100_000  # values (scalars, lists, mappings) once every alias is expanded
MAX_YAML_LIST = 10_000  # items of one list (a space allows 1,000 choices per key)
MAX_YAML_NESTING = 100  # levels; the composer recurses once per level
MAX_PATH_CHARS = 120  # of the path (params.depth) an error message names
MAX_PATH_KEY_CHARS = 60  # of each key in that path


class UnreadableYaml(yaml.YAMLError):
    """A YAML document over a limit, or holding a value Python refuses (a 5,000-digit integer,
    the date 2026-13-01)."""


class _Loader(yaml.SafeLoader):
    """YAML 1.1 safe loading without base-60 numbers, so ``2:4`` stays the string "2:4".

    Composing stops at the first list item, value or nesting level over a limit, so an
    over-long list or document is refused after reading no more than the limit allows."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.path: list[str] = []  # of the node being composed, for error messages
        self.composed = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if isinstance(parent, yaml.SequenceNode) and index >= MAX_YAML_LIST:
            raise UnreadableYaml(f"{self.where()}: a list of more than {MAX_YAML_LIST:,} items")
        self.composed += 1
        if self.composed > MAX_YAML_VALUES:
            raise UnreadableYaml(f"more than {MAX_YAML_VALUES:,} values")
        if len(self.path) >= MAX_YAML_NESTING:
            raise UnreadableYaml(f"{self.where()}: nested more than {MAX_YAML_NESTING} levels "
                                 "deep")
        if isinstance(parent, yaml.SequenceNode):
            self.path.append(f"[{index}]")
        elif isinstance(index, yaml.ScalarNode):  # the value of a mapping's key
            self.path.append(f".{index.value[:MAX_PATH_KEY_CHARS]}")
        else:  # the document, or a mapping's key
            self.path.append("")
        try:
            return super().compose_node(parent, index)
        finally:
            self.path.pop()

    def where(self) -> str:
        """The path of the node being composed, cut in the middle if long."""
        path = "".join(self.path).lstrip(".") or "the document"
        if len(path) <= MAX_PATH_CHARS:
            return path
        return f"{path[:MAX_PATH_CHARS // 2]}...{path[-MAX_PATH_CHARS // 2:]}"


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers
            if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
                |\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
                |[-+]?\.(?:inf|Inf|INF)
                |\.(?:nan|NaN|NAN))$""", re.VERBOSE),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` without base-60 numbers (``2:4`` is a string, not 124), refusing
    (``UnreadableYaml``) a document over the limits above before any value is built."""
    if len(text) > MAX_YAML_BYTES:
        raise UnreadableYaml(f"larger than {MAX_YAML_BYTES // (1024 * 1024)} MiB")
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node)
        return loader.construct_document(node)
    except ValueError as problem:  # int() of 5,000 digits, a date with month 13
        raise UnreadableYaml(f"cannot load a value: {problem}") from None
    finally:
        loader.dispose()


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a node graph whose aliases expand to more than ``MAX_YAML_VALUES`` values, or
    that refers to itself.

    Each distinct node is sized once (memoized by identity), so a bomb, a few dozen nodes that
    alias each other, is refused in microseconds; the walk is iterative because alias chains
    can be deeper than the nesting limit."""
    sizes: dict[int, int] = {}
    entered: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_sized = stack.pop()
        children = _children(node)
        if children_sized:
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in children)
            if sizes[id(node)] > MAX_YAML_VALUES:
                raise UnreadableYaml(f"its aliases expand to more than {MAX_YAML_VALUES:,} "
                                     "values (an alias bomb?)")
        elif id(node) in entered and id(node) not in sizes:
            raise UnreadableYaml("an alias refers to a value that contains it")
        elif id(node) not in sizes:
            entered.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in sizes)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return node.value
    if isinstance(node, yaml.MappingNode):
        return [item for pair in node.value for item in pair]
    return []


def bundled_names(package: str) -> list[str]:
    """Names of the ``*.yaml`` files of a data package, without the suffix."""
    folder = resources.files(package)
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def read_named_or_path(
    name_or_path: str, package: str, what: str, error: type[HarnessError]
) -> tuple[str, str]:
    """(text, source) of a bundled file by name or of a file by path; ``what`` names it in errors."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists() or path.is_symlink():
        try:
            return read_text(path, f"{what} file", MAX_YAML_BYTES), str(path)
        except FileError as problem:
            raise error(str(problem)) from None
    names = bundled_names(package)
    if name_or_path not in names:
        raise error(
            f"unknown {what} {shorten(name_or_path)}; valid: {', '.join(names)} or a path to a "
            ".yaml file"
        )
    text = resources.files(package).joinpath(f"{name_or_path}.yaml").read_text()
    return text, f"{name_or_path}.yaml"


def parse_yaml(text: str, source: str, error: type[HarnessError]) -> Any:
    """Parse YAML; a syntax error or a refused document becomes one line naming the file (and
    the line of a syntax error)."""
    try:
        return load_yaml(text)
    except UnreadableYaml as problem:
        raise error(f"{source}: {problem}") from None
    except yaml.YAMLError as problem:
        mark = getattr(problem, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        reason = getattr(problem, "problem", None) or "invalid YAML"
        raise error(f"{source}:{line}: malformed YAML: {reason}") from None


def string_field(document: dict[Any, Any], key: str, default: str, source: str,
                 error: type[HarnessError]) -> str:
    """``document[key]``, or ``default`` when absent; anything but a string (a list, a mapping)
    is refused, rather than turned into text of whatever size."""
    value = document.get(key, default)
    if not isinstance(value, str):
        raise error(f"{source}: {key}: expected a string, got {shorten(value)}")
    return value
