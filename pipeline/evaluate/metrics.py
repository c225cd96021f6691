"""Confusion counts → precision, recall, F1, IoU (and accuracy, kappa): the one place scores are computed.

**The rule for empty classes** (one rule, every caller): a ratio whose denominator is 0 is **1.0**, because
nothing went wrong. No prediction raised no false alarm (precision 1.0); nothing to find was not missed
(recall 1.0); a prediction and a reference that are both empty agree perfectly (F1 = IoU = 1.0). With at
least one count non-zero the usual formulas hold; F1 = 2 tp / (2 tp + fp + fn), the harmonic mean of
precision and recall, is 0.0 when tp is 0.

Used by the pipeline's evaluate stage (pixel and object scores of the demo), the OSCD harness and the
training code (:mod:`pipeline.train.oscd`) and the case studies. Pure numpy; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.errors import DetectionError

__all__ = ["rate", "Scores", "f1_of_counts", "threshold_counts", "pixel_scores"]


def rate(part: int | float, whole: int | float) -> float:
    """``part / whole``, and 1.0 when ``whole`` is 0 (the module's rule for empty classes)."""
    return part / whole if whole else 1.0


@dataclass(frozen=True)
class Scores:
    """Change-class counts (pixels or objects) and the scores derived from them (see the module rule).

    ``tp``, ``fp``, ``fn``: true positives, false positives, false negatives; ``tn`` (true negatives) only
    where the negatives are known (partial labels), needed by :attr:`overall_accuracy` and :attr:`kappa`.
    """

    tp: int
    fp: int
    fn: int
    tn: int | None = None

    @classmethod
    def from_masks(cls, pred: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> Scores:
        """Counts of a boolean prediction against a boolean reference of the same shape (True = change),
        over the pixels where ``valid`` is True (all when None); ``tn`` left unset."""
        pred, truth = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
        if pred.shape != truth.shape:
            raise DetectionError(
                f"prediction shape {pred.shape} and reference shape {truth.shape} differ: not on one grid"
            )
        if valid is not None:
            valid = np.asarray(valid, dtype=bool)
            if valid.shape != pred.shape:
                raise DetectionError(f"valid mask shape {valid.shape} differs from prediction shape {pred.shape}")
            pred, truth = pred & valid, truth & valid
        return cls(int(np.count_nonzero(pred & truth)), int(np.count_nonzero(pred & ~truth)),
                   int(np.count_nonzero(~pred & truth)))

    def __add__(self, other: Scores) -> Scores:
        tn = None if self.tn is None or other.tn is None else self.tn + other.tn
        return Scores(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, tn)

    @property
    def precision(self) -> float:
        """tp / (tp + fp); 1.0 when nothing is predicted."""
        return rate(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        """tp / (tp + fn); 1.0 when nothing is to be found."""
        return rate(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        """2 tp / (2 tp + fp + fn): the change-class F1; 1.0 when all counts are 0."""
        return rate(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def iou(self) -> float:
        """tp / (tp + fp + fn): intersection over union of the change class; 1.0 when all counts are 0."""
        return rate(self.tp, self.tp + self.fp + self.fn)

    def _negatives(self) -> int:
        if self.tn is None:
            raise DetectionError("these scores have no true-negative count (tn); accuracy and kappa need it")
        return self.tn

    @property
    def overall_accuracy(self) -> float:
        """(tp + tn) / all counted pixels; 0.0 when nothing is counted. Needs ``tn``."""
        n = self.tp + self.fp + self.fn + self._negatives()
        return (self.tp + self._negatives()) / n if n else 0.0

    @property
    def kappa(self) -> float:
        """Cohen's kappa of the two-class table; 0.0 where undefined (no pixel, or chance agreement 1). Needs
        ``tn``."""
        tp, fp, fn, tn = self.tp, self.fp, self.fn, self._negatives()
        n = tp + fp + fn + tn
        if not n:
            return 0.0
        expected = ((tp + fp) * (tp + fn) + (fn + tn) * (fp + tn)) / (n * n)
        return (self.overall_accuracy - expected) / (1 - expected) if expected < 1 else 0.0

    def as_dict(self) -> dict[str, float | int]:
        """``precision``, ``recall``, ``f1``, ``iou`` (0-1) and the counts ``tp``, ``fp``, ``fn``."""
        return {"precision": self.precision, "recall": self.recall, "f1": self.f1, "iou": self.iou,
                "tp": self.tp, "fp": self.fp, "fn": self.fn}


def f1_of_counts(counts: np.ndarray) -> np.ndarray:
    """:attr:`Scores.f1` of many count rows at once: ``counts[..., 0:3]`` = tp, fp, fn → F1 (float64).

    The same rule as :class:`Scores` (1.0 where all three counts are 0), vectorised for threshold sweeps.
    """
    c = np.asarray(counts)
    tp, fp, fn = c[..., 0], c[..., 1], c[..., 2]
    den = 2 * tp + fp + fn
    return np.where(den > 0, 2 * tp / np.maximum(den, 1), 1.0)


def threshold_counts(prob: np.ndarray, truth: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """``(threshold, 3)`` int64 counts TP, FP, FN of ``prob >= t`` against the boolean ``truth`` (same shape)
    for each of ``thresholds``: a threshold sweep in two sorts (feed it to :func:`f1_of_counts`)."""
    pos = np.sort(prob[truth])
    neg = np.sort(prob[~truth])
    tp = pos.size - np.searchsorted(pos, thresholds, side="left")
    fp = neg.size - np.searchsorted(neg, thresholds, side="left")
    return np.stack([tp, fp, pos.size - tp], axis=1).astype(np.int64)


def pixel_scores(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> dict[str, Any]:
    """Pixel precision, recall, F1 and IoU of a boolean change mask against a boolean truth mask.

    Only pixels where ``valid`` is True count (all when None); the empty-class rule is the module's. Returns
    ``pixel_precision``, ``pixel_recall``, ``pixel_f1``, ``pixel_iou`` and the counts ``tp``, ``fp``, ``fn``
    (Python ints).
    """
    s = Scores.from_masks(pred, truth, valid)
    return {"pixel_precision": s.precision, "pixel_recall": s.recall, "pixel_f1": s.f1, "pixel_iou": s.iou,
            "tp": s.tp, "fp": s.fp, "fn": s.fn}
