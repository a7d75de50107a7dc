"""The spread of a search's accuracies against the sampling error of a finite held-out set."""

from __future__ import annotations

import numpy as np
import pytest

from harness.accuracy.spread import (
    accuracy_spread,
    pack_correct,
    paired_error,
    single_error,
    unpack_correct,
)


def _record(correct: np.ndarray) -> dict:
    return {"value": correct.mean(), "heldout_images": len(correct),
            "heldout_correct": pack_correct(correct)}


def test_packed_bits_round_trip_for_any_length():
    rng = np.random.default_rng(0)
    for images in (1, 7, 8, 359, 1000):
        correct = rng.random(images) < 0.7
        assert np.array_equal(unpack_correct(pack_correct(correct), images), correct)


def test_the_paired_error_counts_only_the_images_two_candidates_disagree_on():
    base = np.zeros(1000, dtype=bool)
    base[:700] = True
    assert paired_error(base, base) == 0.0
    other = base.copy()
    other[:10] = False      # 10 images only the first gets right
    other[700:730] = True   # 30 only the second gets right
    # McNemar: var = (b + c - (b - c)^2 / n) / n^2 = (40 - 0.4) / 1e6
    assert paired_error(base, other) == pytest.approx(1.959964 * np.sqrt(39.6e-6))
    assert single_error(0.7, 1000) == pytest.approx(1.959964 * np.sqrt(0.21 / 1000))
    assert paired_error(base, other) < single_error(0.7, 1000)


def test_a_spread_inside_one_scores_error_can_still_be_a_real_difference():
    low = np.zeros(1000, dtype=bool)
    low[:720] = True
    high = low.copy()
    high[720:740] = True  # right on 20 more images, wrong on none that the other gets right
    spread = accuracy_spread([_record(low), _record(high), {"value": 0.5}])
    assert (spread.candidates, spread.lowest, spread.highest, spread.images) == (2, 0.72, 0.74, 1000)
    assert not spread.exceeds_single_error  # 2 points against ±2.8
    assert spread.paired_error < spread.span
    sentence = spread.sentence()
    assert "span 0.720–0.740 (2.0 points), less than one score's sampling error" in sentence
    assert "so they do differ by more than chance" in sentence


def test_no_spread_without_two_scores_on_the_same_held_out_set():
    correct = np.ones(100, dtype=bool)
    assert accuracy_spread([_record(correct)]) is None
    assert accuracy_spread([{"value": 0.5}, {"value": 0.6}]) is None  # proxies score no images
    assert accuracy_spread([_record(correct), _record(np.ones(50, dtype=bool))]) is None
    without_bits = [{"value": 0.5, "heldout_images": 100}, {"value": 0.9, "heldout_images": 100}]
    spread = accuracy_spread(without_bits)
    assert spread.paired_error is None and spread.exceeds_single_error
    assert "paired" not in spread.sentence()
