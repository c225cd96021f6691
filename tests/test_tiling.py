"""Fixed UTM tile grids (pipeline.scan.tiling): cover, no overlap between cores, stable ids, zones."""

from __future__ import annotations

import dataclasses

import pytest
import shapely
from shapely.geometry import box

from pipeline.errors import InvalidAOIError
from pipeline.grid import GridSpec, to_crs
from pipeline.scan.tiling import TileSpec, tiles_for_aoi, tiles_for_grid, zone_strip, zones_for


def test_tiles_cover_the_aoi_and_cores_do_not_overlap() -> None:
    aoi = box(81.30, 43.90, 81.36, 43.94)  # about 4.8 x 4.4 km, zone 44N
    tiles = tiles_for_aoi(aoi, tile_px=128, overlap_px=8, resolution=10.0)
    assert {t.epsg for t in tiles} == {32644}
    cores = [t.core_box() for t in tiles]
    union = shapely.union_all(cores)
    aoi_utm = to_crs(aoi, 4326, 32644)
    assert union.contains(aoi_utm)
    total = sum(c.area for c in cores)
    assert total == pytest.approx(union.area)  # cores tile the plane without overlap
    assert all(c.area == 1280.0**2 for c in cores)
    # every tile is needed: its core meets the AOI
    assert all(c.intersection(aoi_utm).area > 0 for c in cores)


def test_tile_grid_is_core_plus_overlap_on_a_fixed_zone_grid() -> None:
    t = tiles_for_aoi(box(81.30, 43.90, 81.31, 43.91), tile_px=100, overlap_px=5, resolution=10.0)[0]
    assert isinstance(t, TileSpec)
    assert t.grid.shape == (110, 110)
    left, bottom, right, top = t.core
    assert left % 1000.0 == 0 and bottom % 1000.0 == 0 and right - left == 1000.0
    assert t.grid.bounds == (left - 50, bottom - 50, right + 50, top + 50)
    rows, cols = t.core_slices()
    assert (rows, cols) == (slice(5, 105), slice(5, 105))
    assert t.tile_id == f"32644_r{t.index[0]:05d}_c{t.index[1]:05d}"
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.epsg = 1  # type: ignore[misc]


def test_same_place_same_tile_whatever_the_aoi() -> None:
    small = {t.tile_id for t in tiles_for_aoi(box(81.31, 43.91, 81.32, 43.92), tile_px=128)}
    large = {t.tile_id for t in tiles_for_aoi(box(81.30, 43.90, 81.36, 43.94), tile_px=128)}
    assert small and small <= large


def test_aoi_across_a_zone_boundary_is_split_per_zone() -> None:
    aoi = box(77.98, 40.00, 78.02, 40.02)  # 78°E separates zones 43 and 44
    assert zones_for(aoi) == [32643, 32644]
    tiles = tiles_for_aoi(aoi, tile_px=128, overlap_px=0)
    by_zone = {e: [t for t in tiles if t.epsg == e] for e in (32643, 32644)}
    for epsg, ts in by_zone.items():
        assert ts
        part = to_crs(aoi.intersection(box(*zone_strip(epsg))), 4326, epsg)
        assert shapely.union_all([t.core_box() for t in ts]).contains(part.buffer(-1))
    assert zone_strip(32644)[0] == 78.0 and zone_strip(32643)[2] == 78.0


def test_southern_hemisphere_zone() -> None:
    assert zones_for(box(18.0, -34.0, 18.1, -33.9)) == [32734]
    assert zones_for(box(18.0, -0.1, 18.1, 0.1)) == [32634, 32734]


def test_tiles_for_grid_cover_the_grid_once() -> None:
    g = GridSpec(epsg=32644, transform=(10.0, 0.0, 600000.0, 0.0, -10.0, 4900020.0), shape=(250, 300))
    tiles = tiles_for_grid(g, tile_px=128, overlap_px=4)
    assert len(tiles) == 2 * 3
    cores = [t.core_box() for t in tiles]
    assert sum(c.area for c in cores) == pytest.approx(250 * 300 * 100.0)
    assert shapely.union_all(cores).equals(box(*g.bounds))
    last = tiles[-1]
    assert last.grid.shape == (250 - 128 + 4, 300 - 256 + 4)  # clipped at the grid edge
    r, c = last.core_slices()
    assert (r.stop - r.start, c.stop - c.start) == (250 - 128, 300 - 256)


@pytest.mark.parametrize("aoi", [box(0, 0, 0, 0), box(190, 0, 191, 1), shapely.Point(81, 43)])
def test_bad_aoi(aoi) -> None:
    with pytest.raises(InvalidAOIError):
        tiles_for_aoi(aoi)
