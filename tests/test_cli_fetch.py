"""`compoundwatch fetch --source sentinelhub` end to end against the loopback Sentinel Hub fake."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest
import yaml
from fakes.sentinelhub_api import PROCESS_PATH, FakeScene, FakeSentinelHub
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.io import read_cube

REPO = Path(__file__).resolve().parents[1]
CLIENT_ID, CLIENT_SECRET = "cli-client-42", "cli-secret-do-not-print"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SH_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("SH_CLIENT_SECRET", CLIENT_SECRET)
    monkeypatch.delenv("SH_PROFILE", raising=False)
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # loopback token URL is plain http
    scenes = [
        FakeScene(dt.date(2021, 5, 3), "S2A_MSIL2A_20210503T050000_N0300_R019_T45TVK", 5.0),
        FakeScene(dt.date(2022, 5, 8), "S2B_MSIL2A_20220508T050000_N0400_R019_T45TVK", 9.0),
    ]
    with FakeSentinelHub(CLIENT_ID, CLIENT_SECRET, scenes) as fake:
        shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
        ring = [[88.30, 43.36], [88.305, 43.36], [88.305, 43.363], [88.30, 43.363], [88.30, 43.36]]
        sites = {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"site_id": "s1"},
                                                            "geometry": {"type": "Polygon", "coordinates": [ring]}}]}
        (tmp_path / "sites.geojson").write_text(json.dumps(sites))
        params = {
            "sites": ["s1"], "sites_file": "sites.geojson",
            "fetch": {"source": "synthetic", "start": "2021-01-01", "end": "2022-12-31",
                      "bands": ["B02", "B04", "B08"]},
            "sentinelhub": {"base_url": fake.url, "token_url": fake.token_url, "backoff": 0.0,
                            "cache_dir": str(tmp_path / "cache")},
        }
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        monkeypatch.chdir(tmp_path)
        yield fake, tmp_path


def test_fetch_sentinelhub_dry_run_then_fetch(project) -> None:
    fake, root = project
    runner = CliRunner()
    dry = runner.invoke(app, ["fetch", "--source", "sentinelhub", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "2 scene date(s) found" in dry.output and "PU" in dry.output
    assert fake.requests_to(PROCESS_PATH) == []  # a dry run downloads nothing
    assert not (root / "data" / "raw").exists()

    res = runner.invoke(app, ["fetch", "--source", "sentinelhub"])
    assert res.exit_code == 0, res.output
    assert len(fake.requests_to(PROCESS_PATH)) == 2
    cube = read_cube(root / "data" / "raw" / "s1.zarr")
    assert cube.sizes["time"] == 2 and list(cube["band"].values) == ["B02", "B04", "B08"]
    assert list(cube["boa_add_offset"].values) == [0, -1000]
    assert cube.rio.crs.to_epsg() == 32645
    for text in (dry.output, res.output):
        assert CLIENT_SECRET not in text and CLIENT_ID not in text


def test_fetch_stac_through_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fakes.stac_api import FakeStacApi
    from shapely.geometry import box, mapping
    from test_fetch_stac import EPSG, GRID, make_items

    from pipeline.grid import to_crs

    cogs = tmp_path / "cogs"
    cogs.mkdir()
    with FakeStacApi("sentinel-2-l2a", make_items(cogs), cogs, page_size=2) as api:
        left, bottom, right, top = GRID.bounds
        site = to_crs(box(left + 15, bottom + 15, right - 15, top - 15), EPSG, 4326)  # inside the COGs
        sites = {"type": "FeatureCollection",
                 "features": [{"type": "Feature", "properties": {"site_id": "s2"}, "geometry": mapping(site)}]}
        shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
        (tmp_path / "sites.geojson").write_text(json.dumps(sites))
        params = {
            "sites": ["s2"], "sites_file": "sites.geojson",
            "fetch": {"source": "synthetic", "start": "2021-10-01", "end": "2022-03-31",
                      "bands": ["B02", "B04", "B08"], "max_cloud_cover": 50},
            "stac": {"url": api.url, "collection": "sentinel-2-l2a", "backoff": 0.0},
        }
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        monkeypatch.chdir(tmp_path)
        res = CliRunner().invoke(app, ["fetch", "--source", "stac"])
        assert res.exit_code == 0, res.output
        cube = read_cube(tmp_path / "data" / "raw" / "s2.zarr")
        assert [str(t)[:10] for t in cube["time"].values] == ["2021-11-05", "2022-02-09", "2022-03-03"]
        assert cube.rio.crs.to_epsg() == EPSG and cube.sizes["band"] == 3
        assert int(cube["reflectance"].min()) >= 1000  # real DNs read over HTTP, no fill
