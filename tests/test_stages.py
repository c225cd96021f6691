"""Stage modules (pipeline.stages.*) and the zarr helpers (pipeline.io), run in-process on one small site."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml
from pyproj import CRS
from shapely.geometry import box, shape
from small_project import SMALL_SITES, small_params, write_sites

from pipeline.config import load_settings
from pipeline.errors import InputFileError, InvalidAOIError
from pipeline.io import read_cube, write_cube
from pipeline.publish.geojson import validate_rfc7946
from pipeline.publish.mappage import install_web_assets
from pipeline.stages import detect, evaluate, fetch, flag, publish, tile

REPO = Path(__file__).resolve().parents[1]
SITE = SMALL_SITES[0][0]  # the expanding (non-control) site


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tmp working dir with a one-site sites file and small params.yaml."""
    write_sites(tmp_path / "sites.geojson", SMALL_SITES[:1])
    params = small_params(REPO / "params.yaml", "sites.geojson", [SITE])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_stage_chain_on_one_site(project: Path) -> None:
    settings = load_settings("params.yaml")
    d = project / "data"

    # fetch: scene cube on the site's UTM grid + truth in WGS84
    f = fetch.run(SITE, d / "raw" / f"{SITE}.zarr", d / "truth" / f"{SITE}.geojson", settings)
    raw = read_cube(d / "raw" / f"{SITE}.zarr")
    assert f.n_dates == raw.sizes["time"] >= 20
    assert (raw.sizes["y"], raw.sizes["x"]) == f.shape
    assert 110 <= f.shape[0] <= 130 and 110 <= f.shape[1] <= 130  # 1.2 km at 10 m
    assert raw["reflectance"].dtype == np.uint16 and raw["scl"].dtype == np.uint8
    assert raw.rio.crs.to_epsg() == 32645  # UTM 45N at 88.3° E
    assert set(raw["boa_add_offset"].values) <= {0, -1000}
    assert all(str(s).endswith(SITE) for s in raw["scene_id"].values)
    truth = json.loads((d / "truth" / f"{SITE}.geojson").read_text())
    assert truth["type"] == "FeatureCollection" and len(truth["features"]) == f.n_truth >= 1
    site_box = box(88.30, 43.36, 88.3149, 43.3708)
    for feat in truth["features"]:
        assert site_box.buffer(1e-3).contains(shape(feat["geometry"]))  # lon/lat degrees inside the site

    # tile: harmonised float32 reflectance + clear mask, 64 px chunks
    t = tile.run(d / "raw" / f"{SITE}.zarr", d / "tiles" / f"{SITE}.zarr", settings)
    tiles = read_cube(d / "tiles" / f"{SITE}.zarr")
    assert tiles["reflectance"].dtype == np.float32 and tiles["clear"].dtype == bool
    assert tiles["reflectance"].chunks[2][0] == 64 and tiles["reflectance"].chunks[3][0] == 64
    assert t.n_tiles == 4 and t.n_dates == f.n_dates and 0.3 < t.clear_fraction <= 1.0
    assert "boa_add_offset" not in tiles.coords
    med = float(np.nanmedian(tiles["reflectance"].sel(band="B04").where(tiles["clear"]).values))
    assert 0.05 < med < 0.5  # reflectance 0-1, offset removed
    assert tiles.rio.crs == raw.rio.crs

    # detect: detection contract on the same grid
    r = detect.run(d / "tiles" / f"{SITE}.zarr", d / "detect" / f"{SITE}.zarr", settings)
    det = read_cube(d / "detect" / f"{SITE}.zarr")
    for var in ("change", "score", "confidence", "break_index", "after_index", "clear_fraction", "clear"):
        assert var in det.data_vars
    assert det["change"].dtype == bool and det["break_index"].dtype == np.int16
    np.testing.assert_array_equal(det["x"].values, raw["x"].values)
    assert det.rio.crs == raw.rio.crs
    assert r.changed_px == int(det["change"].sum()) > 0
    assert r.changed_m2 == pytest.approx(100.0 * r.changed_px)

    # flag: ranked WGS84 polygons of at least min_area_m2
    fl = flag.run(SITE, d / "detect" / f"{SITE}.zarr", d / "flags" / f"{SITE}.geojson", settings)
    flags = json.loads((d / "flags" / f"{SITE}.geojson").read_text())["features"]
    assert len(flags) == fl.n_flags >= 1
    conf = [ft["properties"]["confidence"] for ft in flags]
    assert conf == sorted(conf, reverse=True)
    assert all(ft["properties"]["area_m2"] >= settings.flag.min_area_m2 for ft in flags)
    assert all(ft["properties"]["site_id"] == SITE for ft in flags)
    assert fl.area_m2 == pytest.approx(sum(ft["properties"]["area_m2"] for ft in flags))

    # publish: merged layer + one per site
    install_web_assets()  # the map page copies MapLibre from web/node_modules (npm ci --prefix web)
    p = publish.run(d / "flags", d / "tiles", d / "out", settings)
    doc = json.loads((d / "out" / "flags.geojson").read_text())
    assert validate_rfc7946(doc) == []  # WGS84 ranges, CCW exteriors, closed rings, valid geometries
    assert validate_rfc7946(json.loads((d / "flags" / f"{SITE}.geojson").read_text())) == []
    merged = doc["features"]
    assert p.n_flags == {SITE: len(flags)} and len(merged) == len(flags)
    assert (d / "out" / "sites" / f"{SITE}.geojson").is_file()
    for name in ("flags.fgb", "flags.parquet", "compoundwatch.pmtiles", "index.html", "stac/catalog.json"):
        assert (d / "out" / name).is_file(), name
    assert {f"{ft['properties']['flag_id']}.png" for ft in merged} == {p.name for p in (d / "out" / "chips").iterdir()}

    # evaluate: metrics.json keys and a 20-row PR curve
    m = evaluate.run(d / "flags", d / "truth", d / "detect", project / "metrics.json",
                     d / "eval" / "pr_curve.csv", settings)
    on_disk = json.loads((project / "metrics.json").read_text())
    assert on_disk == m
    for key in ("object_recall", "object_precision", "pixel_f1", "control_site_flags", "n_flags", "n_truth"):
        assert key in m
    assert m["n_flags"] == len(flags) and m["n_truth"] <= f.n_truth and m["control_site_flags"] == 0
    assert 0 < m["object_recall"] <= 1 and 0 < m["object_precision"] <= 1 and 0 < m["pixel_f1"] <= 1
    assert m["per_site"][SITE]["control"] is False
    rows = list(csv.DictReader((d / "eval" / "pr_curve.csv").open()))
    assert [float(r["threshold"]) for r in rows] == pytest.approx([0.05 * i for i in range(20)])
    assert float(rows[0]["recall"]) == pytest.approx(m["object_recall"], abs=1e-3)
    recalls = [float(r["recall"]) for r in rows]
    assert recalls == sorted(recalls, reverse=True)  # fewer flags kept, never more found


def test_fetch_unknown_site(project: Path) -> None:
    with pytest.raises(InvalidAOIError, match="'nowhere' is not in"):
        fetch.run("nowhere", project / "raw.zarr", project / "truth.geojson", load_settings("params.yaml"))
    assert not (project / "raw.zarr").exists()


def test_publish_names_missing_flag_layers(project: Path) -> None:
    with pytest.raises(InputFileError, match=f"{SITE}.geojson"):
        publish.run(project / "nowhere", project / "tiles", project / "out", load_settings("params.yaml"))


def test_stage_main_prints_one_error_line(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = tile.main([str(project / "missing.zarr"), str(project / "t.zarr")])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.startswith("error: ") and "missing.zarr" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------- pipeline.io
def _cube() -> xr.Dataset:
    rng = np.random.default_rng(0)
    y = 4_800_005.0 - 10.0 * np.arange(40)
    x = 600_005.0 + 10.0 * np.arange(50)
    ds = xr.Dataset(
        {
            "reflectance": (("time", "band", "y", "x"), rng.integers(1, 5000, (3, 2, 40, 50), "uint16")),
            "scl": (("time", "y", "x"), np.full((3, 40, 50), 4, "uint8")),
        },
        coords={
            "time": np.array(["2021-01-01", "2021-02-01", "2022-03-01"], dtype="datetime64[ns]"),
            "band": ["B02", "B03"],
            "y": y,
            "x": x,
            "boa_add_offset": ("time", np.array([0, 0, -1000], "int32")),
            "scene_id": ("time", np.array(["S1", "S2", "S3"])),
        },
    )
    return ds.rio.write_crs(32645)


def test_write_read_cube_round_trip(tmp_path: Path) -> None:
    ds = _cube()
    path = write_cube(ds, tmp_path / "c.zarr", tile_size=32)
    back = read_cube(path)
    assert back["reflectance"].chunks == ((3,), (2,), (32, 8), (32, 18))  # time/band whole, y/x in tiles
    assert back.rio.crs == CRS.from_epsg(32645)
    assert back.rio.transform() == ds.rio.transform()
    assert "spatial_ref" in back.coords
    np.testing.assert_array_equal(back["reflectance"].values, ds["reflectance"].values)
    assert list(back["scene_id"].values) == ["S1", "S2", "S3"]
    assert list(back["boa_add_offset"].values) == [0, 0, -1000]
    assert back["reflectance"].dtype == np.uint16
    assert not (tmp_path / "c.zarr.tmp").exists()


def test_write_cube_replaces_existing_store(tmp_path: Path) -> None:
    path = tmp_path / "c.zarr"
    write_cube(_cube(), path)
    write_cube(_cube().isel(time=[0]).drop_vars("scl"), path)
    back = read_cube(path)
    assert back.sizes["time"] == 1 and "scl" not in back


def test_write_cube_keeps_crs_of_a_loaded_subset(tmp_path: Path) -> None:
    sub = read_cube(write_cube(_cube(), tmp_path / "a.zarr")).isel(time=0, band=0).load()
    back = read_cube(write_cube(sub, tmp_path / "b.zarr"))
    assert back.rio.crs.to_epsg() == 32645 and back["reflectance"].dims == ("y", "x")


def test_read_cube_missing_path_hints_at_dvc(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="dvc repro"):
        read_cube(tmp_path / "absent.zarr")
