"""False alarms and power of ``harness.bench.compare_stats`` on synthetic latencies.

Samples are lognormal with a 2% coefficient of variation, 30 per side, median 10 ms; each trial
draws fresh samples from one seeded generator per row (the seed column).

* False positives: A/A comparisons (base and head from the same distribution), one entry at a
  time and five entries compared together with Holm. An entry counts as flagged when it is
  significant (p_adjusted < alpha) and its decision is not "unchanged"; the target is <= 1%.
* Power: a true 5% slowdown. With the default 5% threshold, a change of exactly the threshold is
  called a "regression" only when its estimate reaches 5%, about half the time, and "noisy"
  otherwise (its interval reaches past 5%). Detection counts the slowdown flagged: significant,
  decision "regression" or "noisy", estimate positive; the target is >= 95%. The share of
  "regression" decisions is printed too, at the 5% threshold and at a per-entry 3% threshold.

    python benchmarks/compare_power.py

Exits 1 when a target is missed. Takes a few seconds.
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np
from scipy import stats

from harness.bench.compare_stats import EntryComparison, compare_entries

CV = 0.02
SAMPLES = 30
MEDIAN_MS = 10.0
ALPHA = 0.01
SLOWDOWN = 1.05
FAMILY = 5  # entries compared together in the Holm rows


def latencies(rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    sigma = math.sqrt(math.log1p(CV**2))
    return MEDIAN_MS * scale * np.exp(sigma * rng.standard_normal(SAMPLES))


def flagged(result: EntryComparison) -> bool:
    return result.p_adjusted < ALPHA and result.decision != "unchanged"


def flagged_slowdown(result: EntryComparison) -> bool:
    return flagged(result) and result.decision in {"regression", "noisy"} and result.delta_pct > 0


def a_a_single(trials: int, seed: int) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    counts = {"flagged": 0, "p < alpha": 0}
    for _ in range(trials):
        (result,) = compare_entries({"e": (latencies(rng), latencies(rng))}, alpha=ALPHA)
        counts["flagged"] += flagged(result)
        counts["p < alpha"] += result.p_value < ALPHA
    return counts


def a_a_family(trials: int, seed: int) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    counts = {"flagged": 0, "Holm p < alpha": 0, "raw p < alpha": 0}
    for _ in range(trials):
        entries = {f"e{i}": (latencies(rng), latencies(rng)) for i in range(FAMILY)}
        results = compare_entries(entries, alpha=ALPHA)
        counts["flagged"] += any(flagged(r) for r in results)
        counts["Holm p < alpha"] += any(r.p_adjusted < ALPHA for r in results)
        counts["raw p < alpha"] += any(r.p_value < ALPHA for r in results)
    return counts


def slowdown_single(trials: int, seed: int) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    counts = {"flagged": 0, "regression (5%)": 0, "noisy (5%)": 0, "regression (3%)": 0}
    for _ in range(trials):
        entries = {"e": (latencies(rng), latencies(rng, SLOWDOWN))}
        (at_5,) = compare_entries(entries, alpha=ALPHA)
        (at_3,) = compare_entries(entries, thresholds={"e": 3.0}, alpha=ALPHA)
        counts["flagged"] += flagged_slowdown(at_5)
        counts["regression (5%)"] += at_5.decision == "regression"
        counts["noisy (5%)"] += at_5.decision == "noisy"
        counts["regression (3%)"] += at_3.decision == "regression"
    return counts


def slowdown_in_family(trials: int, seed: int) -> dict[str, int]:
    """One slowed entry among FAMILY - 1 unchanged ones: what Holm costs in power."""
    rng = np.random.default_rng(seed)
    counts = {"flagged": 0}
    for _ in range(trials):
        entries = {f"e{i}": (latencies(rng), latencies(rng)) for i in range(1, FAMILY)}
        entries["e0"] = (latencies(rng), latencies(rng, SLOWDOWN))
        results = {r.name: r for r in compare_entries(entries, alpha=ALPHA)}
        counts["flagged"] += flagged_slowdown(results["e0"])
    return counts


def main() -> int:
    started = time.perf_counter()
    print(f"lognormal latencies, CV {CV:.0%}, {SAMPLES} samples per side, alpha {ALPHA}, "
          f"default threshold 5%; 95% interval of each rate is Clopper-Pearson\n")
    # (section, trials, seed, function, what the rows count, target: (key, bound, "max"/"min"))
    sections = [
        ("A/A, 1 entry", 2000, 100, a_a_single, "per comparison", ("flagged", 0.01, "max")),
        (f"A/A, {FAMILY} entries + Holm", 1000, 101, a_a_family, "per family (any entry)",
         ("flagged", 0.01, "max")),
        ("5% slowdown, 1 entry", 1000, 200, slowdown_single, "per comparison",
         ("flagged", 0.95, "min")),
        (f"5% slowdown, 1 of {FAMILY} entries + Holm", 500, 201, slowdown_in_family,
         "per family (the slowed entry)", ("flagged", 0.95, "min")),
    ]
    print(f"{'section':<34} {'trials':>6} {'seed':>4}  {'count':<16} {'rate':>7}  "
          f"{'95% interval':<16} target")
    failed = False
    for title, trials, seed, run, unit, (target_key, bound, kind) in sections:
        for key, hits in run(trials, seed).items():
            rate = hits / trials
            low, high = stats.binomtest(hits, trials).proportion_ci()
            target = ""
            if key == target_key:
                ok = rate <= bound if kind == "max" else rate >= bound
                failed |= not ok
                target = f"{'<=' if kind == 'max' else '>='} {bound:.0%}  {'ok' if ok else 'MISSED'}"
            print(f"{title:<34} {trials:>6} {seed:>4}  {key:<16} {rate:>7.2%}  "
                  f"[{low:6.2%}, {high:6.2%}] {target}".rstrip())
        print(f"{'':<34} counted {unit}")
    print(f"\n{time.perf_counter() - started:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
