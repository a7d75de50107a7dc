"""YAML files that are either bundled with the harness (found by name) or given by path."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from harness.errors import FileError, HarnessError
from harness.files import read_text


class _Loader(yaml.SafeLoader):
    """YAML 1.1 safe loading without base-60 numbers, so ``2:4`` stays the string "2:4"."""


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
    """``yaml.safe_load`` without base-60 numbers (``2:4`` is a string, not 124)."""
    return yaml.load(text, Loader=_Loader)


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
            return read_text(path, f"{what} file"), str(path)
        except FileError as problem:
            raise error(str(problem)) from None
    names = bundled_names(package)
    if name_or_path not in names:
        raise error(
            f"unknown {what} {name_or_path!r}; valid: {', '.join(names)} or a path to a .yaml file"
        )
    text = resources.files(package).joinpath(f"{name_or_path}.yaml").read_text()
    return text, f"{name_or_path}.yaml"


def parse_yaml(text: str, source: str, error: type[HarnessError]) -> Any:
    """Parse YAML; a syntax error becomes one line naming the file and the line."""
    try:
        return load_yaml(text)
    except yaml.YAMLError as problem:
        mark = getattr(problem, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        reason = getattr(problem, "problem", None) or "invalid YAML"
        raise error(f"{source}:{line}: malformed YAML: {reason}") from None
