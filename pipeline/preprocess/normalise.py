"""Relative radiometric normalisation of AFTER to BEFORE on likely-unchanged pixels (IR-MAD-like, numpy).

Different sun angle, season and atmosphere (L1C has no atmospheric correction) change every band by
roughly a gain and an offset. :func:`normalise_to` finds pixels that probably did not change (iteratively:
the pixels whose standardised multi-band difference is in the lower ``keep`` fraction) and maps each band
of AFTER linearly onto BEFORE there with a reduced-major-axis (orthogonal-like, symmetric) fit, which unlike
ordinary least squares does not shrink the gain when both dates are noisy.
"""

from __future__ import annotations

import numpy as np

__all__ = ["invariant_mask", "normalise_to"]


def invariant_mask(before: np.ndarray, after: np.ndarray, keep: float = 0.5, iterations: int = 2) -> np.ndarray:
    """Likely no-change pixels of two ``(band, y, x)`` stacks (bool ``(y, x)``; False where any NaN).

    Each band is standardised per date (median / MAD over the current no-change set); the pixels whose
    summed squared difference is below its ``keep`` quantile form the next set.
    """
    valid = np.isfinite(before).all(0) & np.isfinite(after).all(0)
    mask = valid.copy()
    if valid.sum() < 10:
        return mask
    for _ in range(iterations):
        d2 = np.zeros(before.shape[1:], np.float64)
        for b, a in zip(before, after):
            zb = _robust_z(b, mask)
            za = _robust_z(a, mask)
            d2 += (za - zb) ** 2
        d2[~valid] = np.inf
        thr = np.quantile(d2[valid], keep)
        mask = valid & (d2 <= thr)
    return mask


def _robust_z(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    v = x[mask]
    med = float(np.median(v))
    mad = float(np.median(np.abs(v - med))) * 1.4826
    if mad <= 0:
        mad = float(np.std(v)) or 1e-6
    return (x - med) / mad


def normalise_to(
    before: np.ndarray, after: np.ndarray, keep: float = 0.5, max_pixels: int = 200_000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Map each band of ``after`` linearly onto ``before`` (reflectance, same ``(band, y, x)`` grid).

    Returns ``(after_normalised, gains, offsets)`` with ``after_normalised = gains * after + offsets``
    (per band, float32). Fits use at most ``max_pixels`` invariant pixels (seeded subsample). Gains are
    clipped to 0.5..2 (a larger correction means the "invariant" set is not); bands without enough
    invariant pixels are left as they are (gain 1, offset 0).
    """
    before = np.asarray(before, np.float32)
    after = np.asarray(after, np.float32)
    mask = invariant_mask(before, after, keep)
    idx = np.flatnonzero(mask.ravel())
    nb = before.shape[0]
    gains = np.ones(nb, np.float32)
    offs = np.zeros(nb, np.float32)
    if idx.size < 100:
        return after.copy(), gains, offs
    if idx.size > max_pixels:
        idx = np.random.default_rng(seed).choice(idx, max_pixels, replace=False)
    for i in range(nb):
        xb = before[i].ravel()[idx].astype(np.float64)
        xa = after[i].ravel()[idx].astype(np.float64)
        sa, sb = xa.std(), xb.std()
        if sa <= 0 or sb <= 0:
            continue
        g = float(np.clip(sb / sa, 0.5, 2.0))
        gains[i] = g
        offs[i] = float(xb.mean() - g * xa.mean())
    out = after * gains[:, None, None] + offs[:, None, None]
    return out.astype(np.float32), gains, offs
