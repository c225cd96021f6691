"""Turn a DETECTION dataset into ranked flag polygons (one per change blob) with their evidence.

Pure: takes the detection dataset (possibly dask-backed), returns a GeoDataFrame; never opens files.

How blobs are formed, in pixel space on the detection's UTM grid:

1. **Closing.** The ``change`` mask is closed (dilation then erosion) with a 3×3 square, which is
   *extensive* (it only adds pixels). This bridges gaps of up to **2 px** between changed pixels, so a
   compound split by a 1-px line of missed pixels (a wall, a noisy column) becomes one blob; blobs 3 px or
   more apart stay separate. Rectangles and L-shapes are unchanged by the closing. With
   ``settings.flag.join_gap_m`` the square grows to ``2r + 1`` pixels, ``r = floor(join_gap_m / (2 × pixel
   size))`` (at least 1), bridging gaps of up to ``join_gap_m``: the separate roof blocks of one compound,
   seen at 10 m with courtyards and streets between them, become one flag.
2. **Holes.** Background regions fully enclosed by change (4-connected background) and smaller than
   ``settings.flag.min_area_m2`` are filled; larger holes (a courtyard bigger than the minimum flag) stay
   as polygon interiors.
3. **Blobs.** 8-connected components of the result. Blobs with fewer than ``min_area_m2`` square metres
   (pixel count × pixel area) are dropped.
4. **Polygons.** Each blob is traced along pixel edges (:func:`pipeline.flag._blobs.trace`, compiled; the same
   polygons as ``rasterio.features.shapes`` with 4-connectivity, so the area of the polygon is exactly its
   pixel count × pixel area) and, if ``settings.flag.simplify_m > 0``,
   simplified with that tolerance in metres (topology preserving). Blobs whose pixels touch only at a
   corner become valid MultiPolygons.

Per-blob statistics use the *changed* pixels inside the blob (the closing/hole-filled pixels carry no
detector evidence): ``confidence`` = mean confidence (or, with ``settings.flag.support_area_m2``, that mean
raised with the changed area, :func:`flag_confidence`), ``score`` = mean score (robust z units),
``appeared_before`` = date of the most common ``break_index``, ``appeared_after`` = date of the most
common ``after_index`` among the pixels with that modal break (so ``appeared_after < appeared_before``;
ties go to the earlier date). Footprint statistics use the whole blob: ``cloud_fraction`` =
1 - mean ``clear_fraction``; a scene counts as clear for the blob when ≥ 50 % of its pixels are clear there.
``confidence``, ``score`` and ``cloud_fraction`` are rounded to 6 decimals and ``area_m2`` to 0.01 m², so
float32 noise does not reach the published layer.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rioxarray  # noqa: F401  (registers the .rio accessor)
import shapely
import xarray as xr
from affine import Affine
from scipy import ndimage

import pipeline
from pipeline.config import Settings, params_hash
from pipeline.errors import DetectionError, InvalidAOIError
from pipeline.flag._blobs import label_blobs, trace

__all__ = [
    "FLAG_COLUMNS",
    "MAX_SCENES",
    "CLEAR_SCENE_FRACTION",
    "vectorise",
    "FlagLayers",
    "flag_rows",
    "flags_frame",
    "empty_flags",
    "flag_id",
    "grid_transform",
    "close_gaps",
    "join_radius",
    "flag_confidence",
    "to_wgs84",
]

#: Columns of a flag layer, in order (``geometry`` last).
FLAG_COLUMNS: tuple[str, ...] = (
    "flag_id",
    "site_id",
    "area_m2",
    "appeared_after",
    "appeared_before",
    "confidence",
    "score",
    "method",
    "pre_scenes",
    "post_scenes",
    "cloud_fraction",
    "params_hash",
    "pipeline_version",
    "geometry",
)
_FLOAT_COLUMNS = ("area_m2", "confidence", "score", "cloud_fraction")
#: Most scene ids listed in ``pre_scenes`` / ``post_scenes``.
MAX_SCENES = 5
#: A scene is clear for a blob when at least this fraction of the blob's pixels are clear in it.
CLEAR_SCENE_FRACTION = 0.5

_REQUIRED_2D = ("change", "score", "confidence", "break_index", "after_index", "clear_fraction")
_CROSS = ndimage.generate_binary_structure(2, 1)


def flag_id(
    site_id: str, centroid_x: float, centroid_y: float, appeared_before: str | None, occurrence: int = 1
) -> str:
    """Stable flag id: ``"cw-"`` + 12 hex digits of ``sha1("{site_id}|{x}|{y}|{appeared_before}")``.

    ``x``/``y`` are the UTM centroid (metres) rounded half-up to the nearest 10 m, written as integers, so
    re-running the pipeline (or nudging a polygon by a few metres) keeps the id. ``appeared_before`` is the
    ISO date (empty when unknown). Only when two blobs of one site share all of these (an island inside
    another blob's courtyard) does the later one in raster order get ``occurrence`` 2, 3 … appended
    to the key as ``"|2"``.
    """
    rx = int(math.floor(centroid_x / 10.0 + 0.5) * 10)
    ry = int(math.floor(centroid_y / 10.0 + 0.5) * 10)
    key = f"{site_id}|{rx}|{ry}|{appeared_before or ''}"
    if occurrence > 1:
        key += f"|{occurrence}"
    return "cw-" + hashlib.sha1(key.encode("utf-8")).hexdigest()[:12]


def empty_flags(crs: Any) -> gpd.GeoDataFrame:
    """A flag layer with no rows but every column of :data:`FLAG_COLUMNS` (floats typed float64)."""
    data = {
        c: pd.Series([], dtype="float64" if c in _FLOAT_COLUMNS else "object")
        for c in FLAG_COLUMNS
        if c != "geometry"
    }
    return gpd.GeoDataFrame(data, geometry=gpd.GeoSeries([], crs=crs), crs=crs)[list(FLAG_COLUMNS)]


def to_wgs84(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """The same layer in EPSG:4326 (x = longitude, y = latitude, degrees); ``area_m2`` is kept as computed."""
    if gdf.crs is None:
        raise InvalidAOIError(
            "the layer has no CRS, so it cannot be reprojected; set one with gdf.set_crs(EPSG)"
        )
    return gdf.to_crs(4326)


def grid_transform(obj: xr.Dataset | xr.DataArray) -> Affine:
    """Affine transform of an object's ``y``/``x`` grid (pixel-centre coords → pixel edges).

    Computed from the coordinates when both axes have at least two pixels (so slices of a larger grid are
    right), else taken from rioxarray's stored transform.
    """
    nx, ny = obj.sizes.get("x", 0), obj.sizes.get("y", 0)
    if nx >= 2 and ny >= 2:
        x = np.asarray(obj["x"].values, dtype=np.float64)
        y = np.asarray(obj["y"].values, dtype=np.float64)
        dx = (x[-1] - x[0]) / (nx - 1)
        dy = (y[-1] - y[0]) / (ny - 1)
        return Affine(dx, 0.0, x[0] - dx / 2, 0.0, dy, y[0] - dy / 2)
    return obj.rio.transform()


def _square3(mask: np.ndarray, dilate: bool) -> np.ndarray:
    """3×3 square dilation (``dilate``) or erosion of a 2-D bool array, outside the array = False.

    Separable: a 1×3 then a 3×1 max (min) of shifted slices; the same result as ``ndimage.binary_dilation``
    / ``binary_erosion`` with a 3×3 square and ``border_value=0``, several times faster.
    """
    op = np.logical_or if dilate else np.logical_and
    out = mask
    for axis in (0, 1):
        src, out = out, out.copy()
        lo = [slice(None)] * 2
        hi = [slice(None)] * 2
        lo[axis], hi[axis] = slice(1, None), slice(None, -1)
        op(out[tuple(lo)], src[tuple(hi)], out=out[tuple(lo)])
        op(out[tuple(hi)], src[tuple(lo)], out=out[tuple(hi)])
        if not dilate:  # the outside (False) erodes the first and last row / column
            edge: list[slice | int] = [slice(None), slice(None)]
            for i in (0, -1):
                edge[axis] = i
                out[tuple(edge)] = False
    return out


def close_gaps(mask: np.ndarray, radius: int = 1) -> np.ndarray:
    """Binary closing with a ``(2 radius + 1)``-pixel square (default 3×3), bridging gaps of up to
    ``2 radius`` pixels; padded so the image edge does not erode blobs.

    A ``(2r + 1)`` square dilation (erosion) is ``r`` successive 3×3 ones.
    """
    r = max(1, int(radius))
    closed = np.pad(np.asarray(mask, dtype=bool), r, constant_values=False)
    for dilate in (True, False):
        for _ in range(r):
            closed = _square3(closed, dilate=dilate)
    return closed[r:-r, r:-r] | mask


def join_radius(join_gap_m: float | None, pixel_size_m: float) -> int:
    """Closing radius (pixels) that bridges gaps of up to ``join_gap_m`` metres; 1 (2-px gaps) for ``None``.

    >>> join_radius(None, 10.0), join_radius(40.0, 10.0), join_radius(30.0, 10.0), join_radius(40.0, 5.0)
    (1, 2, 1, 4)
    """
    if join_gap_m is None or pixel_size_m <= 0:
        return 1
    return max(1, int(join_gap_m / (2.0 * pixel_size_m) + 1e-9))


def flag_confidence(mean_confidence: float, changed_area_m2: float, support_area_m2: float | None) -> float:
    """A flag's confidence from its changed pixels' mean confidence and their area (m²).

    ``support_area_m2`` ``None``: the mean itself. Otherwise the doubt ``1 - mean`` shrinks with the square
    root of the changed area beyond ``support_area_m2`` (never grows below it), as the uncertainty of a mean
    falls with the square root of the number of pixels averaged: a large, coherent change is surer than a
    small blob of the same per-pixel strength. Stays in 0-1 and equals the mean at or below the support area.

    >>> flag_confidence(0.6, 40000.0, None), round(flag_confidence(0.6, 40000.0, 10000.0), 6)
    (0.6, 0.8)
    """
    if support_area_m2 is None or changed_area_m2 <= 0 or not math.isfinite(mean_confidence):
        return mean_confidence
    shrink = math.sqrt(min(1.0, support_area_m2 / changed_area_m2))
    return 1.0 - (1.0 - mean_confidence) * shrink


def _fill_small_holes(mask: np.ndarray, max_hole_px: float) -> np.ndarray:
    """Fill enclosed background regions (4-connected, off the image edge) of fewer than ``max_hole_px`` px."""
    if max_hole_px <= 0 or mask.all() or not mask.any():
        return mask
    bg, n = ndimage.label(~mask, structure=_CROSS)
    if n == 0:
        return mask
    sizes = np.bincount(bg.ravel(), minlength=n + 1)
    fill = sizes < max_hole_px
    fill[0] = False
    edge = np.unique(np.concatenate([bg[0], bg[-1], bg[:, 0], bg[:, -1]]))
    fill[edge] = False
    return mask | fill[bg]


def _mode(values: np.ndarray) -> int | None:
    """Most common non-negative value (smallest on ties), or None when there is none."""
    v = values[values >= 0].astype(np.int64)
    if v.size == 0:
        return None
    return int(np.argmax(np.bincount(v)))


def _nanmean(values: np.ndarray) -> float:
    v = values[np.isfinite(values)].astype(np.float64)
    return float(v.mean()) if v.size else float("nan")


def _scene_lists(
    clear_frac_t: np.ndarray, scene_ids: Sequence[str], before_last: int, after_first: int | None
) -> tuple[str, str]:
    """Up to MAX_SCENES clear scenes with index <= ``before_last`` (latest ones) and >= ``after_first``
    (earliest ones), each listed in chronological order."""
    ok = clear_frac_t >= CLEAR_SCENE_FRACTION
    idx = np.flatnonzero(ok)
    pre = idx[idx <= before_last][-MAX_SCENES:] if before_last >= 0 else idx[:0]
    post = idx[idx >= after_first][:MAX_SCENES] if after_first is not None else idx[:0]
    return ",".join(scene_ids[i] for i in pre), ",".join(scene_ids[i] for i in post)


@dataclass(frozen=True)
class FlagLayers:
    """The per-pixel layers the flagger reads, all on one ``(y, x)`` grid (what :func:`flag_rows` needs).

    ``change`` bool; ``score`` (robust z) and ``confidence`` (0-1) float; ``break_index`` / ``after_index``
    int (index into ``dates``, -1 = none; read only where ``change``); ``clear_fraction`` float 0-1;
    ``clear`` ``(time, y, x)`` bool, numpy or dask (sliced per blob). Read-only broadcast views are fine
    for layers that are constant (a two-date pair). ``dates`` ISO dates and ``scene_ids`` one per time
    step; ``method`` the detector's name.
    """

    change: np.ndarray
    score: np.ndarray
    confidence: np.ndarray
    break_index: np.ndarray
    after_index: np.ndarray
    clear_fraction: np.ndarray
    clear: Any
    dates: Sequence[str]
    scene_ids: Sequence[str]
    method: str


def flag_rows(
    layers: FlagLayers, transform: Affine, *, site_id: str, settings: Settings, tile: bool = False
) -> list[dict[str, Any]]:
    """The flags of one grid as plain rows (keys :data:`FLAG_COLUMNS`, geometry in the grid's CRS), unsorted.

    The numpy core of :func:`vectorise` (see there for ``tile`` and the module docstring for the rules):
    no xarray or GeoDataFrame per call, so a scan flagging thousands of blocks builds one frame at the end.
    ``transform`` maps pixels to projected metres (UTM).
    """
    pixel_area = abs(transform.a * transform.e - transform.b * transform.d)
    fs = settings.flag
    change = np.asarray(layers.change, dtype=bool)
    if not change.any():
        return []

    # blobs: close 1-2 px gaps, fill small holes, 8-connected components, drop small ones
    radius = join_radius(fs.join_gap_m, math.sqrt(pixel_area))
    mask = close_gaps(change, radius)
    if not tile:
        mask = _fill_small_holes(mask, fs.min_area_m2 / pixel_area)
    blobs = label_blobs(mask)  # labels, sizes, boxes, border contact in one compiled pass
    keep = blobs.sizes * pixel_area >= fs.min_area_m2
    if tile:
        keep |= blobs.edge
    keep[0] = False
    if not keep.any():
        return []
    labels = blobs.labels

    # native dtypes: only each blob's pixels are converted (float64 means, int64 modes)
    score, conf = np.asarray(layers.score), np.asarray(layers.confidence)
    brk, aft = np.asarray(layers.break_index), np.asarray(layers.after_index)
    clear_fraction = np.asarray(layers.clear_fraction)
    dates, scene_ids = list(layers.dates), list(layers.scene_ids)
    phash = params_hash(settings)
    rows = []
    seen_ids: set[str] = set()
    for k in np.flatnonzero(keep):
        sl = blobs.slices(int(k))
        blob = labels[sl] == k  # each blob is traced and summarised inside its own bounding box only
        geom = trace(blob, transform @ Affine.translation(sl[1].start, sl[0].start))
        core = blob & change[sl]
        b_mode = _mode(brk[sl][core])
        if b_mode is None:
            a_mode = _mode(aft[sl][core])
        else:
            a_mode = _mode(aft[sl][core & (brk[sl] == b_mode)])
        appeared_before = dates[b_mode] if b_mode is not None else None
        appeared_after = dates[a_mode] if a_mode is not None else None

        clear_box = np.asarray(layers.clear[:, sl[0], sl[1]], dtype=bool)  # (time, h, w), bbox only
        clear_frac_t = clear_box[:, blob].mean(axis=1)
        before_last = a_mode if a_mode is not None else (b_mode - 1 if b_mode is not None else -1)
        pre, post = _scene_lists(clear_frac_t, scene_ids, before_last, b_mode)

        c = geom.centroid
        fid = flag_id(site_id, c.x, c.y, appeared_before)
        occurrence = 1
        while fid in seen_ids:
            occurrence += 1
            fid = flag_id(site_id, c.x, c.y, appeared_before, occurrence)
        seen_ids.add(fid)
        if fs.simplify_m > 0:
            simple = geom.simplify(fs.simplify_m, preserve_topology=True)
            if not simple.is_valid:
                simple = shapely.make_valid(simple)
            if not simple.is_empty:
                geom = simple
        c_mean = flag_confidence(_nanmean(conf[sl][core]), float(core.sum()) * pixel_area, fs.support_area_m2)
        rows.append(
            {
                "flag_id": fid,
                "site_id": site_id,
                "area_m2": round(float(geom.area), 2),
                "appeared_after": appeared_after,
                "appeared_before": appeared_before,
                "confidence": round(float(np.clip(c_mean, 0.0, 1.0)), 6) if math.isfinite(c_mean) else 0.0,
                "score": round(_nanmean(score[sl][core]), 6),
                "method": layers.method,
                "pre_scenes": pre,
                "post_scenes": post,
                "cloud_fraction": round(float(np.clip(1.0 - _nanmean(clear_fraction[sl][blob]), 0, 1)), 6),
                "params_hash": phash,
                "pipeline_version": pipeline.__version__,
                "geometry": geom,
            }
        )
    return rows


def flags_frame(
    rows: Sequence[dict[str, Any]], crs: Any, columns: Sequence[str] = FLAG_COLUMNS
) -> gpd.GeoDataFrame:
    """Rows of :func:`flag_rows` as a flag layer in ``crs``: ``columns``, sorted by confidence (descending)
    then ``flag_id``, index 0..n-1; no rows give :func:`empty_flags`."""
    if not rows:
        return empty_flags(crs)
    gdf = gpd.GeoDataFrame(list(rows), columns=list(columns), geometry="geometry", crs=crs)
    gdf = gdf.sort_values(["confidence", "flag_id"], ascending=[False, True], kind="mergesort")
    return gdf.reset_index(drop=True)


def vectorise(detection: xr.Dataset, *, site_id: str, settings: Settings, tile: bool = False) -> gpd.GeoDataFrame:
    """Flag polygons of one site from its DETECTION dataset, ranked.

    Parameters
    ----------
    detection
        The DETECTION dataset (``change``, ``score``, ``confidence``, ``break_index``, ``after_index``,
        ``clear_fraction`` on ``(y, x)``; ``clear`` on ``(time, y, x)``; coords ``time`` and ideally
        ``scene_id``; attrs ``method``) on a projected (UTM, metres) grid with a rioxarray CRS.
        Dask-backed inputs are fine: the 2-D layers are loaded, ``clear`` only blob by blob (bounding box).
    site_id
        Written to every flag and part of the flag id.
    settings
        Run settings; uses ``settings.flag.min_area_m2`` (m²) and ``settings.flag.simplify_m`` (m), and
        :func:`pipeline.config.params_hash` of it.
    tile
        The grid is one tile of a larger scan (:mod:`pipeline.scan.seams`): blobs touching the grid edge are kept
        whatever their area (they may continue in the next tile; the seam merge applies the minimum area
        and fills small holes), holes are not filled here; blobs wholly inside are complete and filtered
        by ``min_area_m2`` as usual.

    Returns
    -------
    geopandas.GeoDataFrame
        Columns :data:`FLAG_COLUMNS`, CRS = the detection's EPSG, one row per blob, sorted by confidence
        (descending) then ``flag_id``, index 0..n-1. Zero flags give an empty frame with the same columns.
        Without a ``scene_id`` coord the ISO dates stand in for scene ids.

    Raises
    ------
    DetectionError
        When variables are missing, the grid is not 2-D ``(y, x)`` or there is no CRS.
    """
    missing = [v for v in (*_REQUIRED_2D, "clear") if v not in detection.data_vars]
    if missing or "time" not in detection.coords:
        what = missing + ([] if "time" in detection.coords else ["time coord"])
        raise DetectionError(
            f"detection dataset lacks {', '.join(what)}; pass the output of pipeline.detect.detect_series"
        )
    crs = detection.rio.crs
    epsg = crs.to_epsg() if crs is not None else None
    if epsg is None:
        raise DetectionError("detection dataset has no EPSG CRS; write one with ds.rio.write_crs(EPSG)")
    if crs.is_geographic:
        raise DetectionError(f"detection grid EPSG:{epsg} is geographic; flags need a projected UTM grid")
    if detection["change"].dims != ("y", "x"):
        raise DetectionError(f"detection 'change' must have dims ('y', 'x'), got {detection['change'].dims}")
    change = np.asarray(detection["change"].values, dtype=bool)
    if not change.any():  # nothing else is loaded (the layers may be dask-backed)
        return empty_flags(epsg)
    dates = list(pd.DatetimeIndex(detection["time"].values).strftime("%Y-%m-%d"))
    score, confidence, break_index, after_index, clear_fraction = (
        np.asarray(detection[v].values) for v in _REQUIRED_2D[1:]
    )
    layers = FlagLayers(
        change, score, confidence, break_index, after_index, clear_fraction,
        clear=detection["clear"].transpose("time", "y", "x").data,  # numpy or dask: sliced per blob
        dates=dates,
        scene_ids=[str(s) for s in detection["scene_id"].values] if "scene_id" in detection.coords else dates,
        method=str(detection.attrs.get("method", settings.detect.method)),
    )
    rows = flag_rows(layers, grid_transform(detection), site_id=site_id, settings=settings, tile=tile)
    return flags_frame(rows, epsg)
