"""RFC 7946 writing, reading, merging and the independent validator (pipeline.publish.geojson)."""

from __future__ import annotations

import copy
import json
import math

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import MultiPolygon, Polygon, box, shape

from pipeline.config import Settings
from pipeline.errors import InputFileError, InvalidAOIError
from pipeline.flag import FLAG_COLUMNS, vectorise
from pipeline.publish import merge_layers, read_geojson, validate_rfc7946, write_geojson
from pipeline.testing import Block, make_detection

# ------------------------------------------------------------------------------------ hand-made documents
CCW_SQUARE = [[10.0, 20.0], [10.1, 20.0], [10.1, 20.1], [10.0, 20.1], [10.0, 20.0]]
CW_HOLE = [[10.02, 20.02], [10.02, 20.05], [10.05, 20.05], [10.05, 20.02], [10.02, 20.02]]


def doc_with(geometry: dict, **extra) -> dict:
    return {
        "type": "FeatureCollection",
        "features": [{"type": "Feature", "properties": {"flag_id": "cw-000000000000"}, "geometry": geometry}],
        **extra,
    }


GOOD = doc_with({"type": "Polygon", "coordinates": [CCW_SQUARE, CW_HOLE]})


def test_validator_accepts_good_documents():
    assert validate_rfc7946(GOOD) == []
    shifted = [[x + 1, y] for x, y in CCW_SQUARE]
    multi = doc_with({"type": "MultiPolygon", "coordinates": [[CCW_SQUARE], [shifted]]})
    assert validate_rfc7946(multi) == []
    assert validate_rfc7946({"type": "FeatureCollection", "features": []}) == []
    with_null_props = copy.deepcopy(GOOD)
    with_null_props["features"][0]["properties"] = None
    assert validate_rfc7946(with_null_props) == []


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        (doc_with({"type": "Polygon", "coordinates": [CCW_SQUARE[::-1]]}), "counter-clockwise"),
        (doc_with({"type": "Polygon", "coordinates": [CCW_SQUARE, CW_HOLE[::-1]]}), "holes clockwise"),
        (doc_with({"type": "Polygon", "coordinates": [CCW_SQUARE[:-1]]}), "not closed"),
        (doc_with({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [0, 0]]]}), "at least 4"),
        (doc_with({"type": "Polygon", "coordinates": [[[x + 175, y] for x, y in CCW_SQUARE]]}), "longitude"),
        (doc_with({"type": "Polygon", "coordinates": [[[y, x + 80] for x, y in CCW_SQUARE]]}), "latitude"),
        (doc_with({"type": "Polygon", "coordinates": [CCW_SQUARE]}, crs={"type": "name"}), "crs"),
        (doc_with({"type": "Point", "coordinates": [10.0, 20.0]}), "Polygon or MultiPolygon"),
        (doc_with({"type": "Polygon", "coordinates": [[["1", 2], [3, 2], [3, 4], ["1", 2]]]}), "number"),
        ({"type": "Feature", "features": []}, "FeatureCollection"),
        ({"type": "FeatureCollection"}, "'features' must be an array"),
        ([], "JSON object"),
    ],
)
def test_validator_reports_problems(doc, needle):
    problems = validate_rfc7946(doc)
    assert problems, f"expected a problem mentioning {needle!r}"
    assert any(needle in p for p in problems), problems


def test_validator_checks_feature_members_and_validity():
    bad = copy.deepcopy(GOOD)
    bad["features"][0]["type"] = "feature"
    bad["features"][0]["crs"] = {}
    del bad["features"][0]["properties"]
    problems = validate_rfc7946(bad)
    assert any("type must be 'Feature'" in p for p in problems)
    assert any("'crs'" in p for p in problems)
    assert any("properties" in p for p in problems)
    # oriented correctly and closed, but the hole lies outside the shell: only shapely catches it
    far_hole = [[x + 1, y] for x, y in CW_HOLE]
    problems = validate_rfc7946(doc_with({"type": "Polygon", "coordinates": [CCW_SQUARE, far_hole]}))
    assert len(problems) == 1 and "invalid geometry" in problems[0]
    # a bow-tie ring: zero signed area
    bowtie = [[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]
    problems = validate_rfc7946(doc_with({"type": "Polygon", "coordinates": [bowtie]}))
    assert any("no area" in p for p in problems)


# ------------------------------------------------------------------------------------ writing
@pytest.fixture(scope="module")
def flags() -> gpd.GeoDataFrame:
    det = make_detection(
        blocks=[
            Block((10, 22), (5, 15), 6, confidence=0.7),
            Block((30, 60), (30, 60), 4, confidence=0.9),  # gets a 10x10 px courtyard below
        ]
    )
    det["change"][40:50, 40:50] = False
    return vectorise(det, site_id="site-a", settings=Settings())


def test_written_flags_are_valid_rfc7946(tmp_path, flags):
    path = write_geojson(flags, tmp_path / "deep" / "folder" / "site-a.geojson")
    assert path == tmp_path / "deep" / "folder" / "site-a.geojson" and path.is_file()
    doc = json.loads(path.read_text())
    assert validate_rfc7946(doc) == []
    assert "crs" not in doc
    assert [f["properties"]["flag_id"] for f in doc["features"]] == flags["flag_id"].tolist()  # ranking kept
    assert [f["id"] for f in doc["features"]] == flags["flag_id"].tolist()
    big = doc["features"][0]
    assert len(big["geometry"]["coordinates"]) == 2  # exterior + courtyard hole
    for ring in big["geometry"]["coordinates"]:
        for lon, lat in ring:
            assert 87.0 < lon < 87.01 and 43.3 < lat < 43.4  # lon/lat order
            assert round(lon, 7) == lon and round(lat, 7) == lat
    # no leftover temporary files
    assert sorted(p.name for p in path.parent.iterdir()) == ["site-a.geojson"]


def test_round_trip_keeps_properties_and_geometry(tmp_path, flags):
    path = write_geojson(flags, tmp_path / "f.geojson")
    back = read_geojson(path)
    assert back.crs.to_epsg() == 4326
    assert list(back.columns) == list(FLAG_COLUMNS)
    assert back["flag_id"].tolist() == flags["flag_id"].tolist()
    assert back["appeared_before"].tolist() == flags["appeared_before"].tolist()  # still ISO strings
    assert back["confidence"].tolist() == pytest.approx(flags["confidence"].tolist())
    utm = back.to_crs(32645)
    for a, b in zip(utm.geometry, flags.geometry):
        # 1e-7° rounding moves edges by about 1 cm at most
        assert a.symmetric_difference(b).area < 0.02 * b.length
    assert utm.geometry.area.tolist() == pytest.approx(flags["area_m2"].tolist(), rel=1e-4)


def test_orientation_validity_and_json_types_are_fixed(tmp_path):
    cw = Polygon([(500_000, 4_800_000), (500_000, 4_800_100), (500_100, 4_800_100), (500_100, 4_800_000)])
    assert not cw.exterior.is_ccw
    bowtie = Polygon([(500_000, 4_800_000), (500_100, 4_800_100), (500_100, 4_800_000), (500_000, 4_800_100)])
    assert not bowtie.is_valid
    gdf = gpd.GeoDataFrame(
        {
            "n": [np.int64(3), np.int32(4)],
            "x": [np.float32(0.5), np.nan],
            "ok": [np.bool_(True), False],
            "day": [np.datetime64("2021-07-14"), None],
            "geometry": [cw, bowtie],
        },
        crs=32645,
    )
    path = write_geojson(gdf, tmp_path / "x.geojson")
    text = path.read_text()
    assert "NaN" not in text
    doc = json.loads(text)
    assert validate_rfc7946(doc) == []
    p0, p1 = (f["properties"] for f in doc["features"])
    assert p0 == {"n": 3, "x": 0.5, "ok": True, "day": "2021-07-14"}
    assert p1 == {"n": 4, "x": None, "ok": False, "day": None}
    g0 = shape(doc["features"][0]["geometry"])
    assert g0.exterior.is_ccw
    g1 = shape(doc["features"][1]["geometry"])
    assert isinstance(g1, MultiPolygon) and g1.is_valid  # the bow-tie became two triangles


def test_empty_layer_writes_empty_collection(tmp_path, flags):
    path = write_geojson(flags.iloc[:0], tmp_path / "empty.geojson")
    doc = json.loads(path.read_text())
    assert doc == {"type": "FeatureCollection", "features": []}
    assert validate_rfc7946(doc) == []
    back = read_geojson(path, columns=FLAG_COLUMNS)
    assert len(back) == 0 and list(back.columns) == list(FLAG_COLUMNS) and back.crs.to_epsg() == 4326


def test_overwrite_is_atomic_replacement(tmp_path, flags):
    path = tmp_path / "f.geojson"
    write_geojson(flags.iloc[:1], path)
    write_geojson(flags, path)
    assert len(json.loads(path.read_text())["features"]) == len(flags)
    assert [p.name for p in tmp_path.iterdir()] == ["f.geojson"]


def test_write_without_crs_fails(tmp_path):
    with pytest.raises(InvalidAOIError, match="CRS"):
        write_geojson(gpd.GeoDataFrame({"geometry": [box(0, 0, 1, 1)]}), tmp_path / "x.geojson")


def test_read_errors(tmp_path):
    with pytest.raises(InputFileError, match="not found"):
        read_geojson(tmp_path / "missing.geojson")
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    with pytest.raises(InputFileError, match="not valid JSON"):
        read_geojson(bad)


def test_merge_layers_ranks_across_sites(tmp_path):
    def layer(site: str, confs: list[float]) -> gpd.GeoDataFrame:
        return gpd.GeoDataFrame(
            {
                "flag_id": [f"cw-{site}{i}" for i in range(len(confs))],
                "site_id": site,
                "confidence": confs,
                "geometry": [box(87 + i * 0.01, 43.3, 87.005 + i * 0.01, 43.305) for i in range(len(confs))],
            },
            crs=4326,
        )

    a = write_geojson(layer("a", [0.9, 0.5]), tmp_path / "a.geojson")
    b = write_geojson(layer("b", [0.7, 0.5]), tmp_path / "b.geojson")
    empty = write_geojson(layer("c", []), tmp_path / "c.geojson")
    merged = merge_layers([a, empty, b])
    assert merged["flag_id"].tolist() == ["cw-a0", "cw-b0", "cw-a1", "cw-b1"]
    assert merged.crs.to_epsg() == 4326 and list(merged.index) == [0, 1, 2, 3]
    assert merged.columns[-1] == "geometry"
    assert len(merge_layers([empty])) == 0
    assert len(merge_layers([])) == 0
    assert not any(math.isnan(v) for v in merged["confidence"])
