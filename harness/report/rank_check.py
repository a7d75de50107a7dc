"""The page of ``harness rank-check``: its table of rank correlations, a scatter plot per line of
it, and every architecture's scores."""

from __future__ import annotations

import math

from harness.rank_check import BOOTSTRAP_RESAMPLES, RankCheck
from harness.report.page import escape, img, new_figure, page, png


def rank_check_markdown(check: RankCheck) -> str:
    """The result as Markdown: heading, one line per estimator, baseline and the noise
    ceiling, then when, how long and the command."""
    lines = [f"| `{row.estimator}`{f' ({note})' if note else ''} | {row.tau_text()} | "
             f"{row.rho_text()} | {row.n} |" for note, row in check.table_rows()]
    return "\n".join([check.heading(), "",
                      "| estimator | Kendall τ [95% CI] | Spearman ρ [95% CI] | n |",
                      "|---|---|---|---|", *lines, "", check.footing()])


def _scatter_plots(check: RankCheck) -> str:
    """One scatter plot per line of the table, each estimator's scores against the reference's,
    as PNG bytes."""
    lines = check.table_rows()
    columns = min(3, len(lines))
    rows = math.ceil(len(lines) / columns)
    figure = new_figure(figsize=(4.2 * columns, 3.4 * rows))
    axes = figure.subplots(rows, columns, squeeze=False)
    reference = [point["scores"][check.reference]["value"] for point in check.points]
    for axis, (_, row) in zip(axes.flat, lines):
        if row is check.noise_ceiling:
            x = [point["reference_second_seed"]["value"] for point in check.points[:row.n]]
        else:
            x = [point["scores"][row.estimator]["value"] for point in check.points]
        axis.scatter(x, reference[:len(x)], s=16)
        axis.set_xlabel(row.estimator, fontsize=8)
        axis.set_ylabel(check.reference, fontsize=8)
        axis.set_title(f"τ = {row.kendall_tau:.3f}, ρ = {row.spearman_rho:.3f}, n = {row.n}",
                       fontsize=9)
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(lines):]:
        axis.set_visible(False)
    figure.tight_layout()
    return png(figure, dpi=100)


def render_rank_check(check: RankCheck) -> str:
    """A self-contained page: the table, a scatter plot per line of it, and every point's scores
    (and a training reference's steps)."""
    e = escape
    table = "".join(
        f"<tr><td><code>{e(row.estimator)}</code>{f' ({e(note)})' if note else ''}</td>"
        f"<td>{e(row.tau_text())}</td><td>{e(row.rho_text())}</td><td>{row.n}</td></tr>"
        for note, row in check.table_rows())
    specs = [row.estimator for row in check.rows]
    head = "".join(f"<th>{e(spec)}</th>" for spec in [*specs, check.reference])
    points = []
    for point in check.points:
        reference = point["scores"][check.reference]
        second = point.get("reference_second_seed")
        cells = [f"{point['scores'][spec]['value']:.5g}" for spec in [*specs, check.reference]]
        cells += [str(reference.get("steps", "")), f"{second['value']:.5g}" if second else ""]
        gmacs = f"{point['gmacs']:.4g}" if "gmacs" in point else ""
        points.append(f"<tr><td>{e(point['config_key'])}</td><td>{gmacs}</td>"
                      + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    body = (f"<h1>{e(check.heading())}</h1>"
            "<table><tr><th>estimator</th><th>Kendall τ [95% CI]</th><th>Spearman ρ [95% CI]"
            f"</th><th>n</th></tr>{table}</table>"
            f"<p>95% CIs: percentile bootstrap over the architectures ({BOOTSTRAP_RESAMPLES} "
            f"resamples, seed {check.seed}). {e(check.footing())}</p>"
            + img(_scatter_plots(check), alt="scatter plots")
            + f"<table><tr><th>config</th><th>GMACs</th>{head}<th>reference steps</th>"
            f"<th>reference, second seed</th></tr>{''.join(points)}</table>")
    return page("Rank check", body)
