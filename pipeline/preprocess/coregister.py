"""Sub-pixel co-registration of two dates by phase correlation (pure numpy / scikit-image / scipy).

:func:`estimate_shift` measures the translation of AFTER relative to BEFORE on one band (B08 by default:
sharp urban edges, little atmosphere) with :func:`skimage.registration.phase_cross_correlation` (upsampled
to 1/``upsample`` px); :func:`apply_shift` resamples every band of AFTER by that shift (bilinear), so that
AFTER lines up with BEFORE before differencing. Shifts are in **pixels of the common grid** as
``(dy, dx)`` (rows down, columns right): AFTER's content at ``(r, c)`` belongs at ``(r + dy, c + dx)``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.registration import phase_cross_correlation

__all__ = ["estimate_shift", "apply_shift", "coregister", "MAX_SHIFT_PX"]

#: Shifts larger than this (pixels) are not trusted (the scenes are assumed georeferenced already).
MAX_SHIFT_PX = 3.0


def _filled(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    ok = np.isfinite(a)
    fill = float(np.median(a[ok])) if ok.any() else 0.0
    return np.where(ok, a, fill)


def estimate_shift(before: np.ndarray, after: np.ndarray, upsample: int = 10) -> tuple[float, float]:
    """Sub-pixel translation ``(dy, dx)`` (pixels) that moves ``after`` onto ``before`` (2-D arrays, NaN ok).

    Returns ``(0.0, 0.0)`` when the images are too small (< 16 px a side), flat, or the estimate exceeds
    :data:`MAX_SHIFT_PX` (unreliable: the scenes are assumed roughly georeferenced).
    """
    b, a = _filled(before), _filled(after)
    if b.shape != a.shape or min(b.shape) < 16 or np.ptp(b) == 0 or np.ptp(a) == 0:
        return 0.0, 0.0
    # a Hann window keeps the image borders from dominating the cross-power spectrum
    win = np.outer(np.hanning(b.shape[0]), np.hanning(b.shape[1]))
    shift, _, _ = phase_cross_correlation(
        (b - b.mean()) * win, (a - a.mean()) * win, upsample_factor=upsample, normalization=None
    )
    dy, dx = float(shift[0]), float(shift[1])
    if not (np.isfinite(dy) and np.isfinite(dx)) or max(abs(dy), abs(dx)) > MAX_SHIFT_PX:
        return 0.0, 0.0
    return dy, dx


def apply_shift(stack: np.ndarray, shift: tuple[float, float]) -> np.ndarray:
    """Shift every band of ``stack`` ``(band, y, x)`` (or one 2-D image) by ``(dy, dx)`` pixels, bilinear.

    Pixels shifted in from outside the image and pixels touching a NaN become NaN.
    """
    dy, dx = shift
    arr = np.asarray(stack, dtype=np.float32)
    if dy == 0 and dx == 0:
        return arr.copy()
    two_d = arr.ndim == 2
    arr3 = arr[None] if two_d else arr
    out = np.empty_like(arr3)
    for i, band in enumerate(arr3):
        nan = ~np.isfinite(band)
        filled = np.where(nan, 0.0, band)
        moved = ndimage.shift(filled, (dy, dx), order=1, mode="constant", cval=np.nan)
        bad = ndimage.shift(nan.astype(np.float32), (dy, dx), order=1, mode="constant", cval=1.0) > 0.01
        out[i] = np.where(bad, np.nan, moved)
    return out[0] if two_d else out


def coregister(
    before: np.ndarray, after: np.ndarray, ref_index: int, upsample: int = 10
) -> tuple[np.ndarray, tuple[float, float]]:
    """Shift ``after`` ``(band, y, x)`` onto ``before`` using band ``ref_index``; returns (shifted, (dy, dx))."""
    shift = estimate_shift(before[ref_index], after[ref_index], upsample)
    return apply_shift(after, shift), shift
