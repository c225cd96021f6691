"""A tiny, fully known run for the publishing tests: one 64 × 64 px site with three planted compounds.

Flags come from the real flagger (:func:`pipeline.flag.vectorise`) on a hand-made DETECTION dataset
(:func:`pipeline.testing.make_detection`); the tiles cube is made to match it (bright "roof" reflectance
inside each block from its start date on, textured soil elsewhere, the same clear mask), so chips show the
change. Everything lives in ``tmp_path``; no network, no shared data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import xarray as xr
from pyproj import Transformer
from shapely.geometry import box

from pipeline.config import Settings
from pipeline.flag import vectorise
from pipeline.io import write_cube
from pipeline.sites import Site
from pipeline.testing import DEFAULT_ORIGIN, Block, make_detection

SITE_ID = "test-site"
EPSG = 32645
SHAPE = (64, 64)
#: rows, cols, start date index, score, confidence: areas 144, 196 and 160 px of 100 m².
BLOCKS = (
    Block((8, 20), (8, 20), 4, 14.0, 0.9),
    Block((34, 48), (30, 44), 7, 11.0, 0.7),
    Block((40, 56), (4, 14), 2, 8.0, 0.5),
)
BLOCK_AREAS_M2 = {0: 14400.0, 1: 19600.0, 2: 16000.0}
SOIL = {"B02": 0.09, "B03": 0.12, "B04": 0.16, "B08": 0.22}
ROOF = {"B02": 0.42, "B03": 0.44, "B04": 0.46, "B08": 0.48}


@dataclass(frozen=True)
class TinyRun:
    flags: gpd.GeoDataFrame  # EPSG:32645, ranked, FLAG_COLUMNS
    detection: xr.Dataset
    cube: xr.Dataset
    tiles: dict[str, Path]
    site: Site
    settings: Settings


def site_polygon_wgs84() -> object:
    """The grid's footprint in EPSG:4326."""
    x0, y1 = DEFAULT_ORIGIN
    x1, y0 = x0 + SHAPE[1] * 10.0, y1 - SHAPE[0] * 10.0
    tr = Transformer.from_crs(EPSG, 4326, always_xy=True)
    lon0, lat0 = tr.transform(x0, y0)
    lon1, lat1 = tr.transform(x1, y1)
    return box(lon0, lat0, lon1, lat1)


def make_cube(det: xr.Dataset, seed: int = 0) -> xr.Dataset:
    """Tiles cube (reflectance float32 (time, band, y, x), clear (time, y, x)) matching ``det``."""
    rng = np.random.default_rng(seed)
    nt, (h, w) = det.sizes["time"], SHAPE
    rows, cols = np.mgrid[0:h, 0:w]
    tex = 1 + 0.08 * np.sin(cols / 3.0) * np.cos(rows / 5.0)
    bands = list(SOIL)
    refl = np.empty((nt, len(bands), h, w), np.float32)
    for t in range(nt):
        for k, b in enumerate(bands):
            img = SOIL[b] * tex
            for blk in BLOCKS:
                if t >= blk.start:
                    img[blk.rows[0] : blk.rows[1], blk.cols[0] : blk.cols[1]] = ROOF[b]
            refl[t, k] = img + rng.normal(0, 0.003, (h, w))
    cube = xr.Dataset(
        {
            "reflectance": (("time", "band", "y", "x"), refl),
            "clear": (("time", "y", "x"), np.asarray(det["clear"].values, bool)),
        },
        coords={"time": det["time"].values, "band": bands, "y": det["y"].values, "x": det["x"].values},
    )
    return cube.rio.write_crs(EPSG).rio.write_transform(det.rio.transform())


def tiny_run(tmp_path: Path, *, site_name: str = "Tiny test site", write_tiles: bool = True) -> TinyRun:
    """Flags, tiles cube (written to ``tmp_path/tiles``), site and settings of the tiny run."""
    settings = Settings(sites=(SITE_ID,))
    det = make_detection(SHAPE, EPSG, BLOCKS, site_id=SITE_ID)
    flags = vectorise(det, site_id=SITE_ID, settings=settings)
    cube = make_cube(det)
    tiles: dict[str, Path] = {}
    if write_tiles:
        tiles[SITE_ID] = write_cube(cube, tmp_path / "tiles" / f"{SITE_ID}.zarr", tile_size=64)
    site = Site(SITE_ID, site_name, site_polygon_wgs84(), control=False, scenario="arid")
    return TinyRun(flags, det, cube, tiles, site, settings)


def dates_of(run: TinyRun) -> list[str]:
    return list(pd.DatetimeIndex(run.detection["time"].values).strftime("%Y-%m-%d"))
