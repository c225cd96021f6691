"""Dabancheng (real Sentinel-2, ../shared/data) through the whole pipeline with the shipped config."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest
from rasterio.features import rasterize
from shapely.geometry import Point

from pipeline.api import run_site
from pipeline.config import load_settings
from pipeline.flag import grid_transform
from pipeline.publish.geojson import to_feature_collection, validate_rfc7946

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "xinjiang_dabancheng"
# ASPI XJDP points (README of the shared folder): Facility #1 (No. 50) and #2 (No. 124)
FACILITY_1 = Point(88.289936, 43.383850)

pytestmark = [
    pytest.mark.shared_data,
    pytest.mark.skipif(not DATA.is_dir(), reason=f"shared Dabancheng scenes not found at {DATA}"),
]


def test_local_source_takes_dabancheng_to_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # the config's local.path is relative to the project root
    settings = load_settings("configs/dabancheng.yaml")
    run = run_site("dabancheng-1", settings)
    assert run.cube.sizes["time"] == 13  # 12 true-colour dates 2017-18 + the 2020 L2A scene
    assert list(run.cube["band"].values) == ["B02", "B03", "B04"]
    assert run.detection.rio.crs.to_epsg() == 32645
    assert len(run.flags) >= 1
    assert all(run.flags["area_m2"] >= settings.flag.min_area_m2)
    # the facility built in 2017-2018 is covered by a flag that appeared by the last 2018 date
    utm = run.flags.to_crs(32645)
    facility = gpd.GeoSeries([FACILITY_1], crs=4326).to_crs(32645).iloc[0]
    hits = run.flags[utm.distance(facility).values < 150]  # metres
    assert len(hits) >= 1
    # most of its changed pixels broke by the last 2018 date (the flag joins the 2018-2020 extension, whose
    # pixels break on the 2020 scene, so the flag's modal date may be 2020)
    inside = rasterize(hits.to_crs(32645).geometry, out_shape=run.detection["change"].shape,
                       transform=grid_transform(run.detection)).astype(bool) & run.detection["change"].values
    breaks = pd.DatetimeIndex(run.detection["time"].values)[run.detection["break_index"].values[inside]]
    assert (breaks <= "2018-10-11").mean() > 0.5
    assert validate_rfc7946(json.loads(json.dumps(to_feature_collection(run.flags)))) == []
