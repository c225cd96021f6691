"""The chain of ``compoundwatch compare``: change flags between two scenes on disk (library; no CLI here).

Two ways through it:

* :func:`compare_scenes` (the default): two scenes read with :func:`pipeline.fetch.scenes.read_scene`
  (float32 reflectance in memory), AFTER reprojected onto BEFORE's finest grid (bilinear),
  :func:`pipeline.detect.detect_pair` (the best learned chain for the bands), the detection vectorised
  on a UTM grid. When BEFORE is in a geographic CRS (e.g. EPSG:4326 tiles) the detection is reprojected
  (nearest neighbour, GDAL's suggested square pixel size) to the UTM zone of its centre first, so
  ``area_m2`` is in square metres. Memory grows with the scene (tens of bytes per pixel and band).
* :func:`compare_band_folders` (``compare --blockwise``): two folders of single-band files in one projected
  (UTM) CRS, e.g. two whole Sentinel-2 granules, screened block by block (memory flat with the area) by
  :func:`pipeline.scan.learned.scan_pair_files_unet` (the spatial model, the learned chain that runs block
  by block; the best cross-validated one that fits the bands) where one fits, else
  :func:`pipeline.scan.pair_files.scan_pair_files` (the CVA + Otsu chain). ``compare`` takes this way by
  itself for band folders larger than :data:`IN_MEMORY_MAX_PX` (:func:`too_large_for_memory`).

Scene dates come from well-known TIFF tags or a ``YYYYMMDD`` / ``YYYY-MM-DD`` in the file/folder names;
unknown dates give ``null`` ``appeared_after``/``appeared_before``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import geopandas as gpd
import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from rasterio.warp import Resampling
from rasterio.warp import transform as warp_transform

from pipeline.config import PairMethod, Settings
from pipeline.detect import detect_pair
from pipeline.detect.pair import CVA_MIN_BANDS
from pipeline.detect.unet import choose_band_set as choose_unet_band_set
from pipeline.fetch.scenes import align, band_files, pixel_size_m, scene_date
from pipeline.flag import vectorise
from pipeline.grid import utm_epsg

__all__ = [
    "COMPARE_SITE_ID", "IN_MEMORY_MAX_PX", "compare_scenes", "compare_band_folders", "pair_detection",
    "too_large_for_memory",
]

#: ``site_id`` written to (and hashed into the ids of) the flags of ``compare``.
COMPARE_SITE_ID = "compare"
#: Largest scene (pixels of the finest grid) that ``compare`` holds in memory: 25 Mpx, a 50 km square at
#: 10 m. The pixel classifier's feature stack alone takes ~0.6 kB a pixel (a full 10980 px granule passed
#: 20 GiB); larger band folders are screened block by block.
IN_MEMORY_MAX_PX = 25_000_000


def too_large_for_memory(before: str | Path, after: str | Path, max_px: int | None = None) -> int | None:
    """The larger scene's pixel count when both scenes are band folders and one exceeds ``max_px``
    (default :data:`IN_MEMORY_MAX_PX`), so ``compare`` screens them block by block; else None. Reads file
    headers only."""
    from pipeline.fetch.scenes import scene_pixels

    if not (Path(before).is_dir() and Path(after).is_dir()):
        return None
    px = max(scene_pixels(before), scene_pixels(after))
    return px if px > (IN_MEMORY_MAX_PX if max_px is None else max_px) else None


def _date(scene: xr.DataArray) -> np.datetime64:
    """The scene's acquisition date (``attrs["date"]``), NaT when unknown."""
    return np.datetime64(scene.attrs.get("date") or "NaT", "ns")


def pair_detection(pair: xr.Dataset, before: xr.DataArray, after: xr.DataArray) -> xr.Dataset:
    """A two-date detection dataset (the contract of :func:`pipeline.detect.detect_series`'s Returns) from
    :func:`pipeline.detect.detect_pair` output.

    ``time`` = [BEFORE date, AFTER date] (NaT where unknown), ``scene_id`` = the scenes' names,
    ``break_index`` = 1 and ``after_index`` = 0 where changed (-1 elsewhere), ``clear`` = ``valid`` for
    both dates, ``clear_fraction`` = ``valid`` as 0/1. On ``pair``'s grid, CRS taken from ``before``.
    """
    change = pair["change"].astype(bool)
    valid = pair["valid"].astype(bool)
    det = xr.Dataset(
        {
            "change": change,
            "score": pair["score"].astype(np.float32),
            "confidence": pair["confidence"].astype(np.float32),
            "break_index": xr.where(change, 1, -1).astype(np.int16),
            "after_index": xr.where(change, 0, -1).astype(np.int16),
            "clear_fraction": valid.astype(np.float32),
            "clear": xr.concat([valid, valid], dim="time").transpose("time", "y", "x"),
        },
        coords={
            "time": np.array([_date(before), _date(after)], dtype="datetime64[ns]"),
            "scene_id": ("time", [str(before.attrs.get("scene_id", "before")),
                                  str(after.attrs.get("scene_id", "after"))]),
        },
        attrs=dict(pair.attrs),
    )
    return det.rio.write_crs(before.rio.crs).rio.write_transform(before.rio.transform())


def _to_utm(det: xr.Dataset) -> xr.Dataset:
    """Reproject a detection dataset on a geographic grid to the UTM zone of its centre (nearest)."""
    left, bottom, right, top = det.rio.bounds()
    lon, lat = warp_transform(det.rio.crs, "EPSG:4326", [(left + right) / 2], [(bottom + top) / 2])
    dst = f"EPSG:{utm_epsg(lon[0], lat[0])}"
    nodata = {"change": 255, "clear": 255, "score": np.nan, "confidence": np.nan, "clear_fraction": np.nan,
              "break_index": -1, "after_index": -1}
    out: dict[str, xr.DataArray] = {}
    ref: xr.DataArray | None = None
    for name, nd in nodata.items():
        var = det[name]
        if var.dtype == bool:
            var = var.astype(np.uint8)
        var = var.rio.write_crs(det.rio.crs).rio.write_nodata(nd, encoded=False)
        if ref is None:
            var = var.rio.reproject(dst, resampling=Resampling.nearest)
            ref = var
        else:
            var = var.rio.reproject_match(ref, resampling=Resampling.nearest)
            var = var.assign_coords(x=ref["x"], y=ref["y"])
        out[name] = var
    fixed = {
        "change": out["change"] == 1,
        "clear": out["clear"] == 1,
        "score": out["score"].fillna(0).astype(np.float32),
        "confidence": out["confidence"].fillna(0).astype(np.float32),
        "clear_fraction": out["clear_fraction"].fillna(0).astype(np.float32),
        "break_index": out["break_index"].astype(np.int16),
        "after_index": out["after_index"].astype(np.int16),
    }
    assert ref is not None
    res = xr.Dataset(
        {k: v.drop_vars("spatial_ref", errors="ignore") for k, v in fixed.items()}, attrs=det.attrs
    )
    res = res.assign_coords(scene_id=("time", det["scene_id"].values))
    res = res.transpose("time", "y", "x")
    for v in res.data_vars.values():
        v.attrs.pop("_FillValue", None)
        v.encoding.pop("_FillValue", None)
    return res.rio.write_crs(dst).rio.write_transform(ref.rio.transform())


def compare_scenes(
    scene_b: xr.DataArray, scene_a: xr.DataArray, settings: Settings
) -> tuple[xr.Dataset, xr.DataArray, gpd.GeoDataFrame]:
    """The chain of ``compoundwatch compare`` on two scenes read with :func:`pipeline.fetch.scenes.read_scene`.

    AFTER is aligned onto BEFORE's grid, :func:`pipeline.detect.detect_pair` runs, and the detection is
    vectorised on a UTM grid (reprojected first when BEFORE is geographic). Returns ``(pair, aligned,
    flags)``: the :func:`~pipeline.detect.detect_pair` dataset on BEFORE's grid, AFTER on that grid, and the
    flags in their UTM CRS, ranked by confidence (``site_id`` :data:`COMPARE_SITE_ID`).
    """
    aligned = align(scene_a, scene_b)
    pair = detect_pair(scene_b, aligned, settings.detect, pixel_m=pixel_size_m(scene_b))
    det = pair_detection(pair, scene_b, aligned)
    if det.rio.crs.is_geographic:
        det = _to_utm(det)
    flags = vectorise(det, site_id=COMPARE_SITE_ID, settings=settings)
    return pair, aligned, flags


def compare_band_folders(
    before: str | Path, after: str | Path, settings: Settings, bands: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> gpd.GeoDataFrame:
    """``compoundwatch compare --blockwise``: two folders of single-band files screened block by block.

    Each folder holds ``*_Bxx.tif|jp2`` files (L2A digital numbers, 0 = no data, divided by 10000 as read:
    ``BOA_ADD_OFFSET`` is not applied, so both dates should share a processing baseline) in one projected
    (UTM) CRS, B02, B03 and B04 at least; ``bands`` picks a subset. The chain: the best cross-validated
    spatial model whose bands both folders cover (:func:`pipeline.scan.learned.scan_pair_files_unet`; the pixel
    classifier needs the whole scene in memory, so it never runs here), else, or with
    ``detect.pair_method: cva``, the CVA chain (:func:`pipeline.scan.pair_files.scan_pair_files`, which
    needs B08 too, with its default :class:`~pipeline.scan.pair_files.BlockPlan`).
    Returns the ranked flags in EPSG:4326 (``site_id`` :data:`COMPARE_SITE_ID`).
    """
    from pipeline.scan.learned import scan_pair_files_unet
    from pipeline.scan.pair_files import scan_pair_files

    files_b = band_files(before, bands, required=CVA_MIN_BANDS)
    files_a = band_files(after, bands, required=CVA_MIN_BANDS)
    dates = tuple(scene_date(p) or "NaT" for p in (before, after))
    ids = (Path(before).name, Path(after).name)
    common = [b for b in files_b if b in files_a]
    band_set = None if settings.detect.pair_method is PairMethod.CVA else choose_unet_band_set(common)
    if band_set is not None:
        return scan_pair_files_unet(files_b, files_a, settings, band_set, dates=(dates[0], dates[1]),
                                    scene_ids=ids, site_id=COMPARE_SITE_ID, progress=progress)
    return scan_pair_files(files_b, files_a, settings, dates=(dates[0], dates[1]), scene_ids=ids,
                           site_id=COMPARE_SITE_ID, progress=progress)
