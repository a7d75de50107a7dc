"""The README's project layout names every module and package of ``harness/``, and nothing that
is not there: it is the newcomer's map."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _layout() -> str:
    text = (ROOT / "README.md").read_text()
    return text.split("## Project layout", 1)[1].split("\n## ", 1)[0]


def test_the_layout_names_every_module_and_package():
    layout = _layout()
    entries = [p for p in (ROOT / "harness").iterdir()
               if (p.suffix == ".py" and p.stem not in ("__init__", "__main__"))
               or (p.is_dir() and (p / "__init__.py").exists())]
    missing = [p.name for p in entries
               if not re.search(rf"(?<![\w/]){re.escape(p.stem)}(\.py|/)", layout)]
    assert missing == []


def test_every_file_the_layout_names_exists():
    named = set(re.findall(r"(?<![\w./-])([a-z_]+\.py)\b", _layout()))
    files = {p.name for p in (ROOT / "harness").rglob("*.py")}
    assert sorted(named - files) == []
