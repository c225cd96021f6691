"""PMTiles archive: valid v3 header and metadata, tiles that decode to the expected features."""

from __future__ import annotations

import datetime as dt
import gzip
from collections import defaultdict
from pathlib import Path

import mapbox_vector_tile
import pytest
from _publish_data import SITE_ID, tiny_run
from pmtiles.reader import MmapSource, Reader, all_tiles
from pmtiles.tile import Compression, TileType
from pyproj import Transformer

from pipeline.errors import InvalidAOIError
from pipeline.publish.bundle import rank_flags
from pipeline.publish.pmtiles import tile_bounds_3857, tiles_for_bounds, write_pmtiles
from pipeline.publish.summary import site_summary

HALF = 20037508.342789244


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory):
    tmp_path = tmp_path_factory.mktemp("pmtiles")
    run = tiny_run(tmp_path, write_tiles=False)
    flags = rank_flags(run.flags)
    summary = site_summary(flags, [run.site], start=dt.date(2021, 1, 1), end=dt.date(2021, 12, 31))
    path = write_pmtiles({"flags": flags, "sites": summary}, tmp_path / "run.pmtiles", max_zoom=14)
    return path, flags, run


def _decode_all(path: Path) -> dict[int, list[tuple[tuple[int, int, int], dict]]]:
    out: dict[int, list] = defaultdict(list)
    with open(path, "rb") as fh:
        for (z, x, y), data in all_tiles(MmapSource(fh)):
            out[z].append(((z, x, y), mapbox_vector_tile.decode(gzip.decompress(data))))
    return out


def test_tile_math() -> None:
    assert tile_bounds_3857(0, 0, 0) == pytest.approx((-HALF, -HALF, HALF, HALF))
    assert tile_bounds_3857(1, 1, 0) == pytest.approx((0, 0, HALF, HALF))
    assert tiles_for_bounds((-1, -1, 1, 1), 1) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert tiles_for_bounds((10, 10, 20, 20), 1) == [(1, 0)]


def test_header_and_metadata_are_valid(archive) -> None:
    path, _flags, run = archive
    raw = path.read_bytes()
    assert raw[:7] == b"PMTiles" and raw[7] == 3
    with open(path, "rb") as fh:
        reader = Reader(MmapSource(fh))
        h = reader.header()
        meta = reader.metadata()
    assert h["tile_type"] == TileType.MVT
    assert h["tile_compression"] == Compression.GZIP
    assert h["internal_compression"] == Compression.GZIP
    assert (h["min_zoom"], h["max_zoom"]) == (0, 14)
    assert h["clustered"] is True
    assert h["root_offset"] == 127
    assert h["tile_data_offset"] + h["tile_data_length"] == len(raw)
    # bounds (1e-7 degrees) hold the site (whose coordinates are published rounded to 1e-7 degrees)
    lon0, lat0, lon1, lat1 = (v * 1e7 for v in run.site.geometry.bounds)
    assert h["min_lon_e7"] <= lon0 + 1 and h["max_lon_e7"] >= lon1 - 1
    assert h["min_lat_e7"] <= lat0 + 1 and h["max_lat_e7"] >= lat1 - 1
    assert h["max_lat_e7"] - h["min_lat_e7"] < (lat1 - lat0) + 10  # and are tight
    assert h["min_lon_e7"] <= h["center_lon_e7"] <= h["max_lon_e7"]
    assert 0 <= h["center_zoom"] <= 14
    layers = {layer["id"]: layer for layer in meta["vector_layers"]}
    assert set(layers) == {"flags", "sites"}
    assert layers["flags"]["fields"]["confidence"] == "Number"
    assert layers["flags"]["fields"]["flag_id"] == "String"
    assert layers["sites"]["fields"]["construction_ongoing"] == "String"
    assert h["addressed_tiles_count"] == h["tile_entries_count"] >= 15  # at least one tile per zoom


def test_mid_zoom_tiles_decode_to_every_feature(archive) -> None:
    path, flags, _ = archive
    tiles = _decode_all(path)
    assert sorted(tiles) == list(range(15))
    for z in (10, 12):  # mid zooms: ~150 m flags are polygons here
        ids: dict[str, set] = defaultdict(set)
        for _, layers in tiles[z]:
            for name, layer in layers.items():
                assert layer["extent"] == 4096
                for f in layer["features"]:
                    ids[name].add(f["properties"].get("flag_id", f["properties"].get("site_id")))
                    if name == "flags":
                        assert f["geometry"]["type"] in ("Polygon", "MultiPolygon")
                        assert f["id"] == int(f["properties"]["flag_id"][3:], 16)
        assert ids["flags"] == set(flags["flag_id"]), z
        assert ids["sites"] == {SITE_ID}, z
    # at zoom 0 a 150 m flag would collapse: it is a point, still there
    ((_, layers),) = tiles[0]
    assert {f["geometry"]["type"] for f in layers["flags"]["features"]} == {"Point"}
    assert len(layers["flags"]["features"]) == len(flags)


def test_flag_polygon_lands_in_the_right_place(archive) -> None:
    path, flags, _ = archive
    z = 12
    top = flags.iloc[0]
    c = top.geometry.centroid  # UTM
    lon, lat = Transformer.from_crs(32645, 4326, always_xy=True).transform(c.x, c.y)
    mx, my = Transformer.from_crs(4326, 3857, always_xy=True).transform(lon, lat)
    ((x, y),) = tiles_for_bounds((mx, my, mx, my), z)
    with open(path, "rb") as fh:
        data = Reader(MmapSource(fh)).get(z, x, y)
    assert data is not None
    layer = mapbox_vector_tile.decode(gzip.decompress(data))["flags"]
    feat = next(f for f in layer["features"] if f["properties"]["flag_id"] == top["flag_id"])
    assert feat["properties"]["confidence"] == pytest.approx(0.9)
    assert feat["properties"]["rank"] == 1
    # decoded tile coordinates (y up, as mapbox-vector-tile returns them) contain the centroid
    x0, y0, x1, y1 = tile_bounds_3857(z, x, y)
    tx, ty = (mx - x0) / (x1 - x0) * 4096, (my - y0) / (y1 - y0) * 4096
    ring = feat["geometry"]["coordinates"][0]
    xs, ys = [p[0] for p in ring], [p[1] for p in ring]
    assert min(xs) <= tx <= max(xs) and min(ys) <= ty <= max(ys)


def test_empty_layers_give_a_valid_archive(archive, tmp_path: Path) -> None:
    _, flags, _ = archive
    path = write_pmtiles({"flags": flags.iloc[:0]}, tmp_path / "empty.pmtiles")
    with open(path, "rb") as fh:
        reader = Reader(MmapSource(fh))
        assert reader.header()["tile_type"] == TileType.MVT
        assert reader.get(0, 0, 0) is not None
    with pytest.raises(InvalidAOIError):
        write_pmtiles({"flags": flags}, tmp_path / "bad.pmtiles", min_zoom=5, max_zoom=3)


def test_gdal_reads_the_archive(archive) -> None:
    """An independent reader: GDAL's PMTiles driver (through pyogrio) decodes the same features."""
    import pyogrio

    if "PMTiles" not in pyogrio.list_drivers():
        pytest.skip("this GDAL build has no PMTiles driver")
    path, flags, _ = archive
    assert {name for name, _ in pyogrio.list_layers(path)} == {"flags", "sites"}
    mid = pyogrio.read_dataframe(path, layer="flags", ZOOM_LEVEL=10)
    assert sorted(mid["flag_id"]) == sorted(flags["flag_id"])
    # at the highest zoom the polygons keep their area (tile units are ~0.6 m there)
    top = pyogrio.read_dataframe(path, layer="flags", ZOOM_LEVEL=14).dissolve("flag_id").to_crs(32645)
    for fid, area in zip(flags["flag_id"], flags["area_m2"], strict=True):
        assert top.loc[fid].geometry.area == pytest.approx(area, rel=0.02)
