"""Block-wise two-date detection: the CVA chain of :mod:`pipeline.detect.pair`, one block at a time.

The CVA chain (``detect_pair_cva``; ``detect_pair`` when ``detect.pair_method`` is ``cva`` or no learned
model fits) standardises the change magnitude by its median and MAD *over the whole scene* and picks
the Otsu threshold on the whole score image; those three numbers are the only global state. Here they are
estimated once (:meth:`PairStats.from_samples`, e.g. on a regular subsample of blocks: a first, cheap pass)
and every block is then detected independently with :func:`detect_pair_block`, so memory does not grow
with the area and blocks can run in parallel.

With ``PairStats`` computed on all pixels, :func:`detect_pair_chunked` returns what the CVA chain returns
(same features: bands + 0.25 × NDBI/BSI, same robust z score, Otsu on log score floored at ``min_score``,
same vegetation gate and confidence; ``tests/test_chunked.py`` checks this). The per-pixel work is a lean
compiled version (:mod:`pipeline.detect._kernels`) of :func:`pipeline.detect.cva.change_features` +
``change_magnitude`` that does every pixel in one pass instead of materialising feature stacks.

Pure: arrays in, arrays out; never opens files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import xarray as xr

from pipeline.config import DetectSettings
from pipeline.detect.cva import INDEX_WEIGHT
from pipeline.detect.pair import METHOD, MIN_BANDS
from pipeline.detect.threshold import otsu_threshold
from pipeline.errors import BandError, DetectionError

__all__ = ["PairStats", "pair_magnitude", "detect_pair_block", "score_magnitude", "detect_pair_chunked"]


@dataclass(frozen=True)
class PairStats:
    """The global numbers of the two-date detector: magnitude ``median`` and ``mad`` (×1.4826, feature
    units) and the score ``threshold`` (robust z units); ``n`` = magnitudes they were estimated from."""

    median: float
    mad: float
    threshold: float
    n: int

    @classmethod
    def from_samples(cls, magnitude: np.ndarray, settings: DetectSettings) -> PairStats:
        """Estimate from magnitudes of *valid* pixels (NaN allowed: valid but undefined index, score 0)."""
        m = np.asarray(magnitude, dtype=np.float32).ravel()
        finite = m[np.isfinite(m)]
        if finite.size < 10:
            raise DetectionError("fewer than 10 pixels have data in both scenes; do BEFORE and AFTER overlap?")
        med = float(np.median(finite))
        mad = float(np.median(np.abs(finite - med))) * 1.4826 or 1e-6
        if settings.threshold is not None:
            thr = float(settings.threshold)
        else:
            score = np.nan_to_num(np.clip((m - med) / mad, 0, None), nan=0.0).astype(np.float32)
            thr = otsu_threshold(score, floor=settings.min_score)
        return cls(med, mad, thr, int(m.size))


def _band_index(bands: Sequence[str]) -> dict[str, int]:
    names = [str(b) for b in bands]
    missing = [b for b in MIN_BANDS if b not in names]
    if missing:
        raise BandError(f"both scenes need bands {list(MIN_BANDS)}; missing: {missing}")
    return {b: i for i, b in enumerate(names)}


def _block(before: np.ndarray, after: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    b, a = np.asarray(before), np.asarray(after)
    if not (b.dtype == a.dtype and b.dtype in (np.float32, np.uint16)):  # the kernel's native inputs
        b, a = b.astype(np.float32), a.astype(np.float32)
    if a.shape != b.shape or a.ndim != 3:
        raise DetectionError(f"BEFORE {b.shape} and AFTER {a.shape} must both be (band, y, x) of one shape")
    return b, a


def pair_magnitude(
    before: np.ndarray, after: np.ndarray, bands: Sequence[str], max_ndvi_gain: float, *,
    scale: float = 1.0, zero_is_nodata: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Change magnitude, validity and vegetation gate of one block.

    ``before``/``after``: ``(band, y, x)`` (float32 or uint16 used as they are, other types converted to
    float32), reflectance (0-1) = value × ``scale`` (e.g. 1e-4 for L2A DN), NaN = no data (and 0 when
    ``zero_is_nodata``), bands named by ``bands`` (same order in both).
    Returns ``magnitude`` (float32 reflectance units, NaN where not valid or an index is undefined),
    ``valid`` (bool: every band has data on both dates) and ``greened`` (bool: NDVI rose by more than
    ``max_ndvi_gain``). One compiled pass over the block (:func:`pipeline.detect._kernels.pair_kernel`).
    """
    out = _run_kernel(before, after, bands, max_ndvi_gain, scale, zero_is_nodata, None)
    return out[0], out[1], out[2]


def _run_kernel(before: np.ndarray, after: np.ndarray, bands: Sequence[str], max_ndvi_gain: float, scale: float,
                zero_is_nodata: bool, stats: PairStats | None) -> tuple[np.ndarray, ...]:
    from pipeline.detect._kernels import pair_kernel

    idx = _band_index(bands)
    b, a = _block(before, after)
    mag, conf = np.empty(b.shape[1:], np.float32), np.empty(b.shape[1:], np.float32)
    valid, greened, change = (np.empty(b.shape[1:], bool) for _ in range(3))  # the kernel writes every pixel
    i11 = idx["B11"] if all(k in idx for k in ("B02", "B04", "B08", "B11")) else -1
    med, mad, thr = (0.0, 0.0, 0.0) if stats is None else (stats.median, stats.mad, stats.threshold)
    pair_kernel(b, a, idx["B02"], idx["B04"], idx["B08"], i11, np.float32(INDEX_WEIGHT),
                np.float32(max_ndvi_gain), np.float32(scale), bool(zero_is_nodata), np.float32(med),
                np.float32(mad), float(thr), mag, valid, greened, change, conf)
    return mag, valid, greened, change, conf


def detect_pair_block(
    before: np.ndarray, after: np.ndarray, bands: Sequence[str], stats: PairStats, settings: DetectSettings,
    *, scale: float = 1.0, zero_is_nodata: bool = False,
) -> dict[str, np.ndarray]:
    """``change`` (bool), ``score`` (float32 robust z), ``valid`` (bool), ``confidence`` (float32 0-1) of one
    block, with the global ``stats`` (see :func:`pair_magnitude` for the inputs)."""
    if not stats.mad > 0:
        raise DetectionError(f"PairStats.mad must be > 0, got {stats.mad}")
    score, valid, _, change, conf = _run_kernel(before, after, bands, settings.max_ndvi_gain, scale,
                                                zero_is_nodata, stats)
    return {"change": change, "score": score, "valid": valid, "confidence": conf}


def score_magnitude(
    magnitude: np.ndarray, valid: np.ndarray, greened: np.ndarray, stats: PairStats
) -> dict[str, np.ndarray]:
    """:func:`detect_pair_block`'s output from :func:`pair_magnitude`'s (one block), without the bands:
    the same values, for blocks whose magnitude was computed before ``stats`` were known. ``magnitude``
    (float32) is overwritten by the score."""
    from pipeline.detect._kernels import score_kernel

    if not stats.mad > 0:
        raise DetectionError(f"PairStats.mad must be > 0, got {stats.mad}")
    score = np.ascontiguousarray(magnitude, dtype=np.float32)
    change, conf = np.empty(score.shape, bool), np.empty(score.shape, np.float32)
    score_kernel(score, np.ascontiguousarray(valid, dtype=bool), np.ascontiguousarray(greened, dtype=bool),
                 np.float32(stats.median), np.float32(stats.mad), float(stats.threshold), change, conf)
    return {"change": change, "score": score, "valid": valid, "confidence": conf}


def detect_pair_chunked(
    before: xr.DataArray, after: xr.DataArray, settings: DetectSettings, stats: PairStats | None = None
) -> xr.Dataset:
    """:func:`~pipeline.detect.pair.detect_pair` with given global ``stats`` (``None``: from all pixels).

    Same inputs and output as ``detect_pair`` (``change``, ``score``, ``valid``, ``confidence`` on the
    grid; attrs ``threshold`` and ``method``).
    """
    common = [b for b in map(str, before["band"].values) if b in set(map(str, after["band"].values))]
    b = before.sel(band=common)
    a = after.sel(band=common)
    if b.shape[1:] != a.shape[1:]:
        raise DetectionError(f"BEFORE grid {b.shape[1:]} and AFTER grid {a.shape[1:]} differ; align AFTER first")
    bv, av = np.asarray(b.values, np.float32), np.asarray(a.values, np.float32)
    if stats is None:
        mag, valid, _ = pair_magnitude(bv, av, common, settings.max_ndvi_gain)
        stats = PairStats.from_samples(mag[valid], settings)
    out = detect_pair_block(bv, av, common, stats, settings)
    dims = ("y", "x")
    coords = {k: b.coords[k] for k in dims if k in b.coords}
    return xr.Dataset(
        {k: xr.DataArray(v, dims=dims, coords=coords) for k, v in out.items()},
        attrs={"threshold": stats.threshold, "method": METHOD},
    )
