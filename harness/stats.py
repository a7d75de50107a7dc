"""Summary statistics of timing samples.

The median's confidence interval is distribution-free: the order statistics whose ranks come from
the binomial distribution Bin(n, 1/2) (as in Conover, "Practical Nonparametric Statistics"), so it
holds for the skewed, heavy-tailed distributions that latencies have. That interval assumes
independent samples; a host whose speed drifts during the run (clocks, other tenants) makes
neighbouring samples alike and the interval too narrow, so ``summarize`` widens it to cover the
batch-medians interval too: the median ± t·s/√k of the medians of k consecutive blocks, the
batch-means method of simulation output analysis applied to medians.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats


def median_ci(samples: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Confidence interval of the median from order statistics (needs at least 6 samples)."""
    ordered = np.sort(np.asarray(samples, dtype=float))
    n = len(ordered)
    if n < 6:
        return float(ordered[0]), float(ordered[-1])
    alpha = 1 - confidence
    low_rank = int(stats.binom.ppf(alpha / 2, n, 0.5))  # 1-based rank of the lower bound
    high_rank = n - low_rank + 1
    return float(ordered[max(low_rank - 1, 0)]), float(ordered[min(high_rank - 1, n - 1)])


# Fewest samples for a tail percentile to be reported, as MLPerf LoadGen requires (99% confidence
# that the estimate bounds the true percentile); below them the percentile is None.
MIN_SAMPLES_FOR_PERCENTILE = {90: 64, 99: 662}


def tail_percentile(values: np.ndarray, percentile: int) -> float | None:
    if len(values) < MIN_SAMPLES_FOR_PERCENTILE[percentile]:
        return None
    return float(np.percentile(values, percentile))


DRIFT_BLOCKS = 8  # consecutive blocks for the batch-medians interval
MIN_BLOCK_SAMPLES = 5  # fewer samples per block: the order-statistic interval alone


def batch_median_ci(samples: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """Interval of the median from the spread of the medians of ``DRIFT_BLOCKS`` consecutive
    blocks (time order kept); None with fewer than ``MIN_BLOCK_SAMPLES`` samples per block."""
    values = np.asarray(samples, dtype=float)
    if len(values) < DRIFT_BLOCKS * MIN_BLOCK_SAMPLES:
        return None
    block_medians = np.array([np.median(b) for b in np.array_split(values, DRIFT_BLOCKS)])
    half = stats.t.ppf((1 + confidence) / 2, DRIFT_BLOCKS - 1) * block_medians.std(ddof=1)
    half /= np.sqrt(DRIFT_BLOCKS)
    centre = float(np.median(values))
    return centre - float(half), centre + float(half)


def drift_robust_ci(samples: Sequence[float]) -> tuple[float, float]:
    """The order-statistic interval, widened to cover the batch-medians interval."""
    low, high = median_ci(samples)
    batches = batch_median_ci(samples)
    if batches is None:
        return low, high
    # the median lies within the samples: a wild block must not push the interval past them
    return (max(min(low, batches[0]), float(np.min(samples))),
            min(max(high, batches[1]), float(np.max(samples))))


@dataclass(frozen=True)
class LatencySummary:
    """Summary of latency samples in milliseconds; ``ci95`` is the median's 95% interval
    (order statistics, widened for drift: ``drift_robust_ci``).

    ``p90`` and ``p99`` are None with fewer samples than ``MIN_SAMPLES_FOR_PERCENTILE`` asks.
    """

    median: float
    p90: float | None
    p99: float | None
    ci95: tuple[float, float]
    cv: float
    n: int
    mean: float
    min: float
    max: float

    @property
    def ci_half_width_rel(self) -> float:
        """Half the CI width relative to the median (0.01 = ±1%)."""
        return (self.ci95[1] - self.ci95[0]) / 2 / self.median

    def to_dict(self) -> dict[str, object]:
        values = asdict(self)
        values["ci95"] = list(self.ci95)
        return values


def summarize(samples_ms: Sequence[float]) -> LatencySummary:
    values = np.asarray(samples_ms, dtype=float)
    mean = float(values.mean())
    return LatencySummary(
        median=float(np.median(values)),
        p90=tail_percentile(values, 90),
        p99=tail_percentile(values, 99),
        ci95=drift_robust_ci(values),
        cv=float(values.std(ddof=1) / mean) if len(values) > 1 else 0.0,
        n=len(values),
        mean=mean,
        min=float(values.min()),
        max=float(values.max()),
    )
