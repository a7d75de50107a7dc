"""Whether a search's accuracies differ by more than the error of scoring on a finite held-out set.

One top-1 on n images has a binomial 95% sampling error of ±1.96·sqrt(p(1−p)/n): ±2.7 points at
75% on 1,000 images. A search's candidates are all scored on the same images, though, and whether
two of them differ is decided only by the images on which they disagree: the paired (McNemar)
error of their difference is usually much smaller than either score's own. Estimators that score
on a held-out set record which images each candidate got right (``heldout_correct``, packed bits
in hex), so the report can give both.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

Z95 = 1.959964


def pack_correct(correct: np.ndarray) -> str:
    """Which held-out images were classified correctly, as hex of the packed bits."""
    return np.packbits(correct.astype(bool)).tobytes().hex()


def unpack_correct(packed: str, images: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(bytes.fromhex(packed), dtype=np.uint8))[:images].astype(bool)


def single_error(accuracy: float, images: int) -> float:
    """Half-width of the binomial 95% CI of one top-1 on ``images`` images (normal approximation)."""
    return Z95 * math.sqrt(accuracy * (1 - accuracy) / images)


def paired_error(first: np.ndarray, second: np.ndarray) -> float:
    """Half-width of the 95% CI of the difference of two top-1s on the same images (McNemar)."""
    images = len(first)
    only_first = int(np.sum(first & ~second))
    only_second = int(np.sum(second & ~first))
    variance = (only_first + only_second - (only_first - only_second) ** 2 / images) / images ** 2
    return Z95 * math.sqrt(max(variance, 0.0))


@dataclass(frozen=True)
class AccuracySpread:
    """The range of a search's accuracies against the two sampling errors."""

    candidates: int
    lowest: float
    highest: float
    images: int
    single_error: float  # one score's 95% half-width, at the mean accuracy
    paired_error: float | None  # 95% half-width of highest − lowest on the same images

    @property
    def span(self) -> float:
        return self.highest - self.lowest

    @property
    def exceeds_single_error(self) -> bool:
        return self.span > self.single_error

    def sentence(self) -> str:
        paired = ("" if self.paired_error is None else
                  f"; the most and the least accurate differ by {self.span * 100:.1f} ± "
                  f"{self.paired_error * 100:.1f} points on the same images (paired 95% CI), so "
                  f"they {'do' if self.span > self.paired_error else 'do not'} differ by more "
                  f"than chance")
        return (f"accuracies of {self.candidates} measured candidates span {self.lowest:.3f}–"
                f"{self.highest:.3f} ({self.span * 100:.1f} points), "
                f"{'more' if self.exceeds_single_error else 'less'} than one score's sampling "
                f"error on {self.images} held-out images (±{self.single_error * 100:.1f} points, "
                f"95%){paired}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "span": self.span}


def accuracy_spread(records: list[dict[str, Any]]) -> AccuracySpread | None:
    """The spread of accuracy ``records`` (a trial's ``accuracy``) scored on a held-out set;
    None when fewer than two were, or their estimator scores no held-out images."""
    scored = [r for r in records if r and r.get("heldout_images")]
    sizes = {r["heldout_images"] for r in scored}
    if len(scored) < 2 or len(sizes) != 1:
        return None
    images = sizes.pop()
    lowest = min(scored, key=lambda r: r["value"])
    highest = max(scored, key=lambda r: r["value"])
    mean = sum(r["value"] for r in scored) / len(scored)
    paired = None
    if lowest.get("heldout_correct") and highest.get("heldout_correct"):
        paired = paired_error(unpack_correct(highest["heldout_correct"], images),
                              unpack_correct(lowest["heldout_correct"], images))
    return AccuracySpread(candidates=len(scored), lowest=lowest["value"],
                          highest=highest["value"], images=images,
                          single_error=single_error(mean, images), paired_error=paired)
