"""``harness rank-check``: how well an accuracy estimator ranks the architectures of a space.

A Pareto front is only as good as its accuracy axis, and on transformers many training-free
proxies fail to beat the parameter count (ZiCo, ZeroLM). This samples ``n`` configurations of a
space (Optuna's random sampler, seeded), scores each with the estimator and with a reference
(short training, a table of real accuracies, or another proxy), each as a search would use it
(every candidate inheriting the largest model's weights), and reports Kendall's τ and Spearman's ρ
with percentile-bootstrap 95% CIs over the architectures. Results are kept per (space, estimator,
reference) in the data directory, so search reports can quote the measured τ of their estimator.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import optuna
from scipy import stats

from harness.accuracy import BaseAccuracyEstimator
from harness.errors import FileError
from harness.files import data_home, read_text, safe_name, write_atomically
from harness.models import build_model
from harness.space import SearchSpace
from harness.study import shared_weights

matplotlib.use("Agg")
import matplotlib.pyplot as plt

SCHEMA_VERSION = 1
BOOTSTRAP_RESAMPLES = 2000


@dataclass(frozen=True)
class RankCheck:
    space: str
    estimator: str
    reference: str
    n: int
    seed: int
    kendall_tau: float
    kendall_tau_ci95: tuple[float, float]
    spearman_rho: float
    spearman_rho_ci95: tuple[float, float]
    points: list[dict[str, Any]]  # config key, estimator value, reference value
    created: str
    schema_version: int = SCHEMA_VERSION

    def summary(self) -> str:
        low, high = self.kendall_tau_ci95
        rho_low, rho_high = self.spearman_rho_ci95
        return (f"{self.estimator} vs {self.reference} on {self.space} ({self.n} architectures): "
                f"Kendall τ {self.kendall_tau:.3f} [{low:.3f}, {high:.3f}], Spearman ρ "
                f"{self.spearman_rho:.3f} [{rho_low:.3f}, {rho_high:.3f}]")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sample_configs(space: SearchSpace, n: int, seed: int) -> list:
    """``n`` distinct configurations drawn by Optuna's random sampler (as a search's start-up)."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    configs, seen = [], set()
    for _ in range(50 * n):
        config = space.suggest(study.ask())
        if config.key() not in seen:
            seen.add(config.key())
            configs.append(config)
        if len(configs) == n:
            break
    return configs


def rank_check(space: SearchSpace, estimators: list[BaseAccuracyEstimator],
               reference: BaseAccuracyEstimator, n: int, seed: int = 0,
               on_point: Callable[[int, dict[str, Any]], None] | None = None) -> list[RankCheck]:
    """One check per estimator, all on the same ``n`` architectures and one reference score
    each (short training is the expensive part)."""
    configs = sample_configs(space, n, seed)
    inherited = shared_weights(space)
    points = []
    for index, config in enumerate(configs, start=1):
        model = build_model(config, shared_weights=inherited)
        values, seconds = {}, {}
        for estimator in [*estimators, reference]:
            start = time.perf_counter()
            values[estimator.spec] = estimator.estimate(model, config)
            seconds[estimator.spec] = time.perf_counter() - start
        point = {"config_key": config.key(), "config": config.to_dict(), "values": values,
                 "seconds": seconds}
        points.append(point)
        if on_point:
            on_point(index, point)
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    y = np.array([p["values"][reference.spec] for p in points])
    checks = []
    for estimator in estimators:
        x = np.array([p["values"][estimator.spec] for p in points])
        tau, rho = (_correlation_with_ci(x, y, method, seed) for method in ("kendall",
                                                                             "spearman"))
        own = [{"config_key": p["config_key"], "config": p["config"],
                "estimator": p["values"][estimator.spec], "reference": p["values"][reference.spec]}
               for p in points]
        checks.append(RankCheck(space.name, estimator.spec, reference.spec, len(points), seed,
                                tau[0], tau[1], rho[0], rho[1], own, created))
    return checks


def _correlation_with_ci(x: np.ndarray, y: np.ndarray, method: str,
                         seed: int) -> tuple[float, tuple[float, float]]:
    """The rank correlation and its percentile-bootstrap 95% CI, resampling architectures.

    A resample that draws one architecture over and over has no rank correlation; such
    resamples are left out rather than counted as any value."""
    def correlation(a: np.ndarray, b: np.ndarray) -> float:
        if np.ptp(a) == 0 or np.ptp(b) == 0:
            return math.nan
        result = stats.kendalltau(a, b) if method == "kendall" else stats.spearmanr(a, b)
        return float(result.statistic)

    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(x), size=(BOOTSTRAP_RESAMPLES, len(x)))
    values = np.array([correlation(x[i], y[i]) for i in draws])
    values = values[~np.isnan(values)]
    low, high = np.percentile(values, [2.5, 97.5]) if len(values) else (math.nan, math.nan)
    return correlation(x, y), (float(low), float(high))


def _store_prefix(space: str, estimator: str) -> str:
    return f"{safe_name(space)}--{safe_name(estimator)}--"


def rank_checks_dir() -> Path:
    return data_home() / "rank_checks"


def save_rank_check(check: RankCheck, out_dir: Path | None) -> list[Path]:
    """Keep the result in the data directory (for search reports) and, if asked, in ``out_dir``
    with an HTML page; return the files written."""
    document = json.dumps(check.to_dict(), indent=1) + "\n"
    kept = rank_checks_dir() / (_store_prefix(check.space, check.estimator)
                                + safe_name(check.reference) + ".json")
    write_atomically(kept, document)
    written = [kept]
    if out_dir is not None:
        write_atomically(out_dir / "rank_check.json", document)
        write_atomically(out_dir / "rank_check.html", render_html(check))
        written += [out_dir / "rank_check.json", out_dir / "rank_check.html"]
    return written


def known_rank_checks(space: str, estimator: str) -> list[RankCheck]:
    """The stored checks of ``estimator`` on ``space``, against any reference."""
    checks = []
    for path in sorted(rank_checks_dir().glob(f"{_store_prefix(space, estimator)}*.json")):
        try:
            values = json.loads(read_text(path, "stored rank check"))
        except json.JSONDecodeError as error:
            raise FileError(f"stored rank check {path}: not JSON ({error}); remove it or run "
                            "'harness rank-check' again") from None
        if values.get("schema_version") == SCHEMA_VERSION:
            values["kendall_tau_ci95"] = tuple(values["kendall_tau_ci95"])
            values["spearman_rho_ci95"] = tuple(values["spearman_rho_ci95"])
            checks.append(RankCheck(**values))
    return checks


def render_html(check: RankCheck) -> str:
    figure, axes = plt.subplots(figsize=(6, 4.5))
    axes.scatter([p["estimator"] for p in check.points], [p["reference"] for p in check.points],
                 s=24)
    axes.set_xlabel(check.estimator)
    axes.set_ylabel(check.reference)
    axes.set_title(f"τ = {check.kendall_tau:.3f}, ρ = {check.spearman_rho:.3f}, n = {check.n}")
    axes.grid(alpha=0.3)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    image = base64.b64encode(buffer.getvalue()).decode()
    rows = "".join(
        f"<tr><td>{html.escape(p['config_key'])}</td><td>{p['estimator']:.5g}</td>"
        f"<td>{p['reference']:.5g}</td></tr>" for p in check.points)
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Rank check"
            "</title><style>body{font-family:system-ui,sans-serif;margin:2em}table{border-"
            "collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .5em}</style></head>"
            f"<body><h1>Rank check: {html.escape(check.space)}</h1>"
            f"<p>{html.escape(check.summary())}. 95% CIs: percentile bootstrap over the "
            f"architectures ({BOOTSTRAP_RESAMPLES} resamples, seed {check.seed}).</p>"
            f"<img alt='scatter' src='data:image/png;base64,{image}'>"
            f"<table><tr><th>config</th><th>{html.escape(check.estimator)}</th>"
            f"<th>{html.escape(check.reference)}</th></tr>{rows}</table></body></html>")
