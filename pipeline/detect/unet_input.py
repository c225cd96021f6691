"""Input of the spatial change model: band sets and the per-date normalisation (pure array code).

The same functions prepare the training crops (:mod:`pipeline.train.unet`) and the scenes at inference
(:mod:`pipeline.detect.unet`), so the model always sees inputs made the same way.

Each date is normalised on its own, band by band, by robust percentiles of its valid pixels:
``(x - p_lo) / (p_hi - p_lo)``, clipped to ``[-CLIP, 1 + CLIP]``. That removes gain and offset between
products (L1C vs L2A, 8-bit display-stretched exports vs raw reflectance) without any model of them, and
is why a true-colour screenshot and a Sentinel-2 reflectance scene can be compared at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.detect.features import BAND_SETS

__all__ = ["UNET_BAND_SETS", "NormStats", "percentile_stats", "normalise", "choose_unet_band_set"]

#: Band sets of the spatial model, richest first: a scene pair uses the first set whose bands it has. The
#: Sentinel-2 sets (and their band order) are the pixel classifier's; true-colour exports add ``rgb``.
UNET_BAND_SETS: dict[str, tuple[str, ...]] = {**BAND_SETS, "rgb": ("B04", "B03", "B02")}

P_LO, P_HI = 2.0, 98.0  # percentiles of each band that map to 0 and 1
CLIP = 0.5  # normalised values are clipped to [-CLIP, 1 + CLIP]
MAX_SAMPLE = 1_000_000  # pixels used to estimate the percentiles of a large scene (evenly strided)


@dataclass(frozen=True)
class NormStats:
    """Per-band ``lo`` and ``hi`` (same units as the scene, e.g. reflectance 0-1 or 8-bit DN)."""

    lo: np.ndarray
    hi: np.ndarray


def choose_unet_band_set(bands: Sequence[str], available: Sequence[str] | None = None) -> str | None:
    """The richest band set (of ``available``, default all) whose bands are all in ``bands``, or None."""
    have = set(bands)
    for name, need in UNET_BAND_SETS.items():
        if (available is None or name in available) and set(need) <= have:
            return name
    return None


def percentile_stats(scene: np.ndarray, valid: np.ndarray | None = None) -> NormStats:
    """Robust per-band range of ``scene`` ``(band, y, x)`` over ``valid`` pixels (default: all finite).

    At most :data:`MAX_SAMPLE` pixels are used (an even stride over the scene), so a full granule costs the
    same as a city crop. A band without valid pixels gets ``lo = 0, hi = 1``.
    """
    nb = scene.shape[0]
    flat = scene.reshape(nb, -1)
    ok = np.isfinite(flat).all(0) if valid is None else (valid.ravel() & np.isfinite(flat).all(0))
    idx = np.flatnonzero(ok)
    if idx.size > MAX_SAMPLE:
        idx = idx[:: int(np.ceil(idx.size / MAX_SAMPLE))]
    lo = np.zeros(nb, np.float32)
    hi = np.ones(nb, np.float32)
    if idx.size:
        sample = flat[:, idx].astype(np.float32)
        lo, hi = np.percentile(sample, [P_LO, P_HI], axis=1).astype(np.float32)
    hi = np.where(hi - lo > 1e-6, hi, lo + 1e-6).astype(np.float32)
    return NormStats(lo, hi)


def normalise(scene: np.ndarray, stats: NormStats) -> np.ndarray:
    """``scene`` ``(band, y, x)`` mapped by ``stats`` to about 0-1 per band, float32, NaN → 0."""
    lo = stats.lo[:, None, None]
    span = (stats.hi - stats.lo)[:, None, None]
    out = (scene.astype(np.float32) - lo) / span
    np.clip(out, -CLIP, 1 + CLIP, out=out)
    return np.nan_to_num(out, nan=0.0, copy=False)
