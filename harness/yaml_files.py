"""YAML files that are either bundled with the harness (found by name) or given by path."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from harness.errors import HarnessError


def bundled_names(package: str) -> list[str]:
    """Names of the ``*.yaml`` files of a data package, without the suffix."""
    folder = resources.files(package)
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def read_named_or_path(
    name_or_path: str, package: str, what: str, error: type[HarnessError]
) -> tuple[str, str]:
    """(text, source) of a bundled file by name or of a file by path; ``what`` names it in errors."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise error(f"{what} file not found: {name_or_path}")
        return path.read_text(), str(path)
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
        return yaml.safe_load(text)
    except yaml.YAMLError as problem:
        mark = getattr(problem, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        reason = getattr(problem, "problem", None) or "invalid YAML"
        raise error(f"{source}:{line}: malformed YAML: {reason}") from None
