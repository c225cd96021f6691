"""Watch mode (:mod:`pipeline.watch`, ``compoundwatch watch --no-run``): new and grown flags only, the
versioned state, the digest, a valid Atom feed with stable ids, and a second run that changes no file.

Layers are written by hand here (known polygons and areas), so every expected alert is known in advance;
``tests/test_watch_dvc.py`` runs the same command through ``dvc repro`` on simulated new imagery.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml
from shapely.geometry import box, mapping
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.publish.geojson import validate_rfc7946
from pipeline.watch import GrowthRule, compare_flags, record_watch, with_fetch_end
from pipeline.watch.report import ATOM_NS, entry_id

REPO = Path(__file__).resolve().parents[1]
D = 0.001  # about 80 m × 110 m at 43° N
A = {"type": "Atom"}


def _flag(fid: str, site: str, x: float, y: float, w: float, h: float, area: float, conf: float = 0.8
          ) -> dict[str, Any]:
    return {"type": "Feature", "id": fid, "properties": {
        "flag_id": fid, "site_id": site, "area_m2": area, "appeared_after": "2022-01-01",
        "appeared_before": "2022-02-01", "confidence": conf, "rank": 1},
        "geometry": mapping(box(88.3 + x * D, 43.36 + y * D, 88.3 + (x + w) * D, 43.36 + (y + h) * D))}


def _layer(path: Path, feats: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}, separators=(",", ":")) + "\n")
    return path


def _summary(path: Path, latest: str) -> Path:
    return _layer(path, [{"type": "Feature", "properties": {"site_id": "s1", "latest_clear_date": latest},
                          "geometry": mapping(box(88.29, 43.35, 88.32, 43.38))}])


PREVIOUS = [
    _flag("a", "s1", 0, 0, 2, 2, 10_000),
    _flag("b", "s1", 5, 0, 2, 2, 20_000),
    _flag("c", "s2", 20, 20, 1, 1, 5_000),
]
CURRENT = [
    _flag("a2", "s1", 0, 0, 2, 2.05, 10_400),      # redrawn a little larger: +4 %, not grown
    _flag("b2", "s1", 5, 0, 3, 3, 35_000),         # overlaps b and grew by 15,000 m² (+75 %): grown
    _flag("d", "s1", 10, 10, 1, 1, 6_000),         # overlaps nothing: new
    _flag("e", "s1", 2, 0, 1, 2, 7_000),           # shares only an edge with a: new
    _flag("f", "s3", 0, 0, 2, 2, 9_000),           # overlaps a, but at another site: new
]


def _read(path: Path) -> Any:
    from pipeline.publish.geojson import read_geojson

    return read_geojson(path)


def test_compare_flags_new_and_grown_only(tmp_path: Path) -> None:
    prev = _read(_layer(tmp_path / "p.geojson", PREVIOUS))
    cur = _read(_layer(tmp_path / "c.geojson", CURRENT))
    alerts = compare_flags(prev, cur)
    assert list(alerts["flag_id"]) == ["b2", "d", "e", "f"]
    assert list(alerts["alert"]) == ["grown", "new", "new", "new"]
    grown = alerts.iloc[0]
    assert (grown["previous_area_m2"], grown["area_m2"], grown["growth_m2"]) == (20_000, 35_000, 15_000)
    assert grown["previous_flag_ids"] == "b"
    assert alerts["previous_area_m2"].iloc[1:].isna().all() and alerts.crs.to_epsg() == 4326
    # the thresholds: a 16,000 m² minimum gain makes b2 unchanged
    assert "b2" not in set(compare_flags(prev, cur, GrowthRule(min_growth_m2=16_000))["flag_id"])
    # the first watch: every flag is new
    assert list(compare_flags(cur.iloc[0:0], cur)["alert"]) == ["new"] * 5


def _files(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file's bytes and mtime (ns), but the run lock in .dvc/tmp (taken and released by every command)."""
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))
            if p.is_file() and ".dvc/tmp" not in str(p)}


def test_record_watch_versions_runs_and_a_second_run_changes_nothing(tmp_path: Path) -> None:
    out, state = tmp_path / "out", tmp_path / "published"
    flags, summary = out / "flags.geojson", out / "site_summary.geojson"
    t0 = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)

    _layer(flags, PREVIOUS)
    _summary(summary, "2023-06-27")
    first = record_watch(flags, summary, state, now=t0)
    assert first.changed and (first.n_new, first.n_grown) == (3, 0) and first.previous_run_id is None
    assert (state / "LATEST").read_text() == "0001-2023-06-27\n"
    assert (state / "0001-2023-06-27" / "flags.geojson").read_bytes() == flags.read_bytes()

    # newer imagery: b grew, d/e/f are new, c is gone
    _layer(flags, CURRENT)
    _summary(summary, "2023-09-18")
    second = record_watch(flags, summary, state, now=t0 + dt.timedelta(days=90))
    assert second.changed and (second.n_new, second.n_grown) == (3, 1)
    run = state / "0002-2023-09-18"
    assert (state / "LATEST").read_text() == "0002-2023-09-18\n"
    alerts = json.loads((run / "alerts.geojson").read_text())
    assert validate_rfc7946(alerts) == []
    assert [(f["properties"]["flag_id"], f["properties"]["alert"]) for f in alerts["features"]] == [
        ("b2", "grown"), ("d", "new"), ("e", "new"), ("f", "new")]
    assert alerts["features"][0]["properties"]["previous_area_m2"] == 20_000
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["previous_run_id"] == "0001-2023-06-27" and manifest["gone_flag_ids"] == ["c"]
    assert manifest["published_at"] == "2024-04-01T03:04:05Z" and manifest["n_flags"] == 5
    digest = (run / "digest.md").read_text()
    assert "**3 new** and **1 grown** flag(s) since run 0001-2023-06-27" in digest
    assert "| grown | s1 | b2 | 35,000 | 20,000 |" in digest and "1 earlier flag(s) no longer flagged" in digest
    assert "not measurable at 10 m" in digest
    # the earlier run is kept as it was
    assert (state / "0001-2023-06-27" / "flags.geojson").read_text().count('"flag_id"') == 3

    # no newer imagery, same layer: nothing new, no file touched (bytes and mtimes)
    before = _files(tmp_path)
    third = record_watch(flags, summary, state, now=t0 + dt.timedelta(days=91))
    assert not third.changed and (third.n_new, third.n_grown) == (0, 0)
    assert third.previous_run_id == "0002-2023-09-18"
    assert _files(tmp_path) == before


def test_atom_feed_is_valid_and_its_ids_are_stable(tmp_path: Path) -> None:
    out, state = tmp_path / "out", tmp_path / "published"
    flags, summary = out / "flags.geojson", out / "site_summary.geojson"
    t0 = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    _layer(flags, PREVIOUS)
    _summary(summary, "2023-06-27")
    record_watch(flags, summary, state, now=t0, feed_key="k")
    ids_first = [e.findtext(f"{{{ATOM_NS}}}id") for e in ET.parse(state / "feed.atom").getroot()]
    _layer(flags, CURRENT)
    _summary(summary, "2023-09-18")
    record_watch(flags, summary, state, now=t0 + dt.timedelta(days=1), feed_key="k")
    root = ET.parse(state / "feed.atom").getroot()
    ns = {"a": ATOM_NS}
    assert root.tag == f"{{{ATOM_NS}}}feed"
    for tag in ("id", "title", "updated", "author/a:name"):
        assert root.find(f"a:{tag}", ns) is not None, tag
    assert root.findtext("a:updated", namespaces=ns) == "2024-01-03T03:04:05Z"
    entries = root.findall("a:entry", ns)
    assert len(entries) == 3 + 4
    rfc3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
    for e in entries:
        for tag in ("id", "title", "updated", "summary"):
            assert e.findtext(f"a:{tag}", namespaces=ns), tag
        assert rfc3339.match(e.findtext("a:updated", namespaces=ns) or "")
        assert e.find("a:link", ns).get("href", "").endswith("/alerts.geojson")  # type: ignore[union-attr]
    ids = [e.findtext("a:id", namespaces=ns) for e in entries]
    assert len(set(ids)) == len(ids) and all(i and i.startswith("urn:uuid:") for i in ids)
    # newest run first; the first run's entries keep their ids after the feed is rewritten
    assert ids[0] == entry_id("k", "0002-2023-09-18", "b2")
    assert entries[0].findtext("a:title", namespaces=ns) == "Grown flag at s1: 20,000 → 35,000 m² (+15,000 m²)"
    assert [i for i in ids if i in ids_first] == [i for i in ids_first if i and i.startswith("urn:uuid:") and
                                                   i != root.findtext("a:id", namespaces=ns)]


def test_with_fetch_end_keeps_comments() -> None:
    text = (REPO / "params.yaml").read_text()
    moved = with_fetch_end(text, dt.date(2024, 1, 31))
    diff = [(a, b) for a, b in zip(text.splitlines(), moved.splitlines()) if a != b]
    assert diff == [('  end: "2023-06-30"', '  end: "2024-01-31"')]
    assert yaml.safe_load(moved)["fetch"]["end"] == "2024-01-31"
    assert yaml.safe_load(with_fetch_end("fetch: {start: '2020-01-01'}\n", dt.date(2021, 1, 1)))["fetch"] == {
        "start": "2020-01-01", "end": "2021-01-01"}


# ------------------------------------------------------------------------------ the command, without DVC
@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder (dvc.yaml, .dvc/, params.yaml, sites) whose data/out holds a published layer."""
    from small_project import SMALL_SITES, small_params, write_sites

    proj = tmp_path / "proj"
    (proj / ".dvc").mkdir(parents=True)
    shutil.copy(REPO / "dvc.yaml", proj / "dvc.yaml")
    write_sites(proj / "configs" / "sites.geojson")
    params = small_params(REPO / "params.yaml", "configs/sites.geojson", [s[0] for s in SMALL_SITES])
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _layer(proj / "data" / "out" / "flags.geojson", PREVIOUS)
    _summary(proj / "data" / "out" / "site_summary.geojson", "2022-09-20")
    monkeypatch.chdir(proj)
    return proj


def test_cli_watch_no_run_then_nothing_new(project: Path) -> None:
    res = CliRunner().invoke(app, ["watch", "--no-run"])
    assert res.exit_code == 0, res.output
    assert "watch run 0001-2022-09-20 (imagery up to 2022-09-20): 3 new, 0 grown flag(s)" in res.stdout
    _layer(project / "data" / "out" / "flags.geojson", CURRENT)
    _summary(project / "data" / "out" / "site_summary.geojson", "2022-12-19")
    res = CliRunner().invoke(app, ["watch", "--no-run"])
    assert res.exit_code == 0, res.output
    assert "3 new, 1 grown flag(s) since 0001-2022-09-20" in res.stdout
    assert "grown s1 b2 35,000 m² (was 20,000 m²)" in res.stdout
    before = _files(project)
    res = CliRunner().invoke(app, ["watch", "--no-run"])
    assert res.exit_code == 0, res.output
    assert "nothing new since watch run 0002-2022-12-19" in res.stdout
    assert _files(project) == before
    help_text = CliRunner().invoke(app, ["watch", "--help"]).stdout
    assert "--end today" in help_text and "feed.atom" in help_text
