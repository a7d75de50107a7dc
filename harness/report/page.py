"""What every page of the harness shares: its style, escaping, tables, and plots as inline PNG.

Plots are ``matplotlib.figure.Figure`` objects drawn without pyplot, so no global state is kept
and no backend is chosen at import: any process may render a page, beside any GUI.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.85em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right;vertical-align:top}
th{background:#f3f3f3} td{white-space:nowrap}
td.wrap{white-space:normal;overflow-wrap:anywhere;min-width:9em} td.text,th.text{text-align:left}
img{max-width:100%} .scroll{overflow-x:auto} .note{color:#555;font-size:.9em} code{background:#f5f5f5;padding:0 .2em}
.warning{color:#a00}
"""


def escape(value: Any) -> str:
    return html.escape(str(value))


def page(title: str, body: str) -> str:
    """A self-contained HTML page: the style inline, no external reference."""
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
            f"<body>{body}</body></html>\n")


def new_figure(**kwargs: Any) -> Figure:
    """A new figure (``figsize`` and the like), drawn without pyplot."""
    return Figure(**kwargs)


def png(drawn: Figure, dpi: int = 110) -> bytes:
    """The figure as PNG bytes, without matplotlib's "Software" metadata (it carries a URL, and
    the pages make no external reference)."""
    buffer = io.BytesIO()
    drawn.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def img(data: bytes, alt: str = "plot") -> str:
    return f"<img alt='{escape(alt)}' src='data:image/png;base64,{base64.b64encode(data).decode()}'>"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], css_id: str = "",
          text: bool = False, wrap: Sequence[int] = ()) -> str:
    """An HTML table of escaped values; ``text`` left-aligns every cell, ``wrap`` lists the
    columns whose long values may break across lines."""

    def cell(index: int, value: Any) -> str:
        classes = " ".join(c for c, on in (("text", text), ("wrap", index in wrap)) if on)
        opening = f"<td class='{classes}'>" if classes else "<td>"
        return f"{opening}{escape(value)}</td>"

    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(cell(i, value) for i, value in enumerate(row)) + "</tr>" for row in rows
    )
    ident = f" id='{css_id}'" if css_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def key_values(values: dict[str, Any]) -> str:
    """A two-column table of names and values."""
    return table(["", ""], [[key, value] for key, value in values.items()], text=True, wrap=(1,))


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one, with dotted keys."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
