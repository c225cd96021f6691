"""Sentinel-2 scenes from a local folder of GeoTIFF/COG files or band folders (no network).

Each match of ``settings.pattern`` (globs relative to ``settings.path``) is one scene, read with
:func:`pipeline.fetch.scenes.read_scene`: a multiband file with bands named by their descriptions (or by
``band_order`` when it has none), or a folder of ``*_Bxx.tif`` files. Scenes are reprojected onto the
request's UTM grid (bilinear; the scene's own CRS may be anything, e.g. EPSG:4326) and written back as L2A
digital numbers ``round(reflectance × 10000 × dn_scale)``. ``read_scene`` already removed any
``BOA_ADD_OFFSET`` found in the file tags, so ``boa_add_offset`` is 0 for every date.

Dates come from the scene (tags such as ``ACQUISITION_DATE``, any case, or ``YYYYMMDD``/``YYYY-MM-DD`` in
the file/folder names). Bands a scene lacks are 0 (no data) on that date. The ``scl`` layer comes from a
``*_SCL.tif`` file in a band folder or an ``SCL`` band description; without one it is SCL-like:
0 where no requested band has data, 7 (unclassified, treated as clear) elsewhere. Scenes that do not cover
the grid, or whose SCL has no clear pixel there, are skipped (``ds.attrs["skipped"]``). Two scenes of one
date are merged (the later match fills the first one's gaps).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import xarray as xr
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import Resampling, reproject

from pipeline.config import LocalSettings
from pipeline.errors import BandError, InputFileError
from pipeline.fetch import FetchRequest
from pipeline.fetch._cube import DEFAULT_INVALID_SCL, L1C_SCL_CODES, build_cube, empty_note, has_clear
from pipeline.fetch.scenes import RASTER_SUFFIXES, read_scene

__all__ = ["LocalFetcher", "scene_paths"]

LOGGER = logging.getLogger(__name__)
_ISO_RE = re.compile(r"(?<!\d)((?:19|20)\d{2})[-_]?(0[1-9]|1[0-2])[-_]?(0[1-9]|[12]\d|3[01])(?!\d)")


def scene_paths(settings: LocalSettings) -> list[Path]:
    """The scene files/folders matched by ``settings.pattern`` under ``settings.path`` (sorted, unique)."""
    root = Path(settings.path)
    if not root.is_dir():
        raise InputFileError(f"local.path {root} is not a folder; point it at the folder holding the scenes")
    found: set[Path] = set()
    for pat in settings.pattern:
        for p in root.glob(pat):
            if p.is_dir() or p.suffix.lower() in RASTER_SUFFIXES:
                found.add(p)
    if not found:
        raise InputFileError(
            f"no scenes match {list(settings.pattern)} under {root}; expected GeoTIFFs or band folders"
        )
    return sorted(found)


def _date_of(path: Path, reported: str) -> dt.date | None:
    if reported:
        return dt.date.fromisoformat(reported)
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    for f in files[:1]:
        if f.is_file() and f.suffix.lower() in RASTER_SUFFIXES:
            with rasterio.open(f) as src:
                tags = {k.lower(): v for k, v in src.tags().items()}
            for key in ("acquisition_date", "sensing_time", "datatake_sensing_start", "date_acquired", "date"):
                m = _ISO_RE.search(tags.get(key, ""))
                if m:
                    return dt.date(*map(int, m.groups()))
    for name in (path.name, path.parent.name):
        m = _ISO_RE.search(name)
        if m:
            try:
                return dt.date(*map(int, m.groups()))
            except ValueError:
                continue
    return None


def _scl_source(path: Path) -> tuple[Path, int] | None:
    if path.is_dir():
        for f in sorted(path.iterdir()):
            if f.suffix.lower() in RASTER_SUFFIXES and re.search(r"(?:^|[_\-.])scl$", f.stem, re.IGNORECASE):
                return f, 1
        return None
    with rasterio.open(path) as src:
        for i, d in enumerate(src.descriptions, start=1):
            if d and d.strip().upper() == "SCL":
                return path, i
    return None


class LocalFetcher:
    """Scene cubes from local files (implements :class:`~pipeline.fetch.Fetcher`); see the module docstring."""

    def __init__(self, settings: LocalSettings, *, invalid_scl: Sequence[int] = DEFAULT_INVALID_SCL) -> None:
        self.settings = settings
        self.invalid_scl = tuple(invalid_scl)

    def __repr__(self) -> str:
        return f"LocalFetcher(path={str(self.settings.path)!r}, pattern={list(self.settings.pattern)!r})"

    def _read(self, path: Path) -> xr.DataArray:
        try:
            return read_scene(path, None, required=())
        except BandError:
            if path.is_dir() or not self.settings.band_order:
                raise
        try:
            return read_scene(path, list(self.settings.band_order), required=())
        except BandError as err:
            raise BandError(f"{err} (local.band_order is {list(self.settings.band_order or ())})") from err

    def _to_grid(
        self, data: np.ndarray, src_crs: CRS, src_transform: Affine, request: FetchRequest, nearest: bool
    ) -> np.ndarray:
        out = np.full(request.grid.shape, np.nan, np.float32)
        reproject(
            data.astype(np.float32),
            out,
            src_transform=src_transform,
            src_crs=src_crs,
            src_nodata=np.nan,
            dst_transform=request.grid.affine,
            dst_crs=CRS.from_epsg(request.grid.epsg),
            dst_nodata=np.nan,
            resampling=Resampling.nearest if nearest else Resampling.bilinear,
        )
        return out

    def fetch(self, request: FetchRequest) -> xr.Dataset:
        """Read, reproject and stack the scenes within ``[start, end]`` (see the module docstring)."""
        h, w = request.grid.shape
        per_date: dict[dt.date, dict[str, Any]] = {}
        skipped: list[str] = []
        for path in scene_paths(self.settings):
            scene = self._read(path)
            day = _date_of(path, scene.attrs.get("date", ""))
            if day is None:
                raise InputFileError(
                    f"{path}: no acquisition date in its tags or name; put YYYYMMDD or YYYY-MM-DD in the name"
                )
            if not (request.start <= day <= request.end):
                continue
            crs, transform = scene.rio.crs, scene.rio.transform()
            dn = np.zeros((len(request.bands), h, w), np.uint16)
            for i, band in enumerate(request.bands):
                if band not in scene.band.values:
                    continue
                refl = self._to_grid(scene.sel(band=band).values, crs, transform, request, nearest=False)
                vals = np.round(refl * 10000.0 * self.settings.dn_scale)
                dn[i] = np.where(np.isfinite(vals), np.clip(vals, 1, 65535), 0).astype(np.uint16)
            scl_src = _scl_source(path)
            has_data = (dn > 0).any(axis=0)
            if scl_src is not None:
                with rasterio.open(scl_src[0]) as src:
                    raw = src.read(scl_src[1]).astype(np.float32)
                    raw[raw == 0] = np.nan
                    scl_f = self._to_grid(raw, src.crs, src.transform, request, nearest=True)
                scl = np.where(np.isfinite(scl_f), scl_f, 0).astype(np.uint8)
            else:
                scl = np.where(has_data, L1C_SCL_CODES["clear"], L1C_SCL_CODES["nodata"]).astype(np.uint8)
            sid = str(scene.attrs.get("scene_id", path.name))
            if not has_data.any():
                skipped.append(empty_note(day, sid, "scene does not cover the AOI"))
                continue
            if not has_clear(scl, self.invalid_scl):
                skipped.append(empty_note(day, sid))
                continue
            if day in per_date:  # merge: fill the gaps of the first scene of this date
                prev = per_date[day]
                gap = prev["dn"] == 0
                prev["dn"] = np.where(gap, dn, prev["dn"])
                prev["scl"] = np.where(prev["scl"] == 0, scl, prev["scl"])
                prev["id"] = f"{prev['id']}+{sid}"
            else:
                per_date[day] = {"dn": dn, "scl": scl, "id": sid}
        dates = sorted(per_date)
        cube_dn = np.stack([per_date[d]["dn"] for d in dates]).astype(np.uint16) if dates else None
        scl_all = np.stack([per_date[d]["scl"] for d in dates]).astype(np.uint8) if dates else None
        attrs = {"source": "local", "local_path": str(self.settings.path), "dn_scale": self.settings.dn_scale}
        return build_cube(
            request, dates, cube_dn, scl_all, [0] * len(dates), [str(per_date[d]["id"]) for d in dates], attrs, skipped
        )
