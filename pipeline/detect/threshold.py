"""Automatic thresholds (pure numpy)."""

from __future__ import annotations

import numpy as np
from skimage.filters import threshold_otsu

__all__ = ["otsu_threshold", "probability_confidence"]


def otsu_threshold(values: np.ndarray, floor: float = 0.0, log: bool = True) -> float:
    """Otsu's threshold of the finite, positive ``values``, never below ``floor``.

    With ``log`` the threshold is found on ``log1p(values)``, which separates a heavy-tailed change score
    (most pixels near 1, changes far above) better than the raw scale. Returns ``floor`` (or ``inf`` when
    ``floor`` is 0) when there are fewer than two distinct values.
    """
    v = np.asarray(values, dtype="float64").ravel()
    v = v[np.isfinite(v) & (v >= 0)]
    if v.size < 2 or np.ptp(v) == 0:
        return float(floor) if floor > 0 else float("inf")
    t = threshold_otsu(np.log1p(v) if log else v)
    t = float(np.expm1(t)) if log else float(t)
    return max(t, float(floor))


def probability_confidence(prob: np.ndarray, threshold: float) -> np.ndarray:
    """Per-pixel confidence (0-1, float32) of a change probability cut at ``threshold``: 0.5 at the
    threshold rising linearly to 1 at probability 1; 0 below the threshold."""
    span = max(1.0 - threshold, 1e-6)
    conf = 0.5 + 0.5 * np.clip((prob - threshold) / span, 0, 1)
    return np.where(prob >= threshold, conf, 0.0).astype(np.float32)
