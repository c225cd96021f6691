"""Flags against truth polygons: object matching, a precision/recall curve and truth burnt onto a grid.

Pure functions over GeoDataFrames / arrays; no file I/O.

Change components of label rasters (:func:`component_scores`)
    For pixel-labelled benchmarks (OSCD): 8-connected change components of at least 0.5 ha are the objects;
    a true one is found when ≥ 30 % of it is predicted, a predicted one is correct when ≥ 30 % of it is true
    change.

Object matching (:func:`object_metrics`)
    Flags and truth polygons are compared per site (by the ``site_id`` column when both layers have it,
    otherwise as one group), in the UTM zone of the group's centre, so IoU and areas are in metres.
    Pairs with IoU ≥ ``iou_threshold`` are matched one-to-one, greedily by decreasing IoU (ties: earlier
    flag row, then earlier truth row). Every truth polygon takes part in the matching, whatever its area.

    - ``tp``: flags matched to a truth polygon; ``fp`` = ``n_flags - tp``;
      ``object_precision = tp / n_flags``.
    - ``n_truth``: truth polygons with area ≥ ``min_truth_area_m2`` (smaller ones are not required);
      ``fn``: those not matched; ``object_recall = (n_truth - fn) / n_truth``.
    - Empty layers follow the one rule of :mod:`pipeline.evaluate.metrics` (:func:`~pipeline.evaluate.metrics.rate`):
      recall is 1.0 when ``n_truth == 0`` (nothing to find) and precision is 1.0 when ``n_flags == 0`` (no
      false alarm was raised). A flag matched to a small truth polygon counts as a true positive but not
      towards recall.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rioxarray  # noqa: F401  (registers the .rio accessor)
import shapely
import xarray as xr
from rasterio.features import rasterize

from pipeline.errors import DetectionError, InvalidAOIError
from pipeline.evaluate.metrics import rate
from pipeline.flag import grid_transform
from pipeline.grid import utm_epsg

__all__ = ["object_metrics", "match_objects", "rasterize_truth", "pr_curve", "component_scores",
           "MIN_COMPONENT_PX", "COMPONENT_COVER"]

MIN_COMPONENT_PX = 50  # 0.5 ha at 10 m: the smallest change component scored as an object (compound scale)
COMPONENT_COVER = 0.3  # share of a component's pixels that must be predicted (or true) for it to count


def _check_crs(gdf: gpd.GeoDataFrame, name: str) -> None:
    if len(gdf) and gdf.crs is None:
        raise InvalidAOIError(f"the {name} layer has no CRS; set one with gdf.set_crs(EPSG) to evaluate it")


def _valid_geoms(gdf: gpd.GeoDataFrame) -> np.ndarray:
    geoms = np.asarray(gdf.geometry.values, dtype=object)
    if geoms.size:
        geoms = np.where(shapely.is_valid(geoms), geoms, shapely.make_valid(geoms))
    return geoms


def _groups(flags: gpd.GeoDataFrame, truth: gpd.GeoDataFrame) -> list[tuple[Any, np.ndarray, np.ndarray]]:
    """(key, flag row positions, truth row positions) per site, or one group when a layer has no site_id."""
    if "site_id" in flags.columns and "site_id" in truth.columns:
        fs = flags["site_id"].astype(str).to_numpy()
        ts = truth["site_id"].astype(str).to_numpy()
        keys = sorted(set(fs) | set(ts))
        return [(k, np.flatnonzero(fs == k), np.flatnonzero(ts == k)) for k in keys]
    return [(None, np.arange(len(flags)), np.arange(len(truth)))]


def _utm_of(*frames: gpd.GeoDataFrame) -> int:
    bounds = [f.to_crs(4326).total_bounds for f in frames if len(f)]
    b = np.array(bounds)
    lon = (b[:, 0].min() + b[:, 2].max()) / 2
    lat = (b[:, 1].min() + b[:, 3].max()) / 2
    return utm_epsg(float(lon), float(lat))


def _greedy(iou: np.ndarray, threshold: float) -> list[tuple[int, int, float]]:
    """One-to-one (flag, truth, iou) matches, greedily by decreasing IoU over pairs with IoU ≥ threshold."""
    fi, ti = np.nonzero(iou >= threshold)
    order = sorted(range(fi.size), key=lambda k: (-iou[fi[k], ti[k]], fi[k], ti[k]))
    used_f: set[int] = set()
    used_t: set[int] = set()
    out = []
    for k in order:
        f, t = int(fi[k]), int(ti[k])
        if f in used_f or t in used_t:
            continue
        used_f.add(f)
        used_t.add(t)
        out.append((f, t, float(iou[f, t])))
    return out


def match_objects(
    flags: gpd.GeoDataFrame, truth: gpd.GeoDataFrame, *, iou_threshold: float = 0.3
) -> tuple[list[tuple[int, int, float]], np.ndarray]:
    """One-to-one matches between flag rows and truth rows, and truth areas in m².

    Returns ``(matches, truth_area_m2)``: ``matches`` lists ``(flag_position, truth_position, iou)`` (row
    positions, not index labels); ``truth_area_m2`` has one area per truth row, measured in its group's UTM
    zone. See the module docstring for the grouping and matching rules.
    """
    _check_crs(flags, "flags")
    _check_crs(truth, "truth")
    areas = np.zeros(len(truth), dtype=np.float64)
    matches: list[tuple[int, int, float]] = []
    for _, fpos, tpos in _groups(flags, truth):
        if tpos.size == 0:
            continue
        f_sub, t_sub = flags.iloc[fpos], truth.iloc[tpos]
        epsg = _utm_of(f_sub, t_sub)
        t_geoms = _valid_geoms(t_sub.to_crs(epsg))
        areas[tpos] = shapely.area(t_geoms)
        if fpos.size == 0:
            continue
        f_geoms = _valid_geoms(f_sub.to_crs(epsg))
        inter = shapely.area(shapely.intersection(f_geoms[:, None], t_geoms[None, :]))
        union = shapely.area(f_geoms)[:, None] + areas[tpos][None, :] - inter
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, inter / union, 0.0)
        matches.extend((int(fpos[f]), int(tpos[t]), v) for f, t, v in _greedy(iou, iou_threshold))
    return matches, areas


def object_metrics(
    flags: gpd.GeoDataFrame,
    truth: gpd.GeoDataFrame,
    *,
    iou_threshold: float = 0.3,
    min_truth_area_m2: float = 5000.0,
) -> dict[str, Any]:
    """Object-level precision and recall of ``flags`` against ``truth`` (any CRS each, with ``site_id``).

    Returns a dict with ``object_recall``, ``object_precision`` (floats 0-1), ``n_flags``, ``n_truth``
    (truth polygons ≥ ``min_truth_area_m2`` m²), ``tp``, ``fp``, ``fn`` and ``truth_found`` (ints; counting
    rules and the 1.0 conventions for empty layers are in the module docstring).
    """
    matches, areas = match_objects(flags, truth, iou_threshold=iou_threshold)
    required = areas >= min_truth_area_m2
    matched_truth = np.zeros(len(truth), dtype=bool)
    for _, t, _ in matches:
        matched_truth[t] = True
    n_flags = len(flags)
    tp = len(matches)
    n_truth = int(required.sum())
    found = int((required & matched_truth).sum())
    return {
        "object_recall": rate(found, n_truth),
        "object_precision": rate(tp, n_flags),
        "n_flags": int(n_flags),
        "n_truth": n_truth,
        "tp": int(tp),
        "fp": int(n_flags - tp),
        "fn": int(n_truth - found),
        "truth_found": found,
    }


def rasterize_truth(truth: gpd.GeoDataFrame, like: xr.DataArray) -> np.ndarray:
    """Boolean ``(y, x)`` mask of ``truth`` burnt onto the grid of ``like`` (pixel centres inside a polygon).

    ``truth`` is reprojected to ``like``'s CRS (rioxarray); only the ``y``/``x`` grid of ``like`` is used.
    """
    crs = like.rio.crs
    if crs is None:
        raise DetectionError("the grid array has no CRS; write one with da.rio.write_crs(EPSG)")
    if "y" not in like.dims or "x" not in like.dims:
        raise DetectionError(f"the grid array needs y and x dims, got {like.dims}")
    shape = (int(like.sizes["y"]), int(like.sizes["x"]))
    if len(truth) == 0:
        return np.zeros(shape, dtype=bool)
    _check_crs(truth, "truth")
    transform = grid_transform(like)
    geoms = [g for g in _valid_geoms(truth.to_crs(crs)) if g is not None and not g.is_empty]
    if not geoms:
        return np.zeros(shape, dtype=bool)
    burnt = rasterize(((g, 1) for g in geoms), out_shape=shape, transform=transform, fill=0, dtype="uint8")
    return burnt.astype(bool)


def pr_curve(
    flags: gpd.GeoDataFrame, truth: gpd.GeoDataFrame, thresholds: Sequence[float], **kw: Any
) -> list[dict[str, Any]]:
    """Object precision/recall keeping only flags with ``confidence`` ≥ each threshold.

    ``kw`` goes to :func:`object_metrics` (``iou_threshold``, ``min_truth_area_m2``). Returns one dict per
    threshold, in the given order: ``{"threshold": t, **object_metrics(...)}``.
    """
    if len(flags) and "confidence" not in flags.columns:
        raise DetectionError("flags need a 'confidence' column for a precision/recall curve")
    conf = pd.to_numeric(flags["confidence"], errors="coerce").to_numpy() if len(flags) else np.zeros(0)
    out = []
    for t in thresholds:
        kept = flags.iloc[np.flatnonzero(conf >= t)] if len(flags) else flags
        out.append({"threshold": float(t), **object_metrics(kept, truth, **kw)})
    return out


def component_scores(
    pred: np.ndarray, label: np.ndarray, valid: np.ndarray | None = None, *,
    min_px: int = MIN_COMPONENT_PX, cover: float = COMPONENT_COVER,
) -> dict[str, int]:
    """Object counts of two change masks ``(y, x)`` on one grid: 8-connected components of at least
    ``min_px`` pixels (of ``valid`` pixels, default all). ``true``/``found``: true components with ≥ ``cover``
    of their pixels predicted; ``predicted``/``correct``: predicted components with ≥ ``cover`` of their
    pixels on true change. Recall = found / true, precision = correct / predicted."""
    from scipy import ndimage

    ok = np.ones(label.shape, bool) if valid is None else valid
    eight = np.ones((3, 3), bool)

    def components(mask: np.ndarray) -> list[np.ndarray]:
        lab, n = ndimage.label(mask & ok, structure=eight)
        sizes = np.bincount(lab.ravel(), minlength=n + 1)
        return [lab == i for i in np.flatnonzero(sizes >= min_px) if i > 0]

    truth, preds = components(label), components(pred)
    return {
        "true": len(truth), "found": sum(int(pred[o].mean() >= cover) for o in truth),
        "predicted": len(preds), "correct": sum(int(label[o].mean() >= cover) for o in preds),
    }
