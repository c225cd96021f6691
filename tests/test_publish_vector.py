"""GeoJSON / FlatGeobuf / GeoParquet layers, the per-site summary, ranking and the STAC catalog."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pyogrio
import pystac
import pytest
from _publish_data import BLOCK_AREAS_M2, SITE_ID, tiny_run
from shapely.geometry import MultiPolygon, Polygon, box

from pipeline.errors import ConfigError
from pipeline.publish.bundle import rank_flags
from pipeline.publish.geojson import validate_rfc7946
from pipeline.publish.stac import write_stac
from pipeline.publish.summary import period_label, period_labels, site_summary
from pipeline.publish.vector import FORMATS, feature_records, read_layer, write_layer
from pipeline.sites import Site


@pytest.fixture
def run(tmp_path: Path):
    return tiny_run(tmp_path, write_tiles=False)


def test_three_formats_hold_identical_features(run, tmp_path: Path) -> None:
    ranked = rank_flags(run.flags)
    files = write_layer(ranked, tmp_path / "out", "flags")
    assert set(files) == set(FORMATS)
    assert all(p.is_file() and p.stat().st_size > 0 for p in files.values())
    assert validate_rfc7946(json.loads(files["geojson"].read_text())) == []

    layers = {fmt: read_layer(p) for fmt, p in files.items()}
    for fmt, gdf in layers.items():
        assert gdf.crs.to_epsg() == 4326, fmt
        assert len(gdf) == 3, fmt
    records = {fmt: feature_records(g) for fmt, g in layers.items()}
    ids = set(run.flags["flag_id"])
    assert set(records["geojson"]) == ids
    assert records["fgb"] == records["geojson"]
    assert records["parquet"] == records["geojson"]
    # the stable ids and the ranking survive FlatGeobuf's on-disk (spatial index) order
    fgb = layers["fgb"].sort_values("rank")
    assert list(fgb["flag_id"]) == list(ranked["flag_id"])
    assert list(fgb["rank"]) == [1, 2, 3]
    # areas (m², UTM) are carried, not recomputed
    assert sorted(layers["parquet"]["area_m2"]) == sorted(BLOCK_AREAS_M2.values())


def test_typed_fields_in_flatgeobuf_and_geoparquet(run, tmp_path: Path) -> None:
    files = write_layer(rank_flags(run.flags), tmp_path, "flags")
    info = pyogrio.read_info(files["fgb"])
    types = dict(zip(info["fields"], info["ogr_types"], strict=True))
    assert types["confidence"] == "OFTReal" and types["area_m2"] == "OFTReal"
    assert types["rank"] in ("OFTInteger64", "OFTInteger")
    assert types["flag_id"] == "OFTString" and types["appeared_before"] == "OFTString"
    assert info["crs"] == "EPSG:4326"
    meta = json.loads(pq.read_schema(files["parquet"]).metadata[b"geo"])
    assert meta["primary_column"] == "geometry"
    assert meta["columns"]["geometry"]["encoding"] == "WKB"
    assert "covering" in meta["columns"]["geometry"]  # bbox column for row-group pruning


def test_mixed_polygon_multipolygon_and_empty_layers_round_trip(tmp_path: Path) -> None:
    poly = box(87.0, 43.0, 87.001, 43.001)
    multi = MultiPolygon([box(87.002, 43.0, 87.003, 43.001), box(87.004, 43.0, 87.005, 43.001)])
    gdf = gpd.GeoDataFrame(
        {"flag_id": ["cw-000000000001", "cw-000000000002"], "confidence": [0.5, np.nan]},
        geometry=[poly, multi],
        crs=4326,
    )
    files = write_layer(gdf, tmp_path, "mixed")
    recs = {fmt: feature_records(read_layer(p)) for fmt, p in files.items()}
    assert recs["fgb"] == recs["geojson"] == recs["parquet"]
    assert recs["geojson"]["cw-000000000002"]["confidence"] is None
    assert json.loads(recs["fgb"]["cw-000000000002"]["geometry"])["type"] == "MultiPolygon"
    assert json.loads(recs["fgb"]["cw-000000000001"]["geometry"])["type"] == "Polygon"

    empty = gdf.iloc[:0]
    files = write_layer(empty, tmp_path, "empty")
    for p in files.values():
        assert len(read_layer(p)) == 0


def test_rank_flags_adds_rank_and_chip(run) -> None:
    shuffled = run.flags.iloc[[2, 0, 1]]
    ranked = rank_flags(shuffled)
    assert list(ranked["confidence"]) == [0.9, 0.7, 0.5]
    assert list(ranked["rank"]) == [1, 2, 3]
    assert list(ranked["chip"]) == [f"chips/{f}.png" for f in ranked["flag_id"]]
    assert list(ranked.columns)[-3:] == ["rank", "chip", "geometry"]


def test_period_labels() -> None:
    assert period_label(dt.date(2021, 6, 30)) == "2021H1"
    assert period_label(dt.date(2021, 7, 1)) == "2021H2"
    assert period_label(dt.date(2021, 7, 1), "year") == "2021"
    assert period_labels(dt.date(2020, 6, 1), dt.date(2021, 7, 1)) == ["2020H1", "2020H2", "2021H1", "2021H2"]
    assert period_labels(dt.date(2020, 6, 1), dt.date(2021, 7, 1), "year") == ["2020", "2021"]
    with pytest.raises(ConfigError):
        period_label(dt.date(2021, 1, 1), "month")  # type: ignore[arg-type]


def test_site_summary_values(run) -> None:
    other = Site("quiet-site", "Quiet <b>site</b>", box(10, 10, 10.01, 10.01), control=True)
    summary = site_summary(
        run.flags,
        [run.site, other],
        start=dt.date(2021, 1, 1),
        end=dt.date(2021, 12, 31),
        latest_clear={SITE_ID: dt.date(2021, 8, 20)},
    )
    assert summary.crs.to_epsg() == 4326
    assert list(summary["site_id"]) == [SITE_ID, "quiet-site"]
    s, q = summary.iloc[0], summary.iloc[1]
    # flags: 14400 m² appeared 2021-05-15 (H1), 19600 m² 2021-08-13 (H2), 16000 m² 2021-03-16 (H1)
    assert s["n_flags"] == 3
    assert s["area_added_m2"] == pytest.approx(50000.0)
    assert s["added_m2_2021H1"] == pytest.approx(30400.0)
    assert s["added_m2_2021H2"] == pytest.approx(19600.0)
    assert s["first_change_date"] == "2021-03-16" and s["last_change_date"] == "2021-08-13"
    assert s["latest_clear_date"] == "2021-08-20" and s["last_period"] == "2021H2"
    assert s["construction_ongoing"] == "yes"
    assert q["n_flags"] == 0 and q["area_added_m2"] == 0 and q["construction_ongoing"] == "no"
    assert pd.isna(q["latest_clear_date"]) and q["last_period"] == "2021H2"  # run end when unknown
    assert q["name"] == "Quiet <b>site</b>" and bool(q["control"]) is True
    assert summary.geometry.iloc[0].equals(run.site.geometry)

    # nothing appeared in the last period -> "no"
    later = site_summary(
        run.flags,
        [run.site],
        start=dt.date(2021, 1, 1),
        end=dt.date(2022, 12, 31),
        latest_clear={SITE_ID: dt.date(2022, 3, 1)},
        period="year",
    )
    assert later.iloc[0]["last_period"] == "2022"
    assert later.iloc[0]["added_m2_2021"] == pytest.approx(50000.0)
    assert later.iloc[0]["construction_ongoing"] == "no"


def test_summary_layer_writes_in_all_formats(run, tmp_path: Path) -> None:
    summary = site_summary(run.flags, [run.site], start=dt.date(2021, 1, 1), end=dt.date(2021, 12, 31))
    files = write_layer(summary, tmp_path, "site_summary")
    recs = {fmt: feature_records(read_layer(p)) for fmt, p in files.items()}
    assert recs["fgb"] == recs["geojson"] == recs["parquet"]
    assert recs["parquet"][SITE_ID]["n_flags"] == 3
    assert isinstance(read_layer(files["fgb"]).geometry.iloc[0], Polygon)


def test_stac_catalog_describes_outputs(run, tmp_path: Path) -> None:
    out = tmp_path / "out"
    ranked = rank_flags(run.flags)
    layers = {"flags": write_layer(ranked, out, "flags")}
    chip = out / "chips" / f"{ranked['flag_id'].iloc[0]}.png"
    chip.parent.mkdir(parents=True)
    chip.write_bytes(b"\x89PNG\r\n\x1a\n")
    tiles = {SITE_ID: tmp_path / "tiles" / f"{SITE_ID}.zarr"}
    cat_path = write_stac(
        out,
        flags=ranked,
        sites=[run.site],
        settings=run.settings,
        layers=layers,
        chips={ranked["flag_id"].iloc[0]: chip},
        tiles=tiles,
    )
    assert cat_path == out / "stac" / "catalog.json"
    cat = pystac.Catalog.from_file(str(cat_path))
    items = {i.id: i for i in cat.get_items(recursive=True)}
    assert set(items) == {"flags", f"site-{SITE_ID}"}
    flags_item = items["flags"]
    assert set(flags_item.assets) == {"geojson", "fgb", "parquet"}
    assert flags_item.properties["compoundwatch:params_hash"] == ranked["params_hash"].iloc[0]
    assert flags_item.properties["compoundwatch:n_features"] == 3
    assert flags_item.assets["fgb"].media_type == "application/vnd.flatgeobuf"
    for item in items.values():
        for asset in item.assets.values():
            assert not Path(asset.href).is_absolute()  # self-contained: relative hrefs
    assert (
        Path(flags_item.assets["parquet"].get_absolute_href()).resolve()
        == layers["flags"]["parquet"].resolve()
    )
    site_item = items[f"site-{SITE_ID}"]
    assert Path(site_item.assets["tiles"].get_absolute_href()).resolve() == tiles[SITE_ID].resolve()
    assert f"chip-{ranked['flag_id'].iloc[0]}" in site_item.assets
    scenes = site_item.properties["compoundwatch:scenes"]
    assert scenes and all(s.startswith("TEST_MSIL2A_") for s in scenes)
    assert site_item.properties["start_datetime"].startswith(str(run.settings.fetch.start))
