"""``harness rank-check``: how well accuracy estimators rank the architectures of a space.

A Pareto front is only as good as its accuracy axis, and on transformers many training-free
proxies fail to beat the parameter count (ZiCo, ZeroLM). This samples ``n`` configurations of a
space, scores each with every estimator, with the baselines (parameter count and GMACs, which cost
nothing) and with a reference (training to a plateau, short training, a table of real accuracies,
or another proxy), each as a search would use it (every candidate inheriting the largest model's
weights), and reports Kendall's τ and Spearman's ρ against the reference with percentile-bootstrap
95% CIs over the architectures. A reference with a random seed is scored again with another seed
on the first architectures: how well its two runs agree (the noise ceiling) is what the
estimators' figures are to be read against.

Sampling is stratified by default (``stratified_choice``): GMAC quantile bins and every value of
every key the space varies are covered about equally, which ``n`` uniform draws do only on
average. Each run is kept in the data directory as a versioned record, so search reports can
quote the measured τ of their estimator.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from scipy import stats

import harness
from harness.accuracy import BaseAccuracyEstimator, get_estimator
from harness.checkpoint import Checkpoint
from harness.config import CandidateConfig
from harness.cost import estimate_cost
from harness.errors import ConfigError, FileError
from harness.files import data_home, read_text, safe_name, write_atomically
from harness.models import VisionTransformer, build_model, shared_weights
from harness.records import SCHEMA_VERSION, RecordError, migrate, register_migrations
from harness.space import Dimension, SearchSpace

# 2: one record per run (every estimator, the baselines, the noise ceiling, the duration and the
# command); 1 held one estimator against the reference, and is migrated when read.
PUBLISHED_PACKAGE = "harness.published_rank_checks"
BOOTSTRAP_RESAMPLES = 2000
# Scored on every check: they cost nothing, and they are what an estimator has to beat (no proxy
# beat the GMAC count on vit_tiny, README.md).
BASELINES = ("proxy:params", "proxy:gmacs")
SAMPLINGS = ("stratified", "uniform")
# Stratified sampling chooses n of this many random draws per architecture: every stratum has
# candidates to choose from, and a draw costs about a millisecond.
POOL_PER_ARCHITECTURE = 20
# GMAC quantile bins (quintiles, fewer when n is smaller): six architectures a bin at n = 30.
GMAC_BINS = 5


@dataclass(frozen=True)
class Correlation:
    """Kendall's τ and Spearman's ρ between ``estimator``'s scores and the reference's over ``n``
    architectures, each with its percentile-bootstrap 95% CI."""

    estimator: str
    n: int
    kendall_tau: float
    kendall_tau_ci95: tuple[float, float]
    spearman_rho: float
    spearman_rho_ci95: tuple[float, float]

    @classmethod
    def between(cls, estimator: str, scores: np.ndarray, reference: np.ndarray,
                seed: int) -> Correlation:
        tau, rho = (_correlation_with_ci(scores, reference, method, seed)
                    for method in ("kendall", "spearman"))
        return cls(estimator, len(scores), tau[0], tau[1], rho[0], rho[1])

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Correlation:
        return cls(**{**values, "kendall_tau_ci95": tuple(values["kendall_tau_ci95"]),
                      "spearman_rho_ci95": tuple(values["spearman_rho_ci95"])})

    def tau_text(self) -> str:
        return _with_ci(self.kendall_tau, self.kendall_tau_ci95)

    def rho_text(self) -> str:
        return _with_ci(self.spearman_rho, self.spearman_rho_ci95)


def _with_ci(value: float, ci95: tuple[float, float]) -> str:
    return f"{value:.3f} [{ci95[0]:.3f}, {ci95[1]:.3f}]"


@dataclass(frozen=True)
class RankCheck:
    """One ``harness rank-check`` run: estimators and baselines against one reference, on the
    same architectures.

    ``rows``: the estimators in the order asked for, then the baselines not among them.
    ``noise_ceiling``: the reference run with a second seed against its first run, over the first
    architectures (None when not measured). ``points``: per architecture ``config_key``,
    ``config``, ``gmacs`` and ``scores`` (per estimator spec: ``value``, ``seconds`` and what the
    estimator records besides, e.g. a training run's ``steps``), and on the first ones
    ``reference_second_seed`` (the same for the second run). ``command`` and ``duration_s`` are
    None in records migrated from schema 1.
    """

    space: str
    reference: str
    reference_metadata: dict[str, Any]
    n: int
    seed: int
    sampling: str
    rows: tuple[Correlation, ...]
    noise_ceiling: Correlation | None
    points: list[dict[str, Any]]
    command: str | None
    duration_s: float | None
    created: str
    schema_version: int = SCHEMA_VERSION

    def row(self, estimator: str) -> Correlation | None:
        return next((row for row in self.rows if row.estimator == estimator), None)

    def table_rows(self) -> list[tuple[str, Correlation]]:
        """(note, correlation) per line of the table: estimators, baselines (noted so), and the
        noise ceiling."""
        lines = [("baseline" if row.estimator in BASELINES else "", row) for row in self.rows]
        if self.noise_ceiling:
            lines.append(("noise ceiling", self.noise_ceiling))
        return lines

    def heading(self) -> str:
        return (f"Rank check of {self.space}: {self.n} architectures ({self.sampling} sampling, "
                f"seed {self.seed}) against {self.reference}")

    def footing(self) -> str:
        if self.command is None:
            return f"Run of {self.created} (schema 1: duration and command not recorded)."
        return f"Run of {self.created}, took {_duration(self.duration_s)}: {self.command}"

    def quote(self, estimator: str) -> str:
        """What a search report says about ``estimator``'s ranking quality, from this check."""
        row = self.row(estimator)
        low, high = row.kendall_tau_ci95
        measured = (f"{estimator}: Kendall τ {row.kendall_tau:.3f} [95% CI {low:.3f}, {high:.3f}] "
                    f"against {self.reference} on {row.n} architectures ({self.sampling} sampling)")
        parts = [measured]
        if self.noise_ceiling:
            parts.append(f"noise ceiling (the reference's second seed, {self.noise_ceiling.n} "
                         f"architectures) τ {self.noise_ceiling.tau_text()}")
        baselines = [f"{baseline.estimator} τ {baseline.tau_text()}" for baseline in self.rows
                     if baseline.estimator in BASELINES and baseline.estimator != estimator]
        if baselines:
            parts.append(f"baselines {', '.join(baselines)}")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RankCheck | None:
        """The record ``values`` holds, older schemas migrated; None for a schema this harness
        does not know (written by a newer one). Raises KeyError or TypeError for a malformed
        record."""
        try:
            values = migrate("rank-check", values, values.get("schema_version"), "rank check")
        except RecordError:
            return None
        ceiling = values["noise_ceiling"]
        return cls(**{**values, "rows": tuple(map(Correlation.from_dict, values["rows"])),
                      "noise_ceiling": ceiling and Correlation.from_dict(ceiling)})


def _from_schema_1(values: dict[str, Any]) -> dict[str, Any]:
    """A schema-1 record (one estimator against the reference, uniform sampling, points holding
    the two values) as a run with that one row."""
    estimator, reference = values["estimator"], values["reference"]
    row = Correlation.from_dict({"estimator": estimator, **{key: values[key] for key in (
        "n", "kendall_tau", "kendall_tau_ci95", "spearman_rho", "spearman_rho_ci95")}})
    points = [{"config_key": point["config_key"], "config": point["config"],
               "scores": {estimator: {"value": point["estimator"]},
                          reference: {"value": point["reference"]}}}
              for point in values["points"]]
    return RankCheck(values["space"], reference, {"spec": reference}, values["n"],
                     values["seed"], "uniform", (row,), None, points, None, None,
                     values["created"]).to_dict()


register_migrations("rank-check", {1: _from_schema_1})


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def sample_configs(space: SearchSpace, n: int, seed: int,
                   sampling: str = "stratified") -> list[CandidateConfig]:
    """``n`` distinct configurations: ``uniform``, the first ``n`` distinct draws of Optuna's
    random sampler (as a search's start-up); ``stratified``, ``n`` chosen by
    ``stratified_choice`` from ``POOL_PER_ARCHITECTURE``·n such draws. Fewer when the space has
    fewer distinct configurations."""
    if sampling == "uniform":
        return _distinct_draws(space, n, 50 * n, seed)
    pool_size = POOL_PER_ARCHITECTURE * n
    return stratified_choice(space, _distinct_draws(space, pool_size, pool_size, seed), n)


def _distinct_draws(space: SearchSpace, wanted: int, draws: int,
                    seed: int) -> list[CandidateConfig]:
    """Up to ``wanted`` distinct configurations from at most ``draws`` draws of Optuna's random
    sampler, in the order drawn."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    configs, seen = [], set()
    for _ in range(draws):
        config = space.suggest(study.ask())
        if config.key() not in seen:
            seen.add(config.key())
            configs.append(config)
        if len(configs) == wanted:
            break
    return configs


def stratified_choice(space: SearchSpace, pool: list[CandidateConfig],
                      n: int) -> list[CandidateConfig]:
    """``n`` configurations of ``pool`` among which the pool's GMAC quantile bins, and the
    values of every key the space varies, each come up about equally often.

    Strata come in groups: the GMAC bins, and the choices of each varied key. A configuration
    weighs 1 in its bin and in its value of a key shared by all blocks, and the fraction of its
    blocks with each choice of a key chosen per block; each group's strata should share the
    chosen configurations equally. The choice is greedy: the next configuration is the one whose
    weight falls most on strata below their share so far (on a tie, the one drawn first, so the
    seed decides). A leading part of the choice is balanced too, which is why a noise ceiling
    measured on the first architectures covers the space.
    """
    if len(pool) <= n:
        return pool
    gmacs = np.array([estimate_cost(config).gmacs for config in pool])
    bins = min(GMAC_BINS, n)
    edges = np.quantile(gmacs, np.linspace(0, 1, bins + 1)[1:-1])
    gmac_bin = np.searchsorted(edges, gmacs, side="right")
    columns = [gmac_bin == b for b in range(bins)]
    shares = [1 / bins] * bins
    for dim in space.dimensions.values():
        if len(dim.choices) == 1:
            continue
        for choice in dim.choices:
            columns.append(np.array([_weight(config, dim, choice) for config in pool]))
            shares.append(1 / len(dim.choices))
    weights = np.stack(columns, axis=1).astype(float)
    targets, counts = np.array(shares), np.zeros(len(shares))
    left = np.ones(len(pool), dtype=bool)
    chosen = []
    for size in range(1, n + 1):
        gain = np.where(left, weights @ (targets * size - counts), -np.inf)
        best = int(np.argmax(gain))
        chosen.append(pool[best])
        left[best] = False
        counts += weights[best]
    return chosen


def _weight(config: CandidateConfig, dim: Dimension, choice: Any) -> float:
    """How much of ``config`` has ``choice`` for ``dim``'s key: 1 or 0 for a value shared by all
    blocks, the fraction of the blocks for a value chosen per block."""
    value = getattr(config, dim.key)
    if dim.per_layer and isinstance(value, tuple):
        return value.count(choice) / len(value)
    return float(value == choice)


def rank_check(space: SearchSpace, estimators: list[BaseAccuracyEstimator],
               reference: BaseAccuracyEstimator, n: int, seed: int = 0, *,
               sampling: str = "stratified", ceiling_n: int = 0, command: str | None = None,
               on_point: Callable[[int, dict[str, Any]], None] | None = None,
               on_progress: Callable[[str], None] | None = None,
               weights: Checkpoint | None = None) -> RankCheck:
    """Score ``n`` sampled architectures with every estimator, the baselines and the reference
    (once each: training is the expensive part), and the first ``ceiling_n`` again with the
    reference at its seed + 1; ``on_point(index, point)`` after each architecture. With
    ``weights`` (a pretrained checkpoint) every candidate is built on them, else on a slice of
    the space's largest model.

    Raises ``ConfigError`` for an unknown sampling, or a ceiling asked of a reference without a
    random seed."""
    if sampling not in SAMPLINGS:
        raise ConfigError(f"unknown sampling {sampling!r}; valid: {', '.join(SAMPLINGS)}")
    if ceiling_n and reference.seed is None:
        raise ConfigError(f"a noise ceiling needs a reference with a random seed to change, "
                          f"and {reference.spec} has none: its second run would repeat the first "
                          "(ask for a ceiling on 0 architectures)")
    started = time.perf_counter()
    asked = list({estimator.spec: estimator for estimator in estimators}.values())
    scored = asked + [get_estimator(spec) for spec in BASELINES
                      if spec not in {estimator.spec for estimator in asked}]
    second = reference.with_seed(reference.seed + 1) if ceiling_n else None
    for estimator in [*scored, reference, *([second] if second else [])]:
        estimator.prepare(space, on_progress)
    configs = sample_configs(space, n, seed, sampling)
    inherited = weights.tensors if weights else shared_weights(space)
    progress = PointsProgress.of(space, [estimator.spec for estimator in scored], reference.spec,
                                 n, seed, sampling, ceiling_n, weights)
    kept = progress.load([config.key() for config in configs])
    if kept and on_progress:
        on_progress(f"resuming: {len(kept)} of {n} architectures were scored by an earlier run "
                    f"of this check ({progress.path})")
    stale = _rescore_stale(kept, configs, scored, inherited)
    if stale:
        progress.rewrite(kept)
        if on_progress:
            on_progress(f"re-scored {', '.join(stale)} on the {len(kept)} kept architectures: "
                        "the estimator now loaded (a supernet trained again) is not the one that "
                        "scored them; the reference's scores are kept")
    points = []
    for index, config in enumerate(configs, start=1):
        if index <= len(kept):
            point = kept[index - 1]
        else:
            point_started = time.perf_counter()
            model = build_model(config, shared_weights=inherited)
            point = {"config_key": config.key(), "config": config.to_dict(),
                     "gmacs": estimate_cost(config).gmacs,
                     "scores": {estimator.spec: _scored(estimator, model, config)
                                for estimator in [*scored, reference]}}
            if index <= ceiling_n:
                point["reference_second_seed"] = _scored(second, model, config)
            point["seconds"] = time.perf_counter() - point_started
            progress.append(point)
        points.append(point)
        if on_point:
            on_point(index, point)
    first_run = np.array([point["scores"][reference.spec]["value"] for point in points])
    rows = tuple(Correlation.between(
        estimator.spec, np.array([point["scores"][estimator.spec]["value"] for point in points]),
        first_run, seed) for estimator in scored)
    ceiling = None
    if second is not None:
        repeated = [point["reference_second_seed"]["value"] for point in points[:ceiling_n]]
        ceiling = Correlation.between(
            f"{reference.spec}, seed {second.seed} vs seed {reference.seed}", np.array(repeated),
            first_run[:len(repeated)], seed)
    # An earlier run's points count with the time they took, its set-up (training) does not.
    duration = time.perf_counter() - started + sum(point["seconds"] for point in kept)
    check = RankCheck(space.name, reference.spec, reference.metadata(), len(points), seed,
                      sampling, rows, ceiling, points, command, duration,
                      datetime.now(timezone.utc).isoformat(timespec="seconds"))
    progress.finish()
    return check


@dataclass(frozen=True)
class PointsProgress:
    """The architectures a check has scored so far, one JSON line each, so that a check stopped
    after hours of training resumes where it was (kept until the check completes)."""

    path: Path

    @classmethod
    def of(cls, space: SearchSpace, estimators: list[str], reference: str, n: int, seed: int,
           sampling: str, ceiling_n: int, weights: Checkpoint | None = None) -> PointsProgress:
        setup = json.dumps([space.name, {key: [repr(dim.choices), dim.per_layer] for key, dim in
                                         sorted(space.dimensions.items())},
                            sorted(estimators), reference, n, seed, sampling, ceiling_n,
                            harness.__version__, weights and weights.sha256])
        digest = hashlib.sha256(setup.encode()).hexdigest()[:12]
        return cls(rank_checks_dir() / "in_progress" / f"{safe_name(space.name)}--{digest}.jsonl")

    def load(self, config_keys: list[str]) -> list[dict[str, Any]]:
        """The leading points already scored for ``config_keys``; a line cut short by a kill is
        dropped, and the file rewritten without it so that appends start on a fresh line."""
        if not self.path.exists():
            return []
        kept = []
        for line in read_text(self.path, "rank-check progress").splitlines():
            try:
                point = json.loads(line)
            except json.JSONDecodeError:
                break
            if len(kept) == len(config_keys) or point.get("config_key") != config_keys[len(kept)]:
                break
            kept.append(point)
        self.rewrite(kept)
        return kept

    def append(self, point: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as stream:
            stream.write(json.dumps(point) + "\n")
            stream.flush()
            os.fsync(stream.fileno())

    def rewrite(self, points: list[dict[str, Any]]) -> None:
        write_atomically(self.path, "".join(json.dumps(point) + "\n" for point in points))

    def finish(self) -> None:
        self.path.unlink(missing_ok=True)


def _scored(estimator: BaseAccuracyEstimator, model: VisionTransformer,
            config: CandidateConfig) -> dict[str, Any]:
    """What ``estimator`` records of ``config`` (its score as ``value``), the seconds it took,
    and its fingerprint where its scores have one."""
    start = time.perf_counter()
    record = estimator.record(model, config)
    fingerprint = estimator.fingerprint()
    return {**record, "seconds": time.perf_counter() - start,
            **({"fingerprint": fingerprint} if fingerprint else {})}


def _rescore_stale(kept: list[dict[str, Any]], configs: list[CandidateConfig],
                   estimators: list[BaseAccuracyEstimator],
                   inherited: dict[str, torch.Tensor] | None) -> list[str]:
    """Score the kept points again with every estimator whose fingerprint is not the one that
    scored them (in place); the specs re-scored. Cheap: only fingerprinted estimators (a
    supernet scores in about a second), never the reference's training."""
    stale = [estimator for estimator in estimators if estimator.fingerprint() is not None and any(
        point["scores"][estimator.spec].get("fingerprint") != estimator.fingerprint()
        for point in kept)]
    for point, config in zip(kept, configs):
        if stale:
            model = build_model(config, shared_weights=inherited)
            for estimator in stale:
                point["scores"][estimator.spec] = _scored(estimator, model, config)
    return [estimator.spec for estimator in stale]


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


def rank_checks_dir() -> Path:
    return data_home() / "rank_checks"


def _record_path(check: RankCheck) -> Path:
    """Where the data directory keeps ``check``: one file per space, reference and set-up, so
    the same check run again replaces its record and a different one is kept beside it."""
    ceiling = check.noise_ceiling
    setup = json.dumps([sorted(row.estimator for row in check.rows), check.n, check.seed,
                        check.sampling, ceiling and [ceiling.estimator, ceiling.n]])
    digest = hashlib.sha256(setup.encode()).hexdigest()[:10]
    return rank_checks_dir() / (f"{safe_name(check.space)}--{safe_name(check.reference)}--"
                                f"{digest}.json")


def save_rank_check(check: RankCheck, out_dir: Path | None) -> list[Path]:
    """Keep the record in the data directory (for search reports) and, if asked, in ``out_dir``
    with an HTML page; return the files written."""
    document = json.dumps(check.to_dict(), indent=1) + "\n"
    kept = _record_path(check)
    write_atomically(kept, document)
    written = [kept]
    if out_dir is not None:
        write_atomically(out_dir / "rank_check.json", document)
        from harness.report.rank_check import render_rank_check

        write_atomically(out_dir / "rank_check.html", render_rank_check(check))
        written += [out_dir / "rank_check.json", out_dir / "rank_check.html"]
    return written


def published_rank_checks_dir() -> Path:
    """The checks published with the harness (``benchmarks/rank_checks``, installed as a package),
    so that a report quotes them on a machine that never ran one."""
    return Path(str(resources.files(PUBLISHED_PACKAGE)))


def stored_rank_checks(space: str) -> list[RankCheck]:
    """Every check of ``space`` this harness can read, the published ones and those run here,
    schema-1 records migrated."""
    checks = []
    paths = [path for folder in (published_rank_checks_dir(), rank_checks_dir())
             for path in sorted(folder.glob(f"{safe_name(space)}--*.json"))]
    for path in paths:
        try:
            check = RankCheck.from_dict(json.loads(read_text(path, "stored rank check")))
        except json.JSONDecodeError as error:
            raise FileError(f"stored rank check {path}: not JSON ({error}); remove it or run "
                            "'harness rank-check' again") from None
        except (KeyError, TypeError, AttributeError) as error:
            raise FileError(f"stored rank check {path}: not a rank-check record ({error!r}); "
                            "remove it or run 'harness rank-check' again") from None
        if check is not None and check.space == space:
            checks.append(check)
    return checks


def known_rank_checks(space: str, estimator: str) -> list[RankCheck]:
    """The newest stored check of ``estimator`` on ``space`` against each reference."""
    newest: dict[str, RankCheck] = {}
    for check in sorted(stored_rank_checks(space), key=lambda check: check.created):
        if check.row(estimator) is not None:
            newest[check.reference] = check
    return list(newest.values())
