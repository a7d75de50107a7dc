"""Statistics of a base-vs-head benchmark comparison: which latency changes are real.

asv's ``compare`` flags an entry only when Mann-Whitney gives p < 0.002 and the ratio of the
results passes 1.1, and prints the rest that moved as ``~`` with no interval. Run over many
entries, a fixed per-entry p threshold still produces false alarms in proportion to the number
of entries, and a change that is large but poorly measured is hidden rather than shown as
uncertain. Here:

* Significance is the two-sided Mann-Whitney U test per entry, with Holm's step-down correction
  across the entries compared together, so the chance of any false alarm in the whole comparison
  stays below ``alpha`` (family-wise, under any dependence between entries).
* The size of the change is reported with a 95% confidence interval of the percentage change:
  the Hodges-Lehmann interval of the shift between log(head) and log(base) (Lehmann,
  "Nonparametrics", ch. 2). Its bounds are the k-th smallest and k-th largest of the pairwise
  differences log(h_j) - log(b_i), k - 1 being the largest u with P(U <= u) <= 2.5% under the
  Mann-Whitney U distribution (exact for small samples, the continuity-corrected normal above
  ``EXACT_MAX_PAIRS`` pairs, no tie correction), and ``100 * (exp(x) - 1)`` turns them into
  percent. It is the set of shifts that the U test does not reject, needs no normality, and on
  the log scale suits latencies, whose changes are multiplicative. Above ``MAX_PAIRS`` pairs the
  differences are subsampled with a fixed seed, so the result stays fast and reproducible.
* ``delta_pct`` is the change of the medians, what a reader compares by eye; it can sit off the
  centre of the interval, which estimates the shift of the whole distribution.
* Paired entries (runs of base and head alternated round by round in one job, so each base run
  has a head run measured beside it): the test is the two-sided one-sample t-test of the
  per-round log ratios log(head_i / base_i), the interval the t interval of their mean, and
  ``delta_pct`` the geometric mean of the ratios. Pairing cancels the host's drift between rounds,
  which an unpaired test counts as noise (or, between two jobs, as a change). The t-test, not
  Wilcoxon's signed-rank test: with 6 pairs the smallest signed-rank p is 0.031, so no change
  could pass p < 0.01.
* Decision: a significant change at least ``threshold_pct`` large is a regression or an
  improvement. Otherwise, an entry whose interval reaches past ±threshold is "noisy": the data
  cannot rule out a change that matters, so it is shown with its interval and never hidden.
  The rest is "unchanged".

The samples are taken as independent. Drift during a run (clocks, other tenants) makes neighbours
alike and every interval here too narrow; ``harness.stats`` quantifies drift within one run.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
from scipy import stats

from harness.errors import HarnessError, shorten

MIN_SAMPLES = 5  # fewest samples per side; with 5 against 5 the smallest two-sided p is 0.008
CONFIDENCE = 0.95
EXACT_MAX_PAIRS = 2500  # up to this many pairs the U distribution is computed exactly
MAX_PAIRS = 1 << 22  # above this many pairwise differences, subsample this many
PAIRED_TEST = "paired t on log ratios"
POWER = 0.8  # of the rounds advised for a paired comparison
MAX_ROUNDS_ADVISED = 200


class ComparisonError(HarnessError):
    """The samples of an entry cannot be compared (too few, or not positive finite latencies)."""


@dataclass(frozen=True)
class EntryComparison:
    """The comparison of one entry; percentages are head relative to base, positive = slower."""

    name: str
    base_median: float
    head_median: float
    delta_pct: float
    ci95_pct: tuple[float, float]
    p_value: float
    p_adjusted: float
    threshold_pct: float
    decision: str  # "regression", "improvement", "unchanged" or "noisy"
    n_base: int
    n_head: int
    test: str = "Mann-Whitney U"  # or PAIRED_TEST
    ratio_sd: float | None = None  # paired: standard deviation of the per-round log ratios

    def to_dict(self) -> dict[str, object]:
        values = asdict(self)
        values["ci95_pct"] = list(self.ci95_pct)
        return values


def replicates_needed(entries: int, alpha: float = 0.01) -> int:
    """Runs a side for which the smallest two-sided Mann-Whitney p (2 / C(2n, n), the two sides
    fully apart), Holm-corrected over ``entries`` tests, falls below ``alpha``: with fewer, no
    change can be significant. 5 for one entry, 6 for up to 4, 7 for up to 17."""
    runs = 2
    while 2 / math.comb(2 * runs, runs) * max(entries, 1) >= alpha:
        runs += 1
    return runs


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values: the i-th smallest p times (m - i), made monotone."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p, kind="stable")
    scaled = p[order] * (len(p) - np.arange(len(p)))
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return [float(x) for x in adjusted]


@lru_cache(maxsize=256)
def _order_statistic_rank(m: int, n: int) -> int:
    """k such that [k-th smallest, k-th largest] of the m*n pairwise differences is the
    ``CONFIDENCE`` interval: k - 1 is the largest u with P(U <= u) <= (1 - CONFIDENCE) / 2."""
    tail = (1 - CONFIDENCE) / 2
    if m * n > EXACT_MAX_PAIRS:
        sd = math.sqrt(m * n * (m + n + 1) / 12)
        return math.floor(m * n / 2 + 0.5 - stats.norm.isf(tail) * sd)
    # Counts of U = 0..mn are the coefficients of the Gaussian binomial [m+n choose m](q),
    # built as the product over i of (1 - q^(n+i)) / (1 - q^i); dividing by (1 - q^i) is a
    # running sum with stride i.
    m, n = min(m, n), max(m, n)
    counts = np.zeros(m * n + 1)
    counts[0] = 1.0
    for i in range(1, m + 1):
        counts[n + i:] -= counts[: -(n + i)].copy()
        for r in range(i):
            counts[r::i] = np.cumsum(counts[r::i])
    cdf = np.cumsum(counts) / counts.sum()
    # A cdf value equal to the tail up to rounding still counts as within it.
    return int(np.searchsorted(cdf, tail * (1 + 1e-9), side="right"))


def hodges_lehmann_ci_pct(base: Sequence[float], head: Sequence[float]) -> tuple[float, float]:
    """95% interval of the percentage change from base to head: the Hodges-Lehmann interval of
    the shift of log(head) against log(base), in percent (see the module docstring)."""
    log_base = np.log(np.asarray(base, dtype=float))
    log_head = np.log(np.asarray(head, dtype=float))
    pairs = len(log_base) * len(log_head)
    k = _order_statistic_rank(len(log_base), len(log_head))
    if k < 1:  # e.g. 3 against 3: even the extreme differences are not a 95% interval
        raise ValueError(f"{len(log_base)} and {len(log_head)} samples are too few for a 95% "
                         "interval")
    if pairs <= MAX_PAIRS:
        diffs = (log_head[:, None] - log_base[None, :]).ravel()
    else:
        rng = np.random.default_rng(0)
        diffs = (log_head[rng.integers(len(log_head), size=MAX_PAIRS)]
                 - log_base[rng.integers(len(log_base), size=MAX_PAIRS)])
        k = max(1, round(k * MAX_PAIRS / pairs))  # the same tail fraction of the subsample
    low_rank, high_rank = k - 1, len(diffs) - k
    ordered = np.partition(diffs, [low_rank, high_rank])
    return 100 * math.expm1(ordered[low_rank]), 100 * math.expm1(ordered[high_rank])


def _validated(name: str, side: str, samples: Sequence[float]) -> np.ndarray:
    values = np.asarray(samples, dtype=float)
    if len(values) < MIN_SAMPLES:
        raise ComparisonError(f"entry {shorten(name)}: {side} has {len(values)} samples, at least "
                              f"{MIN_SAMPLES} are needed")
    bad = values[~(np.isfinite(values) & (values > 0))]
    if len(bad):
        raise ComparisonError(f"entry {shorten(name)}: {side} has a sample that is not a positive "
                              f"finite latency ({shorten(bad[0])})")
    return values


def _decision(delta_pct: float, ci: tuple[float, float], p_adjusted: float, threshold: float,
              alpha: float) -> str:
    if p_adjusted < alpha and abs(delta_pct) >= threshold:
        return "regression" if delta_pct > 0 else "improvement"
    if ci[1] > threshold or ci[0] < -threshold:
        return "noisy"
    return "unchanged"


def paired_change(base: np.ndarray, head: np.ndarray) -> tuple[float, tuple[float, float], float]:
    """The change from base to head, paired sample by sample: the geometric mean of head_i /
    base_i in percent, the 95% t interval of it, and the t-test's two-sided p-value."""
    if len(base) != len(head):
        raise ComparisonError(f"paired samples differ in number: {len(base)} base, "
                              f"{len(head)} head")
    ratios = np.log(head) - np.log(base)
    mean, sd = float(ratios.mean()), float(ratios.std(ddof=1))
    if sd == 0.0:  # identical ratios: the interval is that ratio, and any change is certain
        p_value = 1.0 if mean == 0.0 else 0.0
        half_width = 0.0
    else:
        p_value = float(stats.ttest_1samp(ratios, 0.0).pvalue)
        half_width = float(stats.t.ppf(0.5 + CONFIDENCE / 2, len(ratios) - 1)) * sd / math.sqrt(
            len(ratios))
    return (100 * math.expm1(mean),
            (100 * math.expm1(mean - half_width), 100 * math.expm1(mean + half_width)), p_value)


def paired_rounds_needed(ratio_sd: float, threshold_pct: float, alpha: float = 0.01
                         ) -> int | None:
    """Rounds of a paired comparison that find a change of ``threshold_pct`` with probability
    ``POWER`` at two-sided level ``alpha``, when the per-round log ratios scatter by ``ratio_sd``
    (the usual approximation of the t-test's power, t quantiles at rounds - 1 degrees of
    freedom); None above ``MAX_ROUNDS_ADVISED``."""
    effect = math.log1p(threshold_pct / 100)
    for rounds in range(3, MAX_ROUNDS_ADVISED + 1):
        needed = stats.t.ppf(1 - alpha / 2, rounds - 1) + stats.t.ppf(POWER, rounds - 1)
        if effect * math.sqrt(rounds) >= needed * ratio_sd:
            return rounds
    return None


def compare_entries(
    entries: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    thresholds: Mapping[str, float] | None = None,
    default_threshold_pct: float = 5.0,
    alpha: float = 0.01,
    paired: Collection[str] = (),
) -> list[EntryComparison]:
    """Compare each entry's (base, head) latency samples, in the order of ``entries``.

    ``thresholds`` overrides ``default_threshold_pct`` per entry name: the smallest change, in
    percent of the base median, that counts as a regression or an improvement. The entries named
    in ``paired`` have base[i] and head[i] measured side by side, and are tested paired.
    """
    thresholds = thresholds or {}
    measured = []
    for name, (base_samples, head_samples) in entries.items():
        base = _validated(name, "base", base_samples)
        head = _validated(name, "head", head_samples)
        threshold = float(thresholds.get(name, default_threshold_pct))
        if not (math.isfinite(threshold) and threshold > 0):
            raise ComparisonError(f"entry {shorten(name)}: threshold {shorten(threshold)}% is not "
                                  "a positive finite percentage")
        if name in paired:
            delta_pct, ci, p_value = paired_change(base, head)
        else:
            p_value = float(stats.mannwhitneyu(head, base, alternative="two-sided").pvalue)
            delta_pct = 100 * (float(np.median(head)) / float(np.median(base)) - 1)
            ci = hodges_lehmann_ci_pct(base, head)
        measured.append((name, base, head, threshold, delta_pct, ci, p_value))

    adjusted = holm([p for *_, p in measured])
    return [
        EntryComparison(
            name=name,
            base_median=float(np.median(base)),
            head_median=float(np.median(head)),
            delta_pct=delta_pct,
            ci95_pct=ci,
            p_value=p_value,
            p_adjusted=p_adjusted,
            threshold_pct=threshold,
            decision=_decision(delta_pct, ci, p_adjusted, threshold, alpha),
            n_base=len(base),
            n_head=len(head),
            test=PAIRED_TEST if name in paired else "Mann-Whitney U",
            ratio_sd=float(np.std(np.log(head) - np.log(base), ddof=1)) if name in paired
            else None,
        )
        for (name, base, head, threshold, delta_pct, ci, p_value), p_adjusted
        in zip(measured, adjusted)
    ]
