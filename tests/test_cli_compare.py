"""Tests for ``compoundwatch compare`` (pipeline.cli.compare over pipeline.compare) on generated scenes and on
OSCD ``bercy``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import typer
from shapely.geometry import shape
from typer.testing import CliRunner

from pipeline.cli import app as cli_app
from pipeline.grid import to_crs

OSCD = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "oscd"


@pytest.fixture
def app() -> typer.Typer:
    """The real command line: errors reach its one handler (pipeline.cli._App), as for every command."""
    return cli_app


@pytest.fixture(autouse=True)
def _no_params_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run in an empty folder: no params.yaml, so the built-in defaults apply."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)


def _invoke(app: typer.Typer, *args: object):
    return CliRunner().invoke(app, ["compare", *map(str, args)])


def _features(path: Path) -> list[dict]:
    return json.loads(path.read_text())["features"]


def _check_block_found(pair, change_tif: Path, flags: Path) -> None:
    with rasterio.open(change_tif) as src:
        assert (src.width, src.height) == pair.before_shape[::-1]
        assert src.crs.to_epsg() == pair.before_epsg
        assert src.transform.almost_equals(pair.before_transform)
        arr = src.read(1)
    assert set(np.unique(arr)) <= {0, 1, 255}
    block = arr[pair.block_rows, pair.block_cols]
    assert (block == 1).mean() >= 0.8
    # away from the block (3 px margin for resampling/misregistration blur) almost nothing changes
    far = np.ones(arr.shape, bool)
    r, c = pair.block_rows, pair.block_cols
    far[max(r.start - 3, 0) : r.stop + 3, max(c.start - 3, 0) : c.stop + 3] = False
    assert (arr[far] == 1).mean() < 0.01
    feats = _features(flags)
    assert len(feats) >= 1
    block_wgs84 = to_crs(pair.block, pair.before_epsg, 4326)
    assert any(shape(f["geometry"]).intersects(block_wgs84) for f in feats)
    in_utm = [to_crs(shape(f["geometry"]), 4326, pair.before_epsg) for f in feats]
    overlaps = [g.intersection(pair.block).area for g in in_utm]
    assert max(overlaps) >= 0.8 * pair.block.area
    props = feats[int(np.argmax(overlaps))]["properties"]
    assert props["appeared_after"] == "2020-06-10" and props["appeared_before"] == "2021-06-15"
    assert props["pre_scenes"] and props["post_scenes"]


def test_compare_across_utm_zones_finds_planted_block(app, tiny_scene_pair, tmp_path: Path) -> None:
    # BEFORE: GeoTIFF in EPSG:32631; AFTER: band folder in EPSG:32632 with B11/B12 at 20 m
    pair = tiny_scene_pair()
    flags, change = tmp_path / "out" / "flags.geojson", tmp_path / "out" / "change.tif"
    flags.parent.mkdir()  # --out in a missing folder is refused (tests/test_bad_input.py)
    res = _invoke(app, pair.before, pair.after, "--out", flags, "--change-raster", change)
    assert res.exit_code == 0, res.output
    assert "flag(s)" in res.output and str(flags) in res.output
    assert len(res.output.strip().splitlines()) == 1
    _check_block_found(pair, change, flags)


def test_compare_same_zone_coarser_after_grid(app, tiny_scene_pair, tmp_path: Path) -> None:
    # AFTER: one multiband GeoTIFF in the same zone, 20 m pixels and a different origin
    pair = tiny_scene_pair(after_epsg=32631, after_res=20.0, after_form="file")
    flags, change = tmp_path / "flags.geojson", tmp_path / "change.tif"
    res = _invoke(app, pair.before, pair.after, "--out", flags, "--change-raster", change,
                  "--bands", "B02,B03", "--bands", "B04,B08")
    assert res.exit_code == 0, res.output
    _check_block_found(pair, change, flags)


def test_compare_min_area_removes_flags(app, tiny_scene_pair, tmp_path: Path) -> None:
    pair = tiny_scene_pair()
    flags = tmp_path / "flags.geojson"
    res = _invoke(app, pair.before, pair.after, "--out", flags, "--min-area-m2", 1e7)
    assert res.exit_code == 0, res.output
    assert _features(flags) == []
    assert res.output.startswith("0 flag(s)")


def test_compare_unknown_dates_give_null(app, tiny_scene_pair, tmp_path: Path) -> None:
    pair = tiny_scene_pair(after_form="file")
    before, after = tmp_path / "first.tif", tmp_path / "second.tif"
    shutil.copy(pair.before, before)
    shutil.copy(pair.after, after)
    flags = tmp_path / "flags.geojson"
    res = _invoke(app, before, after, "--out", flags)
    assert res.exit_code == 0, res.output
    feats = _features(flags)
    assert feats
    props = feats[0]["properties"]
    assert props["appeared_after"] is None and props["appeared_before"] is None
    assert (props["pre_scenes"], props["post_scenes"]) == ("first", "second")


def _assert_one_line_error(res, *fragments: str) -> None:
    assert res.exit_code != 0
    assert isinstance(res.exception, SystemExit)
    text = res.output.strip()
    assert "Traceback" not in text
    assert len(text.splitlines()) == 1, text
    for frag in fragments:
        assert frag in text


def test_compare_missing_before(app, tiny_scene_pair, tmp_path: Path) -> None:
    pair = tiny_scene_pair()
    res = _invoke(app, tmp_path / "missing.tif", pair.after, "--out", tmp_path / "f.geojson")
    _assert_one_line_error(res, "error", "missing.tif does not exist")
    assert not (tmp_path / "f.geojson").exists()


def test_compare_text_file_as_before(app, tiny_scene_pair, tmp_path: Path) -> None:
    pair = tiny_scene_pair()
    text = tmp_path / "before.tif"
    text.write_text("this is not an image\n" * 20)
    res = _invoke(app, text, pair.after, "--out", tmp_path / "f.geojson")
    _assert_one_line_error(res, "is not a raster GDAL can read")


def test_compare_bad_bands_and_params(app, tiny_scene_pair, tmp_path: Path) -> None:
    pair = tiny_scene_pair()
    res = _invoke(app, pair.before, pair.after, "--out", tmp_path / "f.geojson", "--bands", "B02,B03")
    _assert_one_line_error(res, "B04")
    res = _invoke(
        app, pair.before, pair.after, "--out", tmp_path / "f.geojson", "--params", tmp_path / "nope.yaml"
    )
    _assert_one_line_error(res, "nope.yaml")


def test_compare_help_explains_both_forms(app) -> None:
    res = CliRunner().invoke(app, ["compare", "--help"], terminal_width=120)
    assert res.exit_code == 0
    for frag in ("multiband GeoTIFF", "folder of single-band files", "--change-raster", "--bands", "--out"):
        assert frag in res.output


@pytest.mark.shared_data
def test_compare_oscd_bercy(app, tmp_path: Path) -> None:
    city = OSCD / "images" / "bercy"
    label = OSCD / "train_labels" / "bercy" / "cm" / "bercy-cm.tif"
    if not (city / "imgs_1").is_dir() or not (city / "imgs_2").is_dir() or not label.is_file():
        pytest.skip(f"OSCD bercy not found under {OSCD.resolve()} (shared data absent)")
    flags, change = tmp_path / "bercy.geojson", tmp_path / "bercy-change.tif"
    res = _invoke(app, city / "imgs_1", city / "imgs_2", "--out", flags, "--change-raster", change)
    assert res.exit_code == 0, res.output
    with rasterio.open(label) as lab, rasterio.open(change) as src:
        assert (src.width, src.height) == (lab.width, lab.height)
        assert src.crs.to_epsg() == 4326  # BEFORE's (imgs_1) grid
        arr = src.read(1)
    assert set(np.unique(arr)) <= {0, 1, 255}
    assert (arr != 255).mean() > 0.95
    doc = json.loads(flags.read_text())
    assert doc["type"] == "FeatureCollection"
    for f in doc["features"]:
        assert f["properties"]["area_m2"] >= 5000
        lon, lat = shape(f["geometry"]).centroid.coords[0]
        assert 2.35 < lon < 2.41 and 48.82 < lat < 48.87  # in Paris (Bercy)
