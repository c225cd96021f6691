"""Wide-area scan (pipeline.scan.aoi): tiles → ranked layer; interrupted runs resume with the same result."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pytest
from shapely.geometry import box

from pipeline.config import Settings
from pipeline.errors import InputFileError
from pipeline.scan.aoi import ScanEvent, load_aoi, scan
from pipeline.scan.seams import SCAN_COLUMNS
from pipeline.scan.tiling import tiles_for_aoi

AOI = box(81.300, 43.900, 81.310, 43.905)  # 2 tiles of 96 px (+16 px overlap) in zone 44N
KW = dict(tile_px=96, overlap_px=16)


class Stop(Exception):
    pass


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> gpd.GeoDataFrame:
    return scan(AOI, Settings(), resume_dir=tmp_path_factory.mktemp("straight"), **KW)


def test_scan_returns_a_ranked_wgs84_layer(straight: gpd.GeoDataFrame) -> None:
    assert len(tiles_for_aoi(AOI, **KW)) == 2
    assert list(straight.columns) == list(SCAN_COLUMNS)
    assert straight.crs.to_epsg() == 4326
    assert len(straight) >= 2  # the synthetic arid scenario builds compounds in every tile
    assert list(straight["rank"]) == list(range(1, len(straight) + 1))
    assert straight["confidence"].is_monotonic_decreasing
    assert (straight["area_m2"] >= Settings().flag.min_area_m2).all()
    assert straight["flag_id"].is_unique
    assert set(straight["zones"]) == {"32644"}


def test_interrupted_scan_resumes_where_it_stopped(tmp_path: Path, straight: gpd.GeoDataFrame) -> None:
    events: list[ScanEvent] = []

    def stop_after_first_tile(e: ScanEvent) -> None:
        events.append(e)
        if e.kind == "tile" and e.done == 1:
            raise Stop

    with pytest.raises(Stop):
        scan(AOI, Settings(), resume_dir=tmp_path, progress=stop_after_first_tile, **KW)
    files = list(tmp_path.glob("*/tiles/*.parquet"))
    assert len(files) == 1  # one small file per finished tile, nothing else half-written
    assert not list(tmp_path.glob("*/tiles/*.tmp"))

    resumed_events: list[ScanEvent] = []
    again = scan(AOI, Settings(), resume_dir=tmp_path, progress=resumed_events.append, **KW)
    tiles = [e for e in resumed_events if e.kind == "tile"]
    assert [e.resumed for e in tiles] == [True, False]  # the finished tile is not computed again
    assert len(list(tmp_path.glob("*/tiles/*.parquet"))) == 2
    cols = ["flag_id", "area_m2", "confidence", "appeared_before", "rank"]
    assert again[cols].equals(straight[cols])
    assert again.geometry.geom_equals(straight.geometry).all()


def test_changed_parameters_do_not_reuse_tiles(tmp_path: Path) -> None:
    calls: list[ScanEvent] = []
    s2 = Settings().model_copy(update={"flag": Settings().flag.model_copy(update={"min_area_m2": 20000.0})})
    scan(AOI, Settings(), resume_dir=tmp_path, **KW)
    big = scan(AOI, s2, resume_dir=tmp_path, progress=calls.append, **KW)
    assert not any(e.resumed for e in calls if e.kind == "tile")
    assert (big["area_m2"] >= 20000.0).all()
    assert len(list(tmp_path.iterdir())) == 2


def test_load_aoi(tmp_path: Path) -> None:
    path = tmp_path / "aoi.geojson"
    gpd.GeoDataFrame({"name": ["Site A", None]}, geometry=[AOI, box(81.4, 43.9, 81.41, 43.91)],
                     crs=4326).to_file(path)
    sites = load_aoi(path)
    assert [s for s, _ in sites] == ["site-a", "aoi-2"]
    with pytest.raises(InputFileError):
        load_aoi(tmp_path / "missing.geojson")
