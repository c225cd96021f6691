"""Two-date change detection for ``compoundwatch compare`` (any two co-registered scenes).

:func:`detect_pair` is the entry point and always uses the best chain the project has for the scenes'
bands (``settings.pair_method`` forces the CVA chain or a learned one): of the learned chains that fit the
bands, the one with the highest strict cross-validated micro-F1 over the labelled OSCD cities
(:func:`best_learned_chain`, read from the models' sidecars):

* the spatial model (:mod:`pipeline.detect.unet`: a small Siamese U-Net that sees texture and structure,
  each date normalised on its own; true-colour pairs at any pixel size),
* the ensemble (:mod:`pipeline.detect.ensemble`: the spatial model's and the pixel classifier's
  probabilities averaged with a cross-validated weight and decision rule, united with the extreme CVA
  changes as below), or
* the pixel classifier (:mod:`pipeline.detect.learned`: co-registration, radiometric normalisation,
  gradient-boosted trees on per-pixel features; Sentinel-2 band sets with B08). It is an ensemble: pixels
  whose CVA change is extreme (robust z ≥ :data:`STRONG_Z`) are added, because the classifier, trained on
  OSCD's urban changes, under-calls the interior of large uniform new roofs; on the OSCD cities this union
  costs < 0.01 F1.

CVA chain (:func:`detect_pair_cva`): change-vector magnitude of bands + built-up indices between BEFORE and
AFTER, standardised by its robust spread over the scene (median and MAD), an automatic Otsu threshold
floored at ``min_score``, and the same vegetation gate as the series detector (pixels that greened are not
construction). It needs only the visible bands (:data:`CVA_MIN_BANDS`); without B08 the vegetation gate is
off, as in the series detector. Where no model is shipped for the bands, :func:`detect_pair` runs it after
normalising AFTER radiometrically onto BEFORE (likely-unchanged pixels, per band), so scenes of different
products or display stretches compare like with like; ``pair_method: cva`` keeps the plain CVA chain (the
benchmark baseline).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from pipeline import config
from pipeline.config import DetectSettings, PairMethod
from pipeline.detect.cva import change_features, change_magnitude
from pipeline.detect.indices import has_bands, ndvi
from pipeline.detect.persistence import confidence_from_score
from pipeline.detect.threshold import otsu_threshold
from pipeline.errors import BandError, DetectionError

__all__ = ["detect_pair", "detect_pair_cva", "best_learned_chain", "MIN_BANDS", "CVA_MIN_BANDS", "STRONG_Z"]

MIN_BANDS = config.MIN_BANDS
#: Bands the CVA chain needs (the visible ones); B08 adds the vegetation gate, B11 the built-up indices.
CVA_MIN_BANDS = ("B02", "B03", "B04")
STRONG_Z = 15.0  # robust z of the CVA magnitude above which a change is taken whatever the classifier says
METHOD = "pair-cva"


def detect_pair(
    before: xr.DataArray, after: xr.DataArray, settings: DetectSettings, pixel_m: float | None = None
) -> xr.Dataset:
    """Detect change between two reflectance scenes on the same grid with the best available chain.

    Same parameters and result as :func:`detect_pair_cva`; with a learned chain ``score`` is a change
    probability (0-1), ``threshold`` a probability and ``method`` ``pair-unet-<band set>`` (the spatial
    model, :mod:`pipeline.detect.unet`), ``pair-ensemble-<band set>+cva`` (:mod:`pipeline.detect.ensemble`)
    or ``pair-lgbm-<band set>+cva`` (the pixel classifier). Where several fit the bands, the one with the
    highest strict cross-validated micro-F1 over the OSCD cities runs
    (:func:`best_learned_chain`). ``pixel_m``: the grid's pixel size in metres, for the spatial model's
    resampling to its 10 m (None: 10 m).
    """
    if settings.pair_method is not PairMethod.CVA:
        common = [b for b in map(str, before["band"].values) if b in set(map(str, after["band"].values))]
        chain = best_learned_chain(common)
        if chain is not None and chain[0] == "unet":
            from pipeline.detect.unet import detect_pair_unet

            return detect_pair_unet(before, after, chain[1], pixel_m=pixel_m)
        if chain is not None and chain[0] == "ensemble":
            from pipeline.detect.ensemble import detect_pair_ensemble

            return _with_strong_cva(detect_pair_ensemble(before, after, chain[1], pixel_m=pixel_m),
                                    before, after, settings)
        if chain is not None:
            from pipeline.detect.learned import LearnedDetector  # lightgbm is imported only when used

            return _with_strong_cva(LearnedDetector().detect(before, after, settings), before, after, settings)
        if settings.pair_method is PairMethod.LEARNED:
            raise BandError(
                f"detect.pair_method is 'learned' but no shipped model fits bands {common}; "
                f"use pair_method 'auto' or 'cva'"
            )
        return _detect_pair_cva_normalised(before, after, settings, common)
    return detect_pair_cva(before, after, settings)


def _with_strong_cva(
    det: xr.Dataset, before: xr.DataArray, after: xr.DataArray, settings: DetectSettings
) -> xr.Dataset:
    """``det`` united with the extreme CVA changes (robust z ≥ :data:`STRONG_Z`), their confidence kept."""
    cva = detect_pair_cva(before, after, settings)
    strong = cva["change"] & (cva["score"] >= STRONG_Z)
    det["change"] = det["change"] | strong
    det["confidence"] = xr.where(strong, np.maximum(det["confidence"], cva["confidence"]),
                                 det["confidence"]).astype("float32")
    det.attrs["method"] += "+cva"
    return det


def best_learned_chain(bands: list[str]) -> tuple[str, str] | None:
    """``("unet" | "lgbm" | "ensemble", band set)`` of the learned chain for ``bands`` with the highest strict
    cross-validated OSCD micro-F1 (sidecars' ``cv.micro_f1`` / ``loco_strict.micro_f1``), or None."""
    from pipeline.detect.ensemble import choose_band_set as choose_ensemble
    from pipeline.detect.ensemble import load_ensemble_meta
    from pipeline.detect.features import choose_band_set
    from pipeline.detect.learned import available_band_sets, load_model_meta
    from pipeline.detect.unet import choose_band_set as choose_unet
    from pipeline.detect.unet import load_unet_meta

    options: list[tuple[float, str, str]] = []
    unet_set = choose_unet(bands)
    if unet_set is not None:
        cv = load_unet_meta(unet_set).get("cv") or {}
        options.append((float(cv.get("micro_f1", 0.0)), "unet", unet_set))
    try:
        lgbm_set = choose_band_set(bands, available_band_sets())
    except BandError:
        lgbm_set = None
    if lgbm_set is not None:
        meta = load_model_meta(lgbm_set)  # the sidecar only: no LightGBM import, no booster parsed
        options.append((float((meta.get("loco_strict") or meta.get("loco") or {}).get("micro_f1", 0.0)),
                        "lgbm", lgbm_set))
    ens_set = choose_ensemble(bands)
    if ens_set is not None:
        options.append((float(load_ensemble_meta(ens_set)["cv"]["micro_f1"]), "ensemble", ens_set))
    if not options:
        return None
    _, kind, band_set = max(options)
    return kind, band_set


def _detect_pair_cva_normalised(
    before: xr.DataArray, after: xr.DataArray, settings: DetectSettings, common: list[str]
) -> xr.Dataset:
    """The CVA chain on AFTER normalised radiometrically onto BEFORE (per band, likely-unchanged pixels)."""
    from pipeline.preprocess.normalise import normalise_to

    missing = [b for b in CVA_MIN_BANDS if b not in common]
    if missing:  # let detect_pair_cva raise its error
        return detect_pair_cva(before, after, settings)
    b = before.sel(band=common)
    a = after.sel(band=common).assign_coords(y=b["y"], x=b["x"])
    norm, gains, offs = normalise_to(b.values, a.values)
    det = detect_pair_cva(b, a.copy(data=norm), settings)
    det.attrs.update(
        method=f"{METHOD}-normalised",
        gains=[round(float(g), 6) for g in gains],
        offsets=[round(float(o), 6) for o in offs],
    )
    return det


def detect_pair_cva(before: xr.DataArray, after: xr.DataArray, settings: DetectSettings) -> xr.Dataset:
    """Detect change between two reflectance scenes on the same grid (CVA chain).

    Parameters
    ----------
    before, after
        Reflectance (unitless, 0-1), dims ``(band, y, x)``, same ``y``/``x`` grid, NaN = no data. Bands are
        matched by name; the common bands are used (at least :data:`CVA_MIN_BANDS`: B02, B03, B04; with
        B08 also the vegetation gate).
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
    missing = [b for b in CVA_MIN_BANDS if b not in common]
    if missing:
        raise BandError(f"both scenes need bands {list(CVA_MIN_BANDS)}; missing in one of them: {missing}")
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
    if has_bands(before, "B04", "B08"):
        greened = ((ndvi(after) - ndvi(before)) > settings.max_ndvi_gain).fillna(False)
    else:  # a true-colour pair: no vegetation index, no gate
        greened = xr.zeros_like(valid)
    change = (score >= thr) & valid & ~greened
    conf = xr.apply_ufunc(confidence_from_score, score, thr, 1.0).where(change, 0).astype("float32")
    return xr.Dataset(
        {"change": change, "score": score, "valid": valid, "confidence": conf},
        attrs={"threshold": thr, "method": METHOD},
    )
