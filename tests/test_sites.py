"""Sites file parsing and validation (pipeline.sites)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import InputFileError, InvalidAOIError
from pipeline.scan.aoi import load_aoi
from pipeline.sites import get_site, load_sites

REPO = Path(__file__).resolve().parents[1]
SQUARE = [[[88.30, 43.36], [88.31, 43.36], [88.31, 43.37], [88.30, 43.37], [88.30, 43.36]]]


def _feature(site_id: Any, coords: Any = SQUARE, gtype: str = "Polygon", **props: Any) -> dict[str, Any]:
    return {
        "type": "Feature",
        "properties": {"site_id": site_id, **props},
        "geometry": {"type": gtype, "coordinates": coords},
    }


def _write(tmp_path: Path, *features: dict[str, Any]) -> Path:
    path = tmp_path / "sites.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": list(features)}))
    return path


def test_repository_sites() -> None:
    sites = load_sites(REPO / "configs" / "sites.geojson")
    ids = [s.site_id for s in sites]
    assert ids == ["arid-compound", "farmland-compound", "town-edge", "control-farmland", "grey-desert"]
    assert [s.site_id for s in sites if s.control] == ["control-farmland"]
    for s in sites:
        grid = s.grid(10.0)
        assert 32601 <= grid.epsg <= 32660  # northern UTM zones
        assert grid.resolution == 10.0
        assert 250 <= grid.shape[0] <= 350 and 250 <= grid.shape[1] <= 350  # ~3 km squares


def test_load_reads_properties(tmp_path: Path) -> None:
    path = _write(tmp_path, _feature("a-1", name="Alpha", control=True, scenario="farmland"), _feature("b"))
    a, b = load_sites(path)
    assert (a.site_id, a.name, a.control, a.scenario) == ("a-1", "Alpha", True, "farmland")
    assert (b.name, b.control, b.scenario) == ("b", False, "arid")
    assert a.geometry.bounds == pytest.approx((88.30, 43.36, 88.31, 43.37))
    assert get_site(path, "b").site_id == "b"


def test_duplicate_id(tmp_path: Path) -> None:
    with pytest.raises(InvalidAOIError, match="'a' is used twice"):
        load_sites(_write(tmp_path, _feature("a"), _feature("a")))


@pytest.mark.parametrize("bad_id", ["Upper", "with space", "", None, "-lead"])
def test_bad_id(tmp_path: Path, bad_id: Any) -> None:
    with pytest.raises(InvalidAOIError, match="site_id"):
        load_sites(_write(tmp_path, _feature(bad_id)))


def test_self_intersecting_polygon(tmp_path: Path) -> None:
    bowtie = [[[88.30, 43.36], [88.31, 43.37], [88.31, 43.36], [88.30, 43.37], [88.30, 43.36]]]
    with pytest.raises(InvalidAOIError, match="'bow' is not a valid polygon.*self-intersects"):
        load_sites(_write(tmp_path, _feature("bow", bowtie)))


def test_point_is_not_a_site(tmp_path: Path) -> None:
    with pytest.raises(InvalidAOIError, match="Polygon"):
        load_sites(_write(tmp_path, _feature("pt", [88.3, 43.36], gtype="Point")))


def test_unreadable_geometry(tmp_path: Path) -> None:
    with pytest.raises(InvalidAOIError, match="unreadable geometry"):
        load_sites(_write(tmp_path, _feature("x", "not coordinates")))


def test_projected_coordinates_are_refused(tmp_path: Path) -> None:
    utm = [[[600000, 4800000], [601200, 4800000], [601200, 4801200], [600000, 4801200], [600000, 4800000]]]
    with pytest.raises(InvalidAOIError, match="WGS84"):
        load_sites(_write(tmp_path, _feature("utm", utm)))


def test_empty_collection_and_bad_json(tmp_path: Path) -> None:
    with pytest.raises(InvalidAOIError, match="at least one feature"):
        load_sites(_write(tmp_path))
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    with pytest.raises(InvalidAOIError, match="not valid JSON"):
        load_sites(bad)


def test_missing_file_and_unknown_site(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="not found"):
        load_sites(tmp_path / "absent.geojson")
    with pytest.raises(InvalidAOIError, match="known: a"):
        get_site(_write(tmp_path, _feature("a")), "zzz")


def test_antimeridian_polygon_refused_split_multipolygon_kept(tmp_path: Path) -> None:
    east = [[179.9, -17.0], [180.0, -17.0], [180.0, -16.9], [179.9, -16.9], [179.9, -17.0]]
    west = [[-180.0, -17.0], [-179.9, -17.0], [-179.9, -16.9], [-180.0, -16.9], [-180.0, -17.0]]
    wrapped = [[179.9, -17.0], [-179.9, -17.0], [-179.9, -16.9], [179.9, -16.9], [179.9, -17.0]]
    for geometry, ok in (({"type": "MultiPolygon", "coordinates": [[east], [west]]}, True),
                         ({"type": "Polygon", "coordinates": [wrapped]}, False)):
        path = tmp_path / "sites.geojson"
        path.write_text(json.dumps({"type": "FeatureCollection", "features": [
            {"type": "Feature", "properties": {"site_id": "fiji"}, "geometry": geometry}]}))
        if ok:  # split at 180°: fine for a scan (per zone), but one site cannot hold both sides
            (sid, geom), = load_aoi(path)
            assert sid == "fiji" and geom.geom_type == "MultiPolygon"
            with pytest.raises(InvalidAOIError, match="site 'fiji' lies on both sides of the antimeridian"):
                load_sites(path)
        else:
            with pytest.raises(InvalidAOIError, match="crosses the antimeridian .*split it at 180°"):
                load_sites(path)
