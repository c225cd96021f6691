"""Persistent change-vector detector for a time series of clear-masked reflectance.

For each pixel:

1. Every date is described by a feature vector (bands + built-up indices, :func:`change_features`).
2. The first ``reference_months`` form the reference. A later date's change magnitude is the distance to
   the *closest same-season* reference observation (day of year within ``SEASON_DAYS``), so crop cycles,
   ploughing and seasonal leaf loss compare like with like.
3. The magnitude is divided by the pixel's own noise scale: the lower quartile, over reference dates, of the
   distance to the nearest other reference date (noise, texture under misregistration), floored at
   ``NOISE_FLOOR``. The result ``z`` is a robust z-like score (unitless).
4. Persistence: for every candidate break date ``t`` the ``1 - persistence`` quantile of ``z`` over the clear
   dates from ``t`` on says how strongly the change *stays*; a pixel's score is the best such level over
   candidate breaks with at least ``min_post_obs`` clear dates. Candidates whose vegetation index rose by
   more than ``max_ndvi_gain`` (new fields, not buildings) are ignored; without B04 and B08 (an RGB-only
   series) this vegetation gate is off.
5. The threshold is automatic (Otsu on the log score, floored at ``min_score``) unless fixed. The break is
   the first clear date whose own ``z`` and persistent level both pass it.
6. **Texture** (``texture``, on by default): steps 2-5 run a second time on each date's local contrast
   (:mod:`pipeline.detect.texture`, noise floored at ``TEXTURE_NOISE_FLOOR``, its own automatic threshold),
   for buildings whose mean colour is the ground's (grey blocks on grey gravel). Its regions (holes closed,
   the windows' ring taken off, greening left out as in step 4) join the change; a pixel found only there
   takes the texture's break date and confidence (its region's median and mean where the closing added it),
   and a score in units of the spectral threshold.

Steps 1-4 are per pixel and run chunk by chunk on dask arrays (``xarray.apply_ufunc``; the texture windows
read across chunk borders); only the thresholds and the texture regions look at whole 2-D images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dask
import numpy as np
import pandas as pd
import xarray as xr
from scipy import ndimage

from pipeline.config import DetectSettings
from pipeline.detect.cva import change_features
from pipeline.detect.indices import has_bands, ndvi
from pipeline.detect.texture import TEXTURE_NOISE_FLOOR, local_texture, texture_regions
from pipeline.detect.threshold import otsu_threshold
from pipeline.errors import DetectionError

__all__ = ["detect_series", "confidence_from_score", "nan_lower_quantile", "SEASON_DAYS", "NOISE_FLOOR"]

SEASON_DAYS = 45  # same-season window, days of year either side
NOISE_FLOOR = 0.02  # minimum noise scale, reflectance units (sensor noise + illumination between two dates)
METHOD = "persistent-cva"


def confidence_from_score(score: np.ndarray, threshold: float, n_obs: np.ndarray | float) -> np.ndarray:
    """Map a change score to 0-1: 0.5 at the threshold, towards 1 far above it and with more evidence.

    ``n_obs`` is the number of clear dates showing the change; each extra date adds evidence.
    """
    score = np.asarray(score, dtype="float64")
    ratio = np.where(np.isfinite(score), score / threshold, 0.0)
    above = 1.0 - 0.5 * np.exp(-2.0 * np.clip(ratio - 1.0, 0, None))
    below = 0.5 * np.clip(ratio, 0, 1)
    evidence = np.asarray(n_obs, dtype="float64")
    evidence = evidence / (evidence + 2.0)
    return np.where(ratio >= 1, above * (0.6 + 0.4 * evidence), below).astype("float32")


def _doy_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = np.abs(a[:, None] - b[None, :]) % 365.25
    return np.minimum(d, 365.25 - d)


def nan_lower_quantile(a: np.ndarray, q: float) -> np.ndarray:
    """Quantile ``q`` along axis 0 ignoring NaN (the "lower" order statistic), NaN where all are NaN.

    A sort-based replacement for ``np.nanquantile(..., method="lower")``, which is very slow with NaNs.
    """
    srt = np.sort(a, axis=0)  # NaN sorts last
    n = np.sum(np.isfinite(a), axis=0)
    k = np.floor(q * np.maximum(n - 1, 0)).astype(np.intp)
    out = np.take_along_axis(srt, k[None], axis=0)[0]
    return np.where(n > 0, out, np.nan).astype("float32")


def _nanmin_stack(arrs: list[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    out = np.full(shape, np.nan, "float32")
    for a in arrs:
        out = np.fmin(out, a)
    return out


def _series_kernel(
    feat: np.ndarray,
    veg: np.ndarray,
    *,
    days: np.ndarray,
    doy: np.ndarray,
    is_ref: np.ndarray,
    persistence: float,
    min_post_obs: int,
    max_ndvi_gain: float,
    noise_floor: float = NOISE_FLOOR,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-pixel statistics on one block.

    ``feat``: (..., time, feature) float32 with NaN where not clear; ``veg``: (..., time) NDVI.
    Returns ``z`` (..., time), ``level`` (..., time: persistent level of a break at that date, NaN where
    not a valid candidate) and ``n_post`` (..., time: clear dates from that date on). ``noise_floor``: the
    smallest noise scale, in the features' units.
    """
    feat = np.moveaxis(feat, (-2, -1), (0, 1))  # (time, feature, ...)
    veg = np.moveaxis(veg, -1, 0)  # (time, ...)
    nt = feat.shape[0]
    space = feat.shape[2:]
    ref_idx = np.flatnonzero(is_ref)
    post_idx = np.flatnonzero(~is_ref)

    def dist(i: int | np.integer[Any], j: int | np.integer[Any]) -> np.ndarray:
        return np.sqrt(np.sum((feat[i] - feat[j]) ** 2, axis=0))

    # noise scale: lower quartile over reference dates of the distance to the nearest-in-time other ref date
    near = []
    for i in ref_idx:
        others = [j for j in ref_idx if j != i and abs(days[j] - days[i]) <= 2 * SEASON_DAYS]
        if others:
            near.append(_nanmin_stack([dist(i, j) for j in others], space))
    if near:
        scale = nan_lower_quantile(np.stack(near), 0.25)
    else:
        scale = np.full(space, np.nan, "float32")
    scale = np.fmax(np.nan_to_num(scale, nan=noise_floor), noise_floor).astype("float32")

    # change magnitude of each later date to its closest same-season reference observation
    z = np.full((nt, *space), np.nan, "float32")
    season = _doy_distance(doy[post_idx], doy[ref_idx]) <= SEASON_DAYS
    for k, t in enumerate(post_idx):
        cands = ref_idx[season[k]] if season[k].any() else ref_idx
        d = _nanmin_stack([dist(t, r) for r in cands], space)
        # fall back to any reference date where no same-season reference was clear
        missing = np.isnan(d) & ~np.isnan(feat[t, 0])
        if missing.any():
            d = np.where(missing, _nanmin_stack([dist(t, r) for r in ref_idx], space), d)
        z[t] = d / scale

    ref_veg = nan_lower_quantile(veg[ref_idx], 0.5)
    level = np.full((nt, *space), np.nan, "float32")
    n_post = np.zeros((nt, *space), "int16")
    q = 1.0 - persistence
    for t in post_idx:
        tail = z[t:]
        n = np.sum(np.isfinite(tail), axis=0)
        n_post[t] = n
        lev = nan_lower_quantile(tail, q)
        gain = nan_lower_quantile(veg[t:], 0.5) - ref_veg
        ok = (n >= min_post_obs) & np.isfinite(z[t]) & ~(gain > max_ndvi_gain)
        level[t] = np.where(ok, lev, np.nan)
    return np.moveaxis(z, 0, -1), np.moveaxis(level, 0, -1), np.moveaxis(n_post, 0, -1)


def detect_series(refl: xr.DataArray, clear: xr.DataArray, settings: DetectSettings) -> xr.Dataset:
    """Detect persistent, built-up-like change in a reflectance time series.

    Parameters
    ----------
    refl
        Reflectance (unitless, 0-1), dims ``(time, band, y, x)`` on a projected grid (metres); may be
        dask-backed and chunked in ``y``/``x`` (``time``/``band`` must be single chunks).
    clear
        Clear-sky mask ``(time, y, x)``, True where the observation is usable.
    settings
        :class:`~pipeline.config.DetectSettings`.

    Returns
    -------
    xarray.Dataset
        The detection contract: ``change`` (bool), ``score`` (float32), ``confidence`` (0-1),
        ``break_index`` / ``after_index`` (int16 indices into ``time``, -1 where none),
        ``clear_fraction`` (float32) on the ``(y, x)`` grid; ``clear`` ``(time, y, x)``; coords ``time`` and
        ``scene_id`` when the input has it; attrs ``threshold`` and ``method``. CRS carried over.
    """
    if set(refl.dims) != {"time", "band", "y", "x"}:
        raise DetectionError(f"reflectance must have dims (time, band, y, x), got {refl.dims}")
    times = pd.DatetimeIndex(refl["time"].values)
    ref_end = times[0] + pd.DateOffset(months=settings.reference_months)
    is_ref = np.asarray(times < ref_end)
    if is_ref.sum() < 2 or (~is_ref).sum() < settings.min_post_obs:
        raise DetectionError(
            f"the series has {is_ref.sum()} reference and {(~is_ref).sum()} later dates; need >= 2 and "
            f">= detect.min_post_obs ({settings.min_post_obs}): widen the date range or shorten "
            "detect.reference_months"
        )
    keep = {k: refl.coords[k] for k in ("scene_id", "spatial_ref") if k in refl.coords}
    refl = refl.transpose("time", "band", "y", "x").reset_coords(drop=True)
    clear = clear.transpose("time", "y", "x").astype(bool).reset_coords(drop=True)
    masked = refl.where(clear)
    feat = change_features(masked)
    # vegetation gate input; an RGB-only series gets a neutral (all-zero) index, i.e. no gate
    veg = ndvi(masked) if has_bands(masked, "B04", "B08") else xr.zeros_like(masked.isel(band=0, drop=True))
    if feat.chunks is not None:  # core dims must be single chunks; y/x chunks stay as they are
        feat = feat.chunk({"time": -1, "feature": -1})
        veg = veg.chunk({"time": -1})
    days = np.asarray((times - times[0]).days, dtype="float64")
    doy = np.asarray(times.dayofyear, dtype="float64")
    kwargs = dict(days=days, doy=doy, is_ref=is_ref, persistence=settings.persistence,
                  min_post_obs=settings.min_post_obs, max_ndvi_gain=settings.max_ndvi_gain)
    spec = _channel(feat, veg, settings, kwargs)
    thr = spec.threshold
    if not settings.texture:
        change, break_index = spec.change, xr.where(spec.change, spec.first, -1).astype("int16")
        return _dataset(change, spec.score, spec.confidence, break_index, clear, times, keep,
                        {"threshold": thr, "method": METHOD})
    tex_feat = local_texture(masked).expand_dims(feature=["texture"], axis=-1)
    if tex_feat.chunks is not None:
        tex_feat = tex_feat.chunk({"time": -1, "feature": -1})
    tex = _channel(tex_feat, veg, settings, {**kwargs, "noise_floor": TEXTURE_NOISE_FLOOR})

    # texture regions join the change; pixels found only there take the texture's break and confidence
    region = texture_regions(tex.change.values) & ~spec.change.values
    tex_first, tex_conf = tex.first.values.astype("int64"), tex.confidence.values
    if region.any():  # pixels the closing added take their region's median break and mean confidence
        labels, n = ndimage.label(region)
        own = np.where(tex.change.values & region, labels, 0)
        index = np.arange(1, n + 1)
        has_own = np.asarray(ndimage.sum_labels(np.ones_like(own), own, index)) > 0
        with np.errstate(invalid="ignore"):  # a region without own pixels (the closing's only): dropped below
            med = np.where(has_own, np.asarray(ndimage.median(tex_first, own, index), "float64"), -1)
            mean_conf = np.where(has_own, np.asarray(ndimage.mean(tex_conf, own, index), "float64"), 0)
        tex_first = np.where(own > 0, tex_first, np.concatenate([[-1], med.round().astype("int64")])[labels])
        tex_conf = np.where(own > 0, tex_conf, np.concatenate([[0.0], mean_conf])[labels])
        region &= (tex_first >= 0) & ~_greened(veg, is_ref, tex_first, region, settings.max_ndvi_gain)
    region_x = xr.DataArray(region, dims=("y", "x"), coords=spec.change.coords)
    change = spec.change | region_x
    break_index = xr.where(spec.change, spec.first, xr.where(region_x, tex_first, -1)).astype("int16")
    score = xr.where(region_x, np.maximum(spec.score, tex.score * (thr / tex.threshold)), spec.score)
    score = score.astype("float32")
    conf = xr.where(spec.change, spec.confidence, xr.where(region_x, tex_conf, 0)).astype("float32")
    return _dataset(change, score, conf, break_index, clear, times, keep,
                    {"threshold": thr, "texture_threshold": tex.threshold, "method": METHOD})


def _dataset(
    change: xr.DataArray, score: xr.DataArray, conf: xr.DataArray, break_index: xr.DataArray,
    clear: xr.DataArray, times: pd.DatetimeIndex, keep: dict[str, Any], attrs: dict[str, Any],
) -> xr.Dataset:
    """The detection contract of :func:`detect_series` from its parts (``after_index``: the last clear date
    before each break)."""
    clear_c = clear.compute()
    # last clear date before the break
    idx = xr.DataArray(np.arange(times.size), dims="time")
    before = clear_c & (idx < break_index)
    after_index = xr.where(change & before.any("time"), (before * idx).max("time"), -1).astype("int16")
    ds = xr.Dataset(
        {
            "change": change,
            "score": score,
            "confidence": conf,
            "break_index": break_index,
            "after_index": after_index,
            "clear_fraction": clear_c.mean("time").astype("float32"),
            "clear": clear_c,
        },
        attrs=attrs,
    )
    if "scene_id" in keep:
        ds = ds.assign_coords(scene_id=("time", [str(v) for v in keep["scene_id"].values]))
    if "spatial_ref" in keep:
        ds = ds.assign_coords(spatial_ref=keep["spatial_ref"])
    return ds


@dataclass(frozen=True)
class _Channel:
    """One channel's result on the ``(y, x)`` grid: ``change``, persistent ``score``, its automatic
    ``threshold``, the ``first`` date index passing it (0 where none) and the ``confidence`` of changes."""

    change: xr.DataArray
    score: xr.DataArray
    threshold: float
    first: xr.DataArray
    confidence: xr.DataArray


def _channel(feat: xr.DataArray, veg: xr.DataArray, settings: DetectSettings, kwargs: dict[str, Any]) -> _Channel:
    """Steps 2-5 of the module docstring on the features ``(time, y, x, feature)`` of one channel."""
    z, level, n_post = xr.apply_ufunc(
        _series_kernel,
        feat,
        veg,
        input_core_dims=[["time", "feature"], ["time"]],
        output_core_dims=[["time"], ["time"], ["time"]],
        dask="parallelized",
        output_dtypes=["float32", "float32", "int16"],
        kwargs=kwargs,
    )
    z = z.transpose("time", "y", "x")
    level = level.transpose("time", "y", "x")
    n_post = n_post.transpose("time", "y", "x")
    if z.chunks is not None:  # compute the per-pixel pass once, chunk by chunk, and keep it
        z, level, n_post = dask.persist(z, level, n_post)

    score = level.max("time", skipna=True).fillna(0).astype("float32").compute()
    if settings.threshold is not None:
        thr = float(settings.threshold)
    else:
        thr = otsu_threshold(score.values, floor=settings.min_score)
    passes = (level >= thr) & (z >= thr)
    first = passes.argmax("time").compute()
    change = (passes.any("time") & (score >= thr)).compute()
    n_obs = n_post.isel(time=first.where(change, 0)).where(change, 0).compute()
    conf = xr.apply_ufunc(confidence_from_score, score, thr, n_obs).where(change, 0).astype("float32")
    return _Channel(change, score, thr, first, conf)


def _greened(
    veg: xr.DataArray, is_ref: np.ndarray, first: np.ndarray, where: np.ndarray, max_gain: float
) -> np.ndarray:
    """The vegetation gate of the kernel for pixels ``where`` with break ``first``: True where the median NDVI
    from the break on exceeds the reference median by more than ``max_gain`` (a new field's edge adds texture
    too, and greening is not construction)."""
    v = np.asarray(veg.transpose("time", "y", "x").values, "float32")
    ref = nan_lower_quantile(v[is_ref], 0.5)  # the kernel's medians (the "lower" order statistic)
    out = np.zeros(where.shape, bool)
    for b in np.unique(first[where]):
        m = where & (first == b)
        out[m] = (nan_lower_quantile(v[int(b):, m], 0.5) - ref[m]) > max_gain
    return out
