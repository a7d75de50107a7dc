"""Reports: the data is computed once (``data.py``) and rendered to HTML (``html.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import optuna

from harness.files import write_atomically
from harness.report.data import ReportData, build_report_data
from harness.report.html import render_html

REPORT_FILE = "report.html"
PARETO_FILE = "pareto.json"
TRIALS_FILE = "trials.json"


def write_report(study: optuna.Study, out_dir: Path) -> Path:
    """Write ``report.html``, ``pareto.json`` and ``trials.json``; return the HTML path."""
    data = build_report_data(study)
    write_atomically(out_dir / PARETO_FILE, json.dumps(data.pareto_json(), indent=2) + "\n")
    write_atomically(out_dir / TRIALS_FILE, json.dumps(data.trials_json(), indent=2) + "\n")
    report = out_dir / REPORT_FILE
    write_atomically(report, render_html(data))
    return report


__all__ = ["ReportData", "build_report_data", "render_html", "write_atomically", "write_report"]
