"""Property-based tests (hypothesis): the settings model, AOI / sites parsing, band names, and the escaping of
names into web pages. Each property holds for every generated input: bad input raises the project's own
error (never a bare ValueError, KeyError or TypeError), good input round-trips, and nothing a user types can
name a path outside its folder or break out of the map page's JSON."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import geopandas as gpd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from shapely.geometry import Polygon, box

from pipeline.cli.compare import _split_bands
from pipeline.config import S2_BANDS, params_hash, settings_from_dict
from pipeline.errors import BandError, ConfigError, InputFileError, InvalidAOIError
from pipeline.fetch.scenes import _canonical_list, canonical_band
from pipeline.publish.chips import chip_href
from pipeline.publish.mappage import safe_json_for_html
from pipeline.scan.aoi import load_aoi
from pipeline.sites import load_sites
from pipeline.stages import site_path

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SAFE_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
SECTIONS = ("fetch", "synthetic", "tile", "preprocess", "detect", "flag", "evaluate", "sentinelhub", "stac", "dask")
KEYS = ("source", "start", "end", "bands", "resolution_m", "seed", "revisit_days", "tile_size_px", "threshold",
        "min_score", "persistence", "min_post_obs", "min_area_m2", "join_gap_m", "iou_threshold", "base_url",
        "max_retries", "backoff", "url", "scheduler", "n_workers", "no_such_key")


# --------------------------------------------------------------------------------------------- settings
@FAST
@given(st.dictionaries(st.sampled_from(SECTIONS), st.dictionaries(st.sampled_from(KEYS), json_values, max_size=3),
                       max_size=3))
def test_any_params_give_settings_or_one_config_error(data: dict[str, Any]) -> None:
    try:
        s = settings_from_dict(data, origin="p.yaml")
    except ConfigError as err:
        text = str(err)
        assert text.startswith("p.yaml: ") and "\n" not in text.strip()
        return
    # valid: the dump validates back to the same settings, with the same hash
    again = settings_from_dict(s.model_dump(mode="json"))
    assert again == s and params_hash(again) == params_hash(s)


@FAST
@given(persistence=st.floats(0.01, 1.0), min_score=st.floats(0.1, 50), min_area=st.floats(0, 1e7),
       tile=st.integers(32, 4096), bands=st.lists(st.sampled_from(S2_BANDS), min_size=1, max_size=6, unique=True))
def test_valid_params_round_trip(persistence: float, min_score: float, min_area: float, tile: int,
                                 bands: list[str]) -> None:
    data = {"detect": {"persistence": persistence, "min_score": min_score}, "flag": {"min_area_m2": min_area},
            "tile": {"tile_size_px": tile}, "fetch": {"bands": bands}}
    s = settings_from_dict(data)
    assert s.detect.persistence == persistence and s.tile.tile_size_px == tile and list(s.fetch.bands) == bands
    assert settings_from_dict(json.loads(json.dumps(s.model_dump(mode="json")))) == s


@FAST
@given(st.text(min_size=1, max_size=20))
def test_site_ids_in_params_are_safe_or_refused(site_id: str) -> None:
    try:
        s = settings_from_dict({"sites": [site_id]})
    except ConfigError:
        assert not SAFE_ID.match(site_id)
        return
    assert SAFE_ID.match(s.sites[0])


@FAST
@given(st.text(min_size=1, max_size=20))
def test_site_path_never_leaves_its_folder(site_id: str) -> None:
    folder = Path("/srv/project/data/flags")
    try:
        path = site_path(folder, site_id, ".geojson")
    except InvalidAOIError:
        assert not SAFE_ID.match(site_id)
        return
    assert path.parent == folder and ".." not in path.parts


# ---------------------------------------------------------------------------------------- AOIs and sites
coords = st.tuples(st.floats(-200, 200, allow_nan=False), st.floats(-100, 100, allow_nan=False))


@FAST
@given(st.lists(coords, min_size=3, max_size=7))
def test_any_polygon_aoi_is_accepted_valid_or_refused(points: list[tuple[float, float]]) -> None:
    ring = Polygon(points)
    gdf = gpd.GeoDataFrame({"site_id": ["a"]}, geometry=[ring], crs=4326)
    try:
        (sid, geom), = load_aoi(gdf)
    except InvalidAOIError as err:
        assert "AOI feature 1" in str(err) or "no features" in str(err)
        return
    assert sid == "a" and geom.is_valid and not geom.is_empty
    minx, miny, maxx, maxy = geom.bounds
    assert -180 <= minx <= maxx <= 180 and -80 <= miny <= maxy <= 84 and maxx - minx <= 180


@FAST
@given(lon=st.floats(-179, 178), lat=st.floats(-79, 83), w=st.floats(0.001, 0.9), h=st.floats(0.001, 0.9))
def test_boxes_in_range_are_kept_as_given(lon: float, lat: float, w: float, h: float) -> None:
    aoi = box(lon, lat, lon + w, min(lat + h, 84))
    assume(aoi.area > 0)
    (sid, geom), = load_aoi(gpd.GeoDataFrame({"name": ["My Site 1"]}, geometry=[aoi], crs=4326))
    assert sid == "my-site-1" and geom.equals(aoi)


@FAST
@given(site_id=st.one_of(st.text(max_size=16), st.from_regex(SAFE_ID, fullmatch=True)),
       name=st.text(max_size=30))
def test_sites_file_ids_and_names(tmp_path_factory: pytest.TempPathFactory, site_id: str, name: str) -> None:
    ring = [[88.3, 43.36], [88.31, 43.36], [88.31, 43.37], [88.3, 43.37], [88.3, 43.36]]
    doc = {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"site_id": site_id,
           "name": name}, "geometry": {"type": "Polygon", "coordinates": [ring]}}]}
    path = tmp_path_factory.mktemp("sites") / "sites.geojson"
    path.write_text(json.dumps(doc))
    try:
        (site,) = load_sites(path)
    except InvalidAOIError:
        assert not SAFE_ID.match(site_id) or re.search(r"[<>\x00-\x1f\x7f-\x9f\u2028\u2029]", name) or len(name) > 200
        return
    assert SAFE_ID.match(site.site_id) and "<" not in site.name and ">" not in site.name


# -------------------------------------------------------------------------------------------- band names
@FAST
@given(st.text(max_size=12))
def test_canonical_band_is_a_sentinel2_band_or_none(text: str) -> None:
    assert canonical_band(text) in (*S2_BANDS, None)


@FAST
@given(st.sampled_from(S2_BANDS), st.sampled_from(["{b}", "{lb}", "{short}", "{b} (490 nm)", "{lb}_865nm"]))
def test_band_spellings_name_the_band(band: str, form: str) -> None:
    short = band if band == "B8A" else f"B{int(band[1:])}"
    assert canonical_band(form.format(b=band, lb=band.lower(), short=short)) == band


@FAST
@given(st.lists(st.text(max_size=8), max_size=6))
def test_band_lists_parse_or_raise_band_error(items: list[str]) -> None:
    names = _split_bands(items)
    if names is None:
        assert all(not part.strip() for item in items for part in item.split(","))
        return
    try:
        out = _canonical_list(names)
    except BandError:
        return
    assert len(out) == len(set(out)) == len(names) and set(out) <= set(S2_BANDS)


# ------------------------------------------------------------------------------------------- escaping
@FAST
@given(json_values)
def test_json_in_the_map_page_cannot_close_its_script_element(value: Any) -> None:
    text = safe_json_for_html(value)
    assert not set(text) & {"<", ">", "&", "\u2028", "\u2029"}
    assert json.loads(text) == value


@FAST
@given(st.text(max_size=20))
def test_chip_paths_stay_in_the_chips_folder(flag_id: str) -> None:
    try:
        href = chip_href(flag_id)
    except InputFileError:
        assert not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}", flag_id)
        return
    folder, name = href.split("/")
    assert folder == "chips" and name == f"{flag_id}.png" and ".." not in name
