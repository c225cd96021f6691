"""The one scoring module (pipeline.evaluate.metrics): counts → scores, the empty-class rule, kappa, and the
vectorised F1 of the training sweeps agreeing with Scores."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import DetectionError
from pipeline.evaluate.metrics import Scores, f1_of_counts, pixel_scores, rate


def test_rate_is_one_for_an_empty_denominator() -> None:
    assert rate(3, 4) == 0.75
    assert rate(0, 5) == 0.0
    assert rate(0, 0) == 1.0


@pytest.mark.parametrize(
    ("tp", "fp", "fn", "expected"),
    [
        (0, 0, 0, (1.0, 1.0, 1.0, 1.0)),  # nothing predicted, nothing to find: perfect agreement
        (0, 0, 4, (1.0, 0.0, 0.0, 0.0)),  # nothing predicted: no false alarm, everything missed
        (0, 3, 0, (0.0, 1.0, 0.0, 0.0)),  # nothing to find: every prediction is a false alarm
        (2, 2, 1, (0.5, 2 / 3, 4 / 7, 0.4)),
    ],
)
def test_scores_follow_the_one_rule(tp: int, fp: int, fn: int, expected: tuple[float, ...]) -> None:
    s = Scores(tp, fp, fn)
    assert (s.precision, s.recall, s.f1, s.iou) == pytest.approx(expected)
    assert f1_of_counts(np.array([tp, fp, fn])) == pytest.approx(s.f1)
    if s.precision + s.recall and (tp or fp or fn):  # F1 is the harmonic mean wherever both are defined
        assert s.f1 == pytest.approx(2 * s.precision * s.recall / (s.precision + s.recall))


def test_f1_of_counts_matches_scores_row_by_row() -> None:
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 50, size=(40, 3))
    counts[:3] = 0  # all-empty rows follow the rule too
    got = f1_of_counts(counts)
    assert got.shape == (40,)
    assert list(got) == pytest.approx([Scores(*map(int, c)).f1 for c in counts])


def test_kappa_and_accuracy_need_true_negatives() -> None:
    s = Scores(tp=40, fp=10, fn=20, tn=130)
    assert s.overall_accuracy == pytest.approx(170 / 200)
    expected = ((50 * 60) + (150 * 140)) / 200**2
    assert s.kappa == pytest.approx((0.85 - expected) / (1 - expected))
    assert (s + Scores(1, 1, 1, 1)).tn == 131
    assert (s + Scores(1, 1, 1)).tn is None
    with pytest.raises(DetectionError, match="true-negative"):
        _ = Scores(1, 2, 3).kappa


def test_pixel_scores_count_valid_pixels_only() -> None:
    pred = np.array([[1, 1, 0], [0, 1, 1]], bool)
    truth = np.array([[1, 0, 0], [1, 1, 0]], bool)
    valid = np.array([[1, 1, 1], [0, 1, 1]], bool)
    s = pixel_scores(pred, truth, valid)
    assert (s["tp"], s["fp"], s["fn"]) == (2, 2, 0)
    assert s["pixel_precision"] == 0.5 and s["pixel_recall"] == 1.0 and s["pixel_iou"] == 0.5
    with pytest.raises(DetectionError, match="valid mask shape"):
        pixel_scores(pred, truth, valid[:1])
