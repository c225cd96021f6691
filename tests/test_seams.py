"""Seam merging (pipeline.scan.seams): a compound split across tiles and across a UTM zone boundary is one flag."""

from __future__ import annotations

import numpy as np
import pytest
import rioxarray  # noqa: F401
import xarray as xr
from pyproj import Geod
from rasterio.features import rasterize
from shapely.geometry import box

from pipeline.config import Settings
from pipeline.flag import vectorise
from pipeline.grid import GridSpec, to_crs
from pipeline.scan.seams import EQUAL_AREA_EPSG, SCAN_COLUMNS, clip_to_core, merge_flags
from pipeline.scan.tiling import TileSpec, tiles_for_aoi, tiles_for_grid

SETTINGS = Settings()
TIMES = np.array(["2021-05-01", "2021-06-01", "2021-07-01"], dtype="datetime64[ns]")


def detection(change: np.ndarray, grid: GridSpec, confidence: float = 0.8) -> xr.Dataset:
    """A DETECTION dataset on ``grid`` with ``change`` True at the compound (break at date 2)."""
    y, x = grid.coords()
    conf = np.where(change, confidence, 0).astype(np.float32)
    ds = xr.Dataset(
        {
            "change": (("y", "x"), change),
            "score": (("y", "x"), np.where(change, 12.0, 1.0).astype(np.float32)),
            "confidence": (("y", "x"), conf),
            "break_index": (("y", "x"), np.where(change, 2, -1).astype(np.int16)),
            "after_index": (("y", "x"), np.where(change, 1, -1).astype(np.int16)),
            "clear_fraction": (("y", "x"), np.ones(change.shape, np.float32)),
            "clear": (("time", "y", "x"), np.ones((3, *change.shape), bool)),
        },
        coords={"time": TIMES, "scene_id": ("time", ["s0", "s1", "s2"]), "y": y, "x": x},
        attrs={"method": "persistent-cva", "threshold": 6.0},
    )
    return ds.rio.write_crs(grid.epsg)


def tile_pieces(tile: TileSpec, change: np.ndarray, confidence: float = 0.8):
    flags = vectorise(detection(change, tile.grid, confidence), site_id="t", settings=SETTINGS, tile=True)
    return clip_to_core(flags, tile)


@pytest.mark.parametrize("overlap", [0, 8])
def test_compound_split_across_four_tiles_is_one_flag_of_the_right_area(overlap: int) -> None:
    grid = GridSpec(epsg=32644, transform=(10.0, 0.0, 500000.0, 0.0, -10.0, 4860000.0), shape=(128, 128))
    full = np.zeros(grid.shape, bool)
    full[40:90, 50:100] = True  # 50 x 50 px over the seams at row 64 and col 64
    full[60:70, 60:70] = False  # a 1 ha courtyard (kept: >= min_area_m2 of 5000 m²)
    full[41, 98] = False  # a one-pixel hole (filled, as vectorise fills it)
    pieces = []
    for t in tiles_for_grid(grid, tile_px=64, overlap_px=overlap):
        r0 = int(round((grid.transform[5] - t.grid.transform[5]) / 10))
        c0 = int(round((t.grid.transform[2] - grid.transform[2]) / 10))
        sub = full[r0 : r0 + t.grid.shape[0], c0 : c0 + t.grid.shape[1]]
        pieces.append(tile_pieces(t, sub, confidence=0.6 + 0.1 * len(pieces)))
    assert sum(len(p) for p in pieces) == 4
    merged = merge_flags(pieces, site_id="t", settings=SETTINGS)
    single = vectorise(detection(full, grid), site_id="t", settings=SETTINGS)
    assert len(merged) == len(single) == 1
    expected = (50 * 50 - 100) * 100.0
    assert merged.loc[0, "area_m2"] == pytest.approx(expected) == single.loc[0, "area_m2"]
    geom = to_crs(merged.geometry[0], 4326, 32644)
    assert geom.geom_type == "Polygon" and len(geom.interiors) == 1  # the courtyard, no seam slivers
    assert geom.area == pytest.approx(expected, rel=1e-6)
    assert merged.loc[0, "confidence"] == pytest.approx(0.9)  # evidence of the most confident piece
    assert merged.loc[0, "n_tiles"] == 4 and merged.loc[0, "rank"] == 1
    assert merged.loc[0, "appeared_before"] == "2021-07-01"
    assert list(merged.columns) == list(SCAN_COLUMNS) and merged.crs.to_epsg() == 4326


def test_compound_across_a_zone_boundary_is_one_flag_of_the_right_area() -> None:
    compound = box(77.9965, 40.0005, 78.0030, 40.0035)  # ~555 m x 333 m across the 78°E zone meridian
    aoi = box(77.99, 39.995, 78.01, 40.01)
    tiles = tiles_for_aoi(aoi, tile_px=64, overlap_px=8)
    assert {t.epsg for t in tiles} == {32643, 32644}
    pieces = []
    for t in tiles:
        shape = to_crs(compound, 4326, t.epsg)
        change = rasterize([shape], out_shape=t.grid.shape, transform=t.grid.affine).astype(bool)
        if change.any():
            pieces.append(tile_pieces(t, change))
    # both zones see pixels beyond the meridian: duplicates before the merge
    per_zone = {e: sum(p.area_m2.sum() for p in pieces if len(p) and p.epsg.iloc[0] == e) for e in (32643, 32644)}
    true_area = abs(Geod(ellps="WGS84").geometry_area_perimeter(compound)[0])
    assert sum(per_zone.values()) > 1.2 * true_area

    merged = merge_flags(pieces, site_id="t", settings=SETTINGS)
    assert len(merged) == 1
    row = merged.iloc[0]
    assert row["zones"] == "32643,32644"
    assert row["area_m2"] == pytest.approx(true_area, rel=0.03)
    geom = merged.geometry[0]
    assert geom.geom_type == "Polygon" and not geom.interiors  # one piece, no slivers on the meridian
    ea = to_crs(geom, 4326, EQUAL_AREA_EPSG)
    assert ea.area == pytest.approx(row["area_m2"], rel=0.002)
    assert geom.bounds[0] < 78.0 < geom.bounds[2]


def test_small_pieces_count_and_small_merged_flags_drop() -> None:
    grid = GridSpec(epsg=32644, transform=(10.0, 0.0, 500000.0, 0.0, -10.0, 4860000.0), shape=(64, 128))
    full = np.zeros(grid.shape, bool)
    full[10:20, 60:68] = True  # 80 px = 8000 m², only 4 x 10 px on each side of the seam (4000 m² each)
    full[40:45, 10:15] = True  # 2500 m²: below min_area_m2
    pieces = []
    for t in tiles_for_grid(grid, tile_px=64):
        pieces.append(tile_pieces(t, full[:, t.index[1] * 64 : (t.index[1] + 1) * 64]))
    merged = merge_flags(pieces, site_id="t", settings=SETTINGS)
    assert len(merged) == 1 and merged.loc[0, "area_m2"] == pytest.approx(8000.0)
    assert merge_flags([], site_id="t", settings=SETTINGS).empty
