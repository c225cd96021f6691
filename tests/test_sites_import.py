"""``compoundwatch sites import`` and :mod:`pipeline.watchlist`: facility lists → valid, unique sites.

Small fake lists written by the tests (N/A values, duplicate and unsafe names, bad coordinates) and, when
``../shared/data/xinjiang_facilities`` is present, the real ASPI list (380 rows) and OSM outlines (111).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import yaml
from pyproj import Geod
from shapely.geometry import shape
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import load_settings
from pipeline.errors import ConfigError, InvalidAOIError
from pipeline.grid import to_crs, utm_epsg
from pipeline.sites import load_sites
from pipeline.watchlist import ImportOptions, import_sites, parse_where, read_within, write_sites_file

REPO = Path(__file__).resolve().parents[1]
XJ = REPO.parent / "shared" / "data" / "xinjiang_facilities"
needs_xj = pytest.mark.skipif(not (XJ / "CampDataset_v1.csv").is_file(),
                              reason=f"the ASPI/OSM facility lists are not at {XJ} (../shared/data is absent)")
GEOD = Geod(ellps="WGS84")

CSV = """Number,Name_Code,Lat,Long,Tier,Prefecture,Number of Buildings in 2018,Number of Buildings in 2019,\
Construction ongoing in 2019?,Notes,Date of Latest Sat Imagery
1,Alpha Facility #1,43.36,88.30,3,Kashgar,10,14,1,plain,20-Mar
2,Alpha Facility #1,43.40,88.35,N/A,Hotan,#N/A,,0,,19-Jun
3,<b>Beta</b> Camp,43.45,88.40,4,Kashgar,N/A,30,#N/A,"quoted, with comma",N/A
4,Gamma,91.0,43.5,2,Aksu,1,2,0,swapped lat/lon,
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _props(result: object) -> list[dict]:
    return [f["properties"] for f in result.collection["features"]]  # type: ignore[attr-defined]


def test_csv_with_na_values_duplicate_and_unsafe_names(tmp_path: Path) -> None:
    csv = _write(tmp_path, "list.csv", CSV)
    with pytest.raises(InvalidAOIError, match=r"list.csv row 4: \(43.5, 91.0\) is outside .*--skip-invalid"):
        import_sites(csv)
    result = import_sites(csv, ImportOptions(skip_invalid=True))
    assert (result.n_rows, result.n_points, result.n_footprints, len(result.skipped)) == (4, 3, 0, 1)
    props = _props(result)
    assert [p["site_id"] for p in props] == ["alpha-facility-1", "alpha-facility-1-2", "b-beta-b-camp"]
    assert props[2]["name"] == "b Beta /b Camp"  # markup characters dropped from the name
    assert [p["source_id"] for p in props] == [1, 2, 3]
    # missing values (N/A, #N/A, empty) are null; numbers are numbers; the normalised attributes are kept
    assert props[0]["tier"] == 3 and props[1]["tier"] is None and props[2]["tier"] == 4
    assert (props[0]["buildings_2018"], props[0]["buildings_2019"]) == (10, 14)
    assert props[1]["buildings_2018"] is None and props[1]["buildings_2019"] is None
    assert [p["construction_ongoing_2019"] for p in props] == [1, 0, None]
    assert [p["source_latest_imagery"] for p in props] == ["2020-03", "2019-06", None]
    assert props[2]["source_properties"]["Notes"] == "quoted, with comma"
    assert props[1]["source_properties"]["Number of Buildings in 2018"] is None
    assert (props[0]["lon"], props[0]["lat"]) == (88.3, 43.36)


def test_points_become_squares_on_the_utm_grid(tmp_path: Path) -> None:
    csv = _write(tmp_path, "list.csv", CSV)
    out = write_sites_file(import_sites(csv, ImportOptions(size_m=1500, skip_invalid=True)), tmp_path / "s.geojson")
    sites = load_sites(out)
    assert len(sites) == 3
    for site in sites:
        grid = site.grid(10.0)
        assert grid.shape == (150, 150) and grid.epsg == utm_epsg(88.3, 43.36) == 32645
        left, bottom, right, top = grid.bounds
        assert left % 10 == 0 and top % 10 == 0 and (right - left, top - bottom) == (1500, 1500)
        utm = to_crs(site.geometry, 4326, grid.epsg)
        assert utm.area == pytest.approx(1500 * 1500, abs=400)  # 5 cm inside the pixel edges
        # centred on the facility (within one pixel)
        lon, lat = site.attributes["lon"], site.attributes["lat"]
        centre = to_crs(shape({"type": "Point", "coordinates": [lon, lat]}), 4326, grid.epsg)
        assert abs(utm.centroid.x - centre.x) <= 5.0 and abs(utm.centroid.y - centre.y) <= 5.0
        # RFC 7946: the exterior ring runs counter-clockwise (positive signed area)
        assert GEOD.geometry_area_perimeter(site.geometry)[0] > 0
    assert sites[0].attributes["tier"] == 3 and sites[0].attributes["aoi_size_m"] == 1500


def test_the_sites_file_passes_the_run_validation(tmp_path: Path) -> None:
    """A params file naming the imported sites is what ``compoundwatch run --params`` accepts."""
    from pipeline.cli.demo import _validate

    proj = tmp_path / "proj"
    (proj / ".dvc").mkdir(parents=True)
    shutil.copy(REPO / "dvc.yaml", proj / "dvc.yaml")
    result = import_sites(_write(tmp_path, "list.csv", CSV), ImportOptions(skip_invalid=True))
    write_sites_file(result, proj / "configs" / "watch.geojson")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params.update(sites=result.site_ids, sites_file="configs/watch.geojson")
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _validate(proj)
    assert load_settings(proj / "params.yaml").sites == tuple(result.site_ids)


def test_where_filters_and_never_evaluates_python(tmp_path: Path) -> None:
    csv = _write(tmp_path, "list.csv", CSV)

    def ids(*where: str) -> list[int]:
        return [p["source_id"] for p in _props(import_sites(csv, ImportOptions(where=where, skip_invalid=True)))]

    assert ids("Tier >= 3") == [1, 3]
    assert ids("tier >= 3", "Prefecture = 'Kashgar'") == [1, 3]
    assert ids("`Number of Buildings in 2019` > 10 and not Tier = 4") == [1]
    assert ids("`Number of Buildings in 2019` is null") == [2]
    assert ids("Tier is not null and (Prefecture in ('Hotan', 'Kashgar') or Tier < 3)") == [1, 3]
    assert ids("Prefecture not in ('Kashgar')") == [2]
    with pytest.raises(ConfigError, match="no column 'Teir'; did you mean 'Tier'"):
        import_sites(csv, ImportOptions(where=("Teir >= 3",)))
    with pytest.raises(ConfigError, match="expected a number or quoted text at position 9, got the end"):
        import_sites(csv, ImportOptions(where=("Tier >= ",)))
    for attack in ("__import__('os').system('true')", "Tier >= 3; import os", "Tier.__class__ = 1"):
        with pytest.raises(ConfigError, match="--where"):
            parse_where(attack, ["Tier"])
    with pytest.raises(ConfigError, match=r"no site left to write .*4 filtered out"):
        import_sites(csv, ImportOptions(where=("Tier > 10",)))


def test_geojson_points_polygons_buffer_and_within(tmp_path: Path) -> None:
    ring = [[88.30, 43.36], [88.31, 43.36], [88.31, 43.367], [88.30, 43.367], [88.30, 43.36]]
    cw = list(reversed(ring))  # clockwise on purpose: the output must be counter-clockwise
    doc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"osm_way_id": 11, "name": "营地"},
         "geometry": {"type": "Polygon", "coordinates": [cw]}},
        {"type": "Feature", "properties": {"osm_way_id": 12, "name:en": "East Camp", "Tier": "N/A"},
         "geometry": {"type": "Point", "coordinates": [88.5, 43.5]}},
    ]}
    path = _write(tmp_path, "list.geojson", json.dumps(doc))
    plain = import_sites(path)
    assert (plain.n_footprints, plain.n_points) == (1, 1)
    assert [p["site_id"] for p in _props(plain)] == ["site-11", "east-camp"]  # Chinese-only name → the id
    assert _props(plain)[0]["name"] == "营地" and _props(plain)[1]["tier"] is None
    foot = shape(plain.collection["features"][0]["geometry"])
    assert GEOD.geometry_area_perimeter(foot)[0] > 0
    area0 = abs(GEOD.geometry_area_perimeter(foot)[0])
    perim = GEOD.geometry_area_perimeter(foot)[1]
    buffered = shape(import_sites(path, ImportOptions(buffer_m=50)).collection["features"][0]["geometry"])
    area1 = abs(GEOD.geometry_area_perimeter(buffered)[0])
    assert area1 - area0 == pytest.approx(perim * 50 + 4 * 50 * 50, rel=0.02)  # mitred corners
    aoi = _write(tmp_path, "aoi.geojson", json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [
            [[88.4, 43.4], [88.6, 43.4], [88.6, 43.6], [88.4, 43.6], [88.4, 43.4]]]}}]}))
    inside = import_sites(path, ImportOptions(within=read_within(aoi)))
    assert [p["site_id"] for p in _props(inside)] == ["east-camp"] and inside.n_filtered == 1


def test_too_large_and_bad_sizes(tmp_path: Path) -> None:
    csv = _write(tmp_path, "list.csv", CSV)
    with pytest.raises(ConfigError, match=r"--size-m 25000 gives 2500 × 2500 px sites"):
        import_sites(csv, ImportOptions(size_m=25000))
    with pytest.raises(ConfigError, match="--size-m must be at least 100 m"):
        import_sites(csv, ImportOptions(size_m=50))
    assert math.isqrt(4_000_000) == 2000  # the largest square site is 20 km at 10 m
    big = import_sites(csv, ImportOptions(size_m=20000, skip_invalid=True))
    assert big.n_points == 3


def test_cli_import_writes_the_file_and_says_what_it_did(tmp_path: Path) -> None:
    csv = _write(tmp_path, "list.csv", CSV)
    out = tmp_path / "sites.geojson"
    res = CliRunner().invoke(app, ["sites", "import", str(csv), "--out", str(out), "--skip-invalid",
                                   "--where", "Tier >= 3"])
    assert res.exit_code == 0, res.output
    assert "2 site(s) from 4 row(s): 2 from points (2000 m squares); 2 filtered out" in res.stdout
    assert [s.site_id for s in load_sites(out)] == ["alpha-facility-1", "b-beta-b-camp"]
    help_text = CliRunner().invoke(app, ["sites", "import", "--help"]).stdout
    assert "Tier >= 3" in help_text and "CampDataset_v1.csv" in help_text


# ------------------------------------------------------------------------------ the real lists (shared data)
@needs_xj
def test_aspi_csv_gives_380_valid_unique_sites_with_aspi_attributes(tmp_path: Path) -> None:
    out = tmp_path / "aspi.geojson"
    res = CliRunner().invoke(app, ["sites", "import", str(XJ / "CampDataset_v1.csv"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    sites = load_sites(out)
    assert len(sites) == 380 and len({s.site_id for s in sites}) == 380
    assert {s.grid(10.0).shape for s in sites} == {(200, 200)}
    # the README's counts: tiers 108/93/72/107; building counts filled in 235/270/330/232 rows
    tiers = [s.attributes["tier"] for s in sites]
    assert [tiers.count(t) for t in (1, 2, 3, 4)] == [108, 93, 72, 107]
    filled = [sum(s.attributes[f"buildings_{y}"] is not None for s in sites) for y in (2017, 2018, 2019, 2020)]
    assert filled == [235, 270, 330, 232]
    ongoing = [sum(s.attributes[f"construction_ongoing_{y}"] == 1 for s in sites) for y in (2019, 2020)]
    assert ongoing == [106, 61]
    assert all(len(s.attributes["source_properties"]) == 44 for s in sites)
    dab = [s for s in sites if s.name == "Dabancheng Facility #1"]
    assert len(dab) == 1 and dab[0].site_id == "dabancheng-facility-1"


@needs_xj
def test_aspi_points_and_osm_footprints(tmp_path: Path) -> None:
    points = import_sites(XJ / "facilities_points.geojson", ImportOptions(where=("Tier >= 3",)))
    assert points.n_points == 72 + 107 and points.n_filtered == 108 + 93
    osm = write_sites_file(import_sites(XJ / "osm_reeducation_camps.geojson"), tmp_path / "osm.geojson")
    sites = load_sites(osm)
    assert len(sites) == 111 and len({s.site_id for s in sites}) == 111
    assert all(s.attributes["source_geometry"] == "footprint" for s in sites)
    areas = sorted(abs(GEOD.geometry_area_perimeter(s.geometry)[0]) for s in sites)
    # the README: median ≈ 85,000 m², range ≈ 9,500-830,000 m²
    assert 60_000 < areas[len(areas) // 2] < 110_000 and areas[0] > 8_000 and areas[-1] < 900_000
