"""``compoundwatch scan`` says what it will do and what it does: the estimate first, ``--yes`` for long scans,
plain progress lines when stdout is not a terminal (CliRunner's stdout is not one)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from shapely.geometry import box, mapping
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import Settings
from pipeline.scan.estimate import CONFIRM_HOURS, estimate_scan

REPO = Path(__file__).resolve().parents[1]
XINJIANG = box(73.5, 34.3, 96.4, 49.2)


def test_estimate_of_a_small_and_a_huge_aoi() -> None:
    small = estimate_scan([("s", box(81.300, 43.900, 81.310, 43.905))], Settings(), tile_px=96, overlap_px=16)
    assert small.n_zones == 1 and 0.3 < small.area_km2 < 0.6 and not small.needs_confirmation
    assert small.n_dates == 38  # 2020-06-01 … 2023-06-30 every 30 days
    huge = estimate_scan([("xj", XINJIANG)], Settings())
    assert huge.needs_confirmation and huge.hours > 100 * CONFIRM_HOURS
    assert huge.n_zones == 5 and 2.5e6 < huge.area_km2 < 3.5e6  # the bounding box, not the region
    assert huge.n_tiles > huge.area_km2 / 5.12**2  # 512 px tiles of 10 m: 26 km² each
    assert re.search(r"about 3,\d{3},\d{3} km² and spans 5 UTM zones: about [\d,]+ tiles × 38 dates", huge.summary())


def test_huge_aoi_runs_nothing_without_yes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    aoi = tmp_path / "xj.geojson"
    aoi.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"site_id": "xinjiang"}, "geometry": mapping(XINJIANG)}]}))
    res = CliRunner().invoke(app, ["scan", str(aoi), "--resume-dir", str(tmp_path / "tiles")])
    assert res.exit_code == 1 and "rerun with --yes" in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml", "xj.geojson"]  # no tiles, no output


def test_scan_without_a_terminal_logs_one_line_per_tile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["fetch"].update(start="2020-06-01", end="2022-03-31")  # 22 monthly dates: enough, and quick
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    aoi = tmp_path / "aoi.geojson"
    aoi.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "Test Area"}, "geometry": mapping(box(81.300, 43.900, 81.310,
                                                                                          43.905))}]}))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "scan.geojson"
    res = CliRunner().invoke(app, ["scan", str(aoi), "--out", str(out), "--tile-px", "96", "--resume-dir",
                                   str(tmp_path / "tiles")])
    assert res.exit_code == 0, res.output
    assert res.stderr.startswith("scan: the AOI covers about 0 km² and lies in 1 UTM zone: about ")
    lines = res.stdout.strip().splitlines()
    stamp = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d scan \[ *\d+\.\d s\] "
    assert re.match(stamp + r"site test-area: 2 tile\(s\)$", lines[0]), lines
    assert re.match(stamp + r"site test-area: tile 1/2 32644_r\d+_c\d+ \d+ piece\(s\)$", lines[1]), lines
    assert re.match(stamp + r"site test-area: tile 2/2 ", lines[2]), lines
    assert re.match(stamp + r"site test-area: merging flags across tile seams$", lines[3]), lines
    assert re.match(r"^\d+ candidate\(s\), [\d,]+ m² → ", lines[4]) and len(lines) == 5
    assert json.loads(out.read_text())["type"] == "FeatureCollection"


def test_progress_without_a_terminal_prints_a_line_per_step(capsys: pytest.CaptureFixture[str]) -> None:
    """Every command's progress bars (evaluate oscd's cities, compare's blocks) become plain lines in a log."""
    from pipeline.cli._common import progress_bars

    with progress_bars("city") as bars:
        task = bars.add_task("LOCO folds", total=3, city="")
        bars.update(task, advance=0, city="paris …")  # the first step starts: one line says so
        bars.update(task, advance=0, city="paris …")  # nothing moved: no line
        bars.update(task, advance=1, city="paris")
        bars.advance(task)
    lines = capsys.readouterr().out.splitlines()
    stamp = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d \[ *\d+\.\d s\] LOCO folds "
    assert len(lines) == 3, lines
    assert re.match(stamp + r"0/3 paris …$", lines[0]) and re.match(stamp + r"1/3 paris$", lines[1])
    assert re.match(stamp + r"2/3 paris$", lines[2])


def test_huge_aoi_starts_with_yes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--yes starts the scan (the tile work itself is stubbed here) after printing the same estimate."""
    import geopandas as gpd

    import pipeline.scan.aoi as scan_aoi
    from pipeline.scan.seams import SCAN_COLUMNS

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    aoi = tmp_path / "xj.geojson"
    aoi.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"site_id": "xinjiang"}, "geometry": mapping(XINJIANG)}]}))
    started: list[Path] = []

    def fake_scan(aoi_path: Path, *args: object, **kw: object) -> gpd.GeoDataFrame:
        started.append(aoi_path)
        return gpd.GeoDataFrame({c: [] for c in SCAN_COLUMNS if c != "geometry"}, geometry=[], crs=4326)

    monkeypatch.setattr(scan_aoi, "scan", fake_scan)
    res = CliRunner().invoke(app, ["scan", str(aoi), "--yes", "--out", str(tmp_path / "xj-flags.geojson")])
    assert res.exit_code == 0, res.output
    assert started == [aoi]
    assert re.match(r"scan: the AOI covers about 3,\d{3},\d{3} km² and spans 5 UTM zones", res.stderr)
    assert json.loads((tmp_path / "xj-flags.geojson").read_text())["features"] == []
