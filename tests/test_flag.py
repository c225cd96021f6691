"""Vectorising DETECTION datasets into ranked flags (pipeline.flag) on tiny hand-built detections."""

from __future__ import annotations

import re

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import box

import pipeline
from pipeline.config import FlagSettings, Settings, params_hash
from pipeline.errors import DetectionError
from pipeline.flag import FLAG_COLUMNS, flag_id, to_wgs84, vectorise
from pipeline.testing import DEFAULT_ORIGIN, Block, default_dates, make_detection

X0, Y0 = DEFAULT_ORIGIN
RES = 10.0
DATES = [d.isoformat() for d in default_dates()]  # 12 dates, 30 days apart from 2021-01-15


def pixel_box(rows: tuple[int, int], cols: tuple[int, int]):
    """The UTM box covered by pixel rows [r0, r1) and cols [c0, c1) of the default test grid."""
    return box(X0 + cols[0] * RES, Y0 - rows[1] * RES, X0 + cols[1] * RES, Y0 - rows[0] * RES)


def settings(min_area_m2: float = 5000.0, simplify_m: float = 0.0) -> Settings:
    return Settings(flag=FlagSettings(min_area_m2=min_area_m2, simplify_m=simplify_m))


@pytest.fixture(scope="module")
def planted():
    """A 12×10 px block changing from date 6 and a 3×3 px speck (900 m², below the 5000 m² minimum)."""
    return make_detection(
        blocks=[Block((10, 22), (5, 15), start=6, score=12.0, confidence=0.9), Block((40, 43), (40, 43), 4)]
    )


def test_planted_block_becomes_one_flag_with_exact_area_and_crs(planted):
    gdf = vectorise(planted, site_id="site-a", settings=settings())
    assert len(gdf) == 1
    assert gdf.crs.to_epsg() == 32645
    assert list(gdf.columns) == list(FLAG_COLUMNS)
    row = gdf.iloc[0]
    assert row["area_m2"] == pytest.approx(12_000.0, abs=1e-6)
    assert row["geometry"].area == pytest.approx(12_000.0, abs=1e-6)
    expected = pixel_box((10, 22), (5, 15))
    assert row["geometry"].symmetric_difference(expected).area == pytest.approx(0, abs=1e-6)


def test_flag_properties(planted):
    s = settings()
    row = vectorise(planted, site_id="site-a", settings=s).iloc[0]
    assert row["site_id"] == "site-a"
    assert row["appeared_before"] == DATES[6] == "2021-07-14"
    assert row["appeared_after"] == DATES[5] == "2021-06-14"
    assert row["confidence"] == pytest.approx(0.9, abs=1e-6)
    assert row["score"] == pytest.approx(12.0)
    assert row["method"] == "persistent-cva"
    assert row["cloud_fraction"] == 0.0
    assert row["params_hash"] == params_hash(s)
    assert row["pipeline_version"] == pipeline.__version__
    pre = row["pre_scenes"].split(",")
    post = row["post_scenes"].split(",")
    # up to 5 clear scenes at or before the last date without the change, and from the first date with it
    assert [p[12:20] for p in pre] == ["20210214", "20210316", "20210415", "20210515", "20210614"]
    assert [p[12:20] for p in post] == ["20210714", "20210813", "20210912", "20211012", "20211111"]
    assert pre == [str(v) for v in planted["scene_id"].values[1:6]]


def test_flag_id_is_stable_and_site_specific(planted):
    a = vectorise(planted, site_id="site-a", settings=settings())
    b = vectorise(planted, site_id="site-a", settings=settings())
    c = vectorise(planted, site_id="site-b", settings=settings())
    assert a["flag_id"].tolist() == b["flag_id"].tolist()
    assert re.fullmatch(r"cw-[0-9a-f]{12}", a["flag_id"].iloc[0])
    assert a["flag_id"].iloc[0] != c["flag_id"].iloc[0]
    # the id depends on the centroid rounded to 10 m: a 3 m nudge keeps it, a 30 m shift changes it
    cx, cy = pixel_box((10, 22), (5, 15)).centroid.coords[0]
    assert flag_id("site-a", cx, cy, DATES[6]) == a["flag_id"].iloc[0]
    assert flag_id("site-a", cx + 3, cy - 3, DATES[6]) == a["flag_id"].iloc[0]
    assert flag_id("site-a", cx + 30, cy, DATES[6]) != a["flag_id"].iloc[0]
    assert flag_id("site-a", cx, cy, DATES[7]) != a["flag_id"].iloc[0]


def test_island_in_courtyard_gets_its_own_id():
    # a 40x40 px ring with a 20x20 px courtyard holding an 8x8 px island: same centroid, same date
    det = make_detection(blocks=[Block((5, 45), (5, 45), 6)])
    det["change"][15:35, 15:35] = False
    det["change"][21:29, 21:29] = True
    gdf = vectorise(det, site_id="s", settings=settings())
    assert sorted(gdf["area_m2"].tolist()) == pytest.approx([6_400.0, 120_000.0])
    assert gdf["flag_id"].is_unique
    again = vectorise(det, site_id="s", settings=settings())
    assert gdf["flag_id"].tolist() == again["flag_id"].tolist()


def test_speck_is_kept_without_minimum_area(planted):
    gdf = vectorise(planted, site_id="s", settings=settings(min_area_m2=0))
    assert sorted(gdf["area_m2"].tolist()) == pytest.approx([900.0, 12_000.0])
    speck = gdf[gdf["area_m2"] < 1000].iloc[0]
    assert speck["appeared_before"] == DATES[4]


def test_ranking_by_confidence_then_flag_id():
    det = make_detection(
        blocks=[
            Block((2, 12), (2, 12), 5, confidence=0.6),
            Block((20, 30), (2, 12), 5, confidence=0.95),
            Block((40, 50), (2, 12), 5, confidence=0.6),
            Block((40, 50), (30, 40), 5, confidence=0.8),
        ]
    )
    gdf = vectorise(det, site_id="s", settings=settings())
    assert gdf["confidence"].tolist() == pytest.approx([0.95, 0.8, 0.6, 0.6])
    tied = gdf["flag_id"].tolist()[2:]
    assert tied == sorted(tied)
    assert list(gdf.index) == [0, 1, 2, 3]


def test_one_pixel_gap_is_bridged_three_pixel_gap_is_not():
    one = make_detection(blocks=[Block((10, 20), (5, 15), 6), Block((10, 20), (16, 26), 6)])
    gdf = vectorise(one, site_id="s", settings=settings())
    assert len(gdf) == 1
    assert gdf["area_m2"].iloc[0] == pytest.approx(10 * 21 * 100.0)  # the gap column is filled
    three = make_detection(blocks=[Block((10, 20), (5, 15), 6), Block((10, 20), (18, 28), 6)])
    assert len(vectorise(three, site_id="s", settings=settings())) == 2


def test_small_hole_filled_large_hole_kept():
    # 30x30 px ring with a 1 px hole (filled) ...
    det = make_detection(blocks=[Block((5, 35), (5, 35), 6)])
    det["change"][20, 20] = False
    g = vectorise(det, site_id="s", settings=settings()).geometry.iloc[0]
    assert len(g.interiors) == 0 and g.area == pytest.approx(90_000.0)
    # ... and with a 10x10 px (10 000 m2 >= 5000 m2) courtyard, kept as a hole
    det = make_detection(blocks=[Block((5, 35), (5, 35), 6)])
    det["change"][15:25, 15:25] = False
    g = vectorise(det, site_id="s", settings=settings()).geometry.iloc[0]
    assert len(g.interiors) == 1 and g.area == pytest.approx(80_000.0)


def test_diagonal_blobs_are_one_valid_flag():
    det = make_detection(blocks=[Block((10, 20), (10, 20), 6), Block((20, 30), (20, 30), 6)])
    gdf = vectorise(det, site_id="s", settings=settings())
    assert len(gdf) == 1
    g = gdf.geometry.iloc[0]
    assert g.is_valid and g.area == pytest.approx(20_000.0)


def test_clouds_reduce_cloud_fraction_and_skip_cloudy_scenes():
    # date 4 fully cloudy over the block, date 3 cloudy on 40% of it (still >= 50% clear)
    det = make_detection(
        blocks=[Block((10, 20), (10, 20), 6)], cloudy=[(4, (0, 64), (0, 64)), (3, (10, 14), (10, 20))]
    )
    row = vectorise(det, site_id="s", settings=settings()).iloc[0]
    assert row["cloud_fraction"] == pytest.approx((1 + 0.4) / 12, abs=1e-6)
    pre_dates = [p[12:20] for p in row["pre_scenes"].split(",")]
    assert pre_dates == ["20210115", "20210214", "20210316", "20210415", "20210614"]


def test_break_on_cloudy_date_moves_to_next_clear_date():
    det = make_detection(blocks=[Block((10, 20), (10, 20), 6)], cloudy=[(6, (0, 64), (0, 64))])
    row = vectorise(det, site_id="s", settings=settings()).iloc[0]
    assert row["appeared_after"] == DATES[5]
    assert row["appeared_before"] == DATES[7]
    assert row["post_scenes"].split(",")[0][12:20] == "20210813"


def test_simplify_keeps_valid_geometry():
    det = make_detection(blocks=[Block((10, 30), (10, 30), 6)])
    # a staircase edge that simplification smooths
    for k in range(10):
        det["change"][30 + k, 10 : 30 - 2 * k] = True
    raw = vectorise(det, site_id="s", settings=settings()).iloc[0]
    simple = vectorise(det, site_id="s", settings=settings(simplify_m=15)).iloc[0]
    assert simple["geometry"].is_valid
    assert len(simple["geometry"].exterior.coords) < len(raw["geometry"].exterior.coords)
    assert simple["area_m2"] == pytest.approx(raw["area_m2"], rel=0.1)
    assert simple["flag_id"] == raw["flag_id"]  # id from the unsimplified blob


def test_no_change_gives_empty_layer_with_columns_and_crs():
    gdf = vectorise(make_detection(), site_id="s", settings=settings())
    assert isinstance(gdf, gpd.GeoDataFrame) and len(gdf) == 0
    assert list(gdf.columns) == list(FLAG_COLUMNS)
    assert gdf.crs.to_epsg() == 32645
    only_speck = make_detection(blocks=[Block((1, 4), (1, 4), 6)])
    gdf = vectorise(only_speck, site_id="s", settings=settings())
    assert len(gdf) == 0 and list(gdf.columns) == list(FLAG_COLUMNS)


def test_other_utm_zone_and_missing_scene_ids():
    det = make_detection(blocks=[Block((10, 22), (5, 15), 6)], epsg=32644).drop_vars("scene_id")
    gdf = vectorise(det, site_id="s", settings=settings())
    assert gdf.crs.to_epsg() == 32644
    assert gdf["post_scenes"].iloc[0].split(",")[0] == DATES[6]


def test_to_wgs84_gives_lon_lat(planted):
    wgs = to_wgs84(vectorise(planted, site_id="s", settings=settings()))
    assert wgs.crs.to_epsg() == 4326
    minx, miny, maxx, maxy = wgs.total_bounds
    # x = 500 000 m in zone 45N is the central meridian 87° E; y = 4 800 000 m is about 43.3° N
    assert 87.0 < minx < maxx < 87.01
    assert 43.3 < miny < maxy < 43.4
    assert wgs["area_m2"].iloc[0] == pytest.approx(12_000.0)


def test_errors_on_bad_input(planted):
    with pytest.raises(DetectionError, match="lacks break_index"):
        vectorise(planted.drop_vars("break_index"), site_id="s", settings=settings())
    no_crs = planted.drop_vars("spatial_ref")
    no_crs.attrs.pop("crs", None)
    for v in no_crs.data_vars:
        no_crs[v].attrs.pop("grid_mapping", None)
        no_crs[v].encoding.pop("grid_mapping", None)
    with pytest.raises(DetectionError, match="CRS"):
        vectorise(no_crs, site_id="s", settings=settings())


def test_dask_backed_detection_gives_same_flags(planted):
    chunked = planted.chunk({"y": 32, "x": 32, "time": -1})
    a = vectorise(planted, site_id="s", settings=settings(min_area_m2=0))
    b = vectorise(chunked, site_id="s", settings=settings(min_area_m2=0))
    assert a.drop(columns="geometry").equals(b.drop(columns="geometry"))
    assert np.all(a.geometry.geom_equals(b.geometry))


def test_join_gap_joins_blocks_across_a_courtyard_in_metres():
    """Two 8×8 px roof blocks 3 px (30 m) apart: two flags by default (2-px closing), one at join_gap_m=40."""
    det = make_detection(blocks=[Block((10, 18), (10, 18), 5), Block((10, 18), (21, 29), 5)])
    assert len(vectorise(det, site_id="s", settings=settings())) == 2
    joined = Settings(flag=FlagSettings(join_gap_m=40.0))
    gdf = vectorise(det, site_id="s", settings=joined)
    assert len(gdf) == 1
    # the polygon covers both blocks and the courtyard bridged between them: 8 rows × 19 columns
    assert gdf.iloc[0]["area_m2"] == pytest.approx(8 * 19 * RES * RES)
    assert gdf.iloc[0]["confidence"] == pytest.approx(0.9, abs=1e-6)  # bridged pixels carry no evidence
    # 30 m only bridges 2-px gaps at 10 m (radius 1): the blocks stay apart
    assert len(vectorise(det, site_id="s", settings=Settings(flag=FlagSettings(join_gap_m=30.0)))) == 2


def test_support_area_raises_confidence_of_large_flags_only():
    """Doubt × sqrt(support / changed area): 1 - 0.4 × sqrt(5000 / 20000) = 0.8 (200 px block at 0.6)."""
    det = make_detection(blocks=[Block((2, 22), (2, 12), 5, confidence=0.6),   # 200 px = 20000 m²
                                 Block((40, 45), (40, 50), 5, confidence=0.7)])  # 50 px = 5000 m²
    plain = vectorise(det, site_id="s", settings=settings())
    assert plain["confidence"].tolist() == pytest.approx([0.7, 0.6])
    supported = vectorise(det, site_id="s", settings=Settings(flag=FlagSettings(support_area_m2=5000.0)))
    assert supported["area_m2"].tolist() == pytest.approx([20000.0, 5000.0])  # now ranked first
    assert supported["confidence"].tolist() == pytest.approx([0.8, 0.7])


def test_tile_mode_keeps_small_edge_blobs_drops_small_inner_ones_and_leaves_holes():
    det = make_detection(
        blocks=[
            Block((0, 3), (20, 23), 6),  # 900 m2 on the top edge: may continue in the next tile
            Block((30, 33), (30, 33), 6),  # 900 m2 inside: complete and too small
            Block((10, 40), (5, 15), 6),  # 30x10 px = 30 000 m2 with a 3x3 px (900 m2) hole below
        ]
    )
    det["change"][20:23, 9:12] = False
    whole = vectorise(det, site_id="s", settings=settings())
    tile = vectorise(det, site_id="s", settings=settings(), tile=True)
    assert sorted(whole["area_m2"]) == pytest.approx([30_000.0])  # hole filled, both specks dropped
    assert sorted(tile["area_m2"]) == pytest.approx([900.0, 29_100.0])  # edge speck kept, hole left
    assert len(tile.geometry.iloc[tile["area_m2"].argmax()].interiors) == 1
