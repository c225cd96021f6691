"""Two-date change detection for ``compoundwatch compare`` (any two co-registered scenes).

:func:`detect_pair` is the entry point and always uses the best chain the project has: the learned model
(:mod:`pipeline.detect.learned`: co-registration, radiometric normalisation, gradient-boosted pixel
classifier trained on OSCD) when one exists for the scenes' bands, else the CVA chain below
(``settings.pair_method`` forces one of them). The learned chain is an ensemble: pixels whose CVA change
is extreme (robust z ≥ :data:`STRONG_Z`) are added, because the classifier, trained on OSCD's urban
changes, under-calls the interior of large uniform new roofs; on the OSCD cities this union costs < 0.01 F1.

CVA chain (:func:`detect_pair_cva`): change-vector magnitude of bands + built-up indices between BEFORE and
AFTER, standardised by its robust spread over the scene (median and MAD), an automatic Otsu threshold
floored at ``min_score``, and the same vegetation gate as the series detector (pixels that greened are not
construction).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from pipeline import config
from pipeline.config import DetectSettings, PairMethod
from pipeline.detect.cva import change_features, change_magnitude
from pipeline.detect.indices import ndvi
from pipeline.detect.persistence import confidence_from_score
from pipeline.detect.threshold import otsu_threshold
from pipeline.errors import BandError, DetectionError

__all__ = ["detect_pair", "detect_pair_cva", "MIN_BANDS", "STRONG_Z"]

MIN_BANDS = config.MIN_BANDS
STRONG_Z = 15.0  # robust z of the CVA magnitude above which a change is taken whatever the classifier says
METHOD = "pair-cva"


def detect_pair(before: xr.DataArray, after: xr.DataArray, settings: DetectSettings) -> xr.Dataset:
    """Detect change between two reflectance scenes on the same grid with the best available chain.

    Same parameters and result as :func:`detect_pair_cva`; with the learned chain ``score`` is a change
    probability (0-1), ``threshold`` a probability and ``method`` ``pair-lgbm-<band set>``.
    """
    if settings.pair_method is not PairMethod.CVA:
        from pipeline.detect.learned import LearnedDetector  # lightgbm is imported only when used

        learned = LearnedDetector()
        common = [b for b in map(str, before["band"].values) if b in set(map(str, after["band"].values))]
        if learned.supports(common):
            det = learned.detect(before, after, settings)
            cva = detect_pair_cva(before, after, settings)
            strong = cva["change"] & (cva["score"] >= STRONG_Z)
            det["change"] = det["change"] | strong
            det["confidence"] = xr.where(strong, np.maximum(det["confidence"], cva["confidence"]),
                                         det["confidence"]).astype("float32")
            det.attrs["method"] += "+cva"
            return det
        if settings.pair_method is PairMethod.LEARNED:
            raise BandError(
                f"detect.pair_method is 'learned' but no shipped model fits bands {common}; "
                f"models exist for {learned.available}; use pair_method 'auto' or 'cva'"
            )
    return detect_pair_cva(before, after, settings)


def detect_pair_cva(before: xr.DataArray, after: xr.DataArray, settings: DetectSettings) -> xr.Dataset:
    """Detect change between two reflectance scenes on the same grid (CVA chain).

    Parameters
    ----------
    before, after
        Reflectance (unitless, 0-1), dims ``(band, y, x)``, same ``y``/``x`` grid, NaN = no data. Bands are
        matched by name; the common bands are used (at least B02, B03, B04, B08).
    settings
        :class:`~pipeline.config.DetectSettings` (``threshold``, ``min_score``, ``max_ndvi_gain``).

    Returns
    -------
    xarray.Dataset
        ``change`` (bool), ``score`` (float32, robust z), ``valid`` (bool), ``confidence`` (0-1) on the grid;
        attrs ``threshold`` and ``method``.
    """
    if before.shape[1:] != after.shape[1:]:
        raise DetectionError(
            f"BEFORE grid {before.shape[1:]} and AFTER grid {after.shape[1:]} differ; align AFTER first"
        )
    common = [b for b in map(str, before["band"].values) if b in set(map(str, after["band"].values))]
    missing = [b for b in MIN_BANDS if b not in common]
    if missing:
        raise BandError(f"both scenes need bands {list(MIN_BANDS)}; missing in one of them: {missing}")
    before = before.sel(band=common)
    after = after.sel(band=common).assign_coords(y=before["y"], x=before["x"])
    valid = before.notnull().all("band") & after.notnull().all("band")
    fb, fa = change_features(before), change_features(after)
    mag = change_magnitude(fb, fa).where(valid)
    m = mag.values
    finite = m[np.isfinite(m)]
    if finite.size < 10:
        raise DetectionError("fewer than 10 pixels have data in both scenes; do BEFORE and AFTER overlap?")
    med = float(np.median(finite))
    mad = float(np.median(np.abs(finite - med))) * 1.4826 or 1e-6
    score = ((mag - med) / mad).clip(min=0).fillna(0).astype("float32")
    thr = float(settings.threshold) if settings.threshold is not None else otsu_threshold(
        score.values[valid.values], floor=settings.min_score
    )
    greened = (ndvi(after) - ndvi(before)) > settings.max_ndvi_gain
    change = (score >= thr) & valid & ~greened.fillna(False)
    conf = xr.apply_ufunc(confidence_from_score, score, thr, 1.0).where(change, 0).astype("float32")
    return xr.Dataset(
        {"change": change, "score": score, "valid": valid, "confidence": conf},
        attrs={"threshold": thr, "method": METHOD},
    )
