"""``compoundwatch watch`` through ``dvc repro`` on simulated new imagery (one small synthetic site).

The synthetic world is planned up to ``synthetic.horizon`` (2023-09-30); the first watch sees the scenes up to
2022-09-30, the second moves ``fetch.end`` to the horizon. The generator's own truth says what was built in
between: T3, a new compound (2023-03-15), and T1 (2022-12-20), an expansion beside T2, which was there already
(2021-10-22) and flagged by the first watch. So the second watch must report T3 as **new** and the flag over
T2 + T1 as **grown** from the first watch's T2 flag, and nothing else; a third watch changes no file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from shapely.geometry import shape
from small_project import SMALL_SITES, make_dvc_project
from typer.testing import CliRunner

from pipeline.cli import app

pytestmark = pytest.mark.slow

SITE = SMALL_SITES[0][0]


def _files(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))
            if p.is_file() and ".dvc/tmp" not in str(p) and "/.dvc/cache" not in f"/{p.relative_to(root)}"}


def _watch(project: Path, *args: str) -> str:
    res = CliRunner().invoke(app, ["watch", "-C", str(project), *args])
    assert res.exit_code == 0, res.output
    return res.stdout


def test_watch_alerts_on_new_imagery_only_then_nothing(tmp_path: Path) -> None:
    project = make_dvc_project(tmp_path / "proj", sites=(SMALL_SITES[0],))
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["synthetic"]["horizon"] = "2023-09-30"
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    state = project / "published"

    first = _watch(project)
    assert "(first watch: every flag is new)" in first
    base = json.loads((state / (state / "LATEST").read_text().strip() / "manifest.json").read_text())
    assert base["imagery_until"] <= "2022-09-30" and base["n_new"] == base["n_flags"] >= 1

    second = _watch(project, "--end", "2023-09-30")
    run_id = (state / "LATEST").read_text().strip()
    assert run_id.startswith("0002-2023-09") and f"since {base['run_id']}" in second
    alerts = json.loads((state / run_id / "alerts.geojson").read_text())["features"]
    truth = {f["properties"]["truth_id"]: (f["properties"]["appeared_before"], shape(f["geometry"]))
             for f in json.loads((project / "data" / "truth" / f"{SITE}.geojson").read_text())["features"]}
    assert {k: v[0] for k, v in truth.items()} == {"T1": "2022-12-20", "T2": "2021-10-22", "T3": "2023-03-15"}
    first_flags = json.loads((state / base["run_id"] / "flags.geojson").read_text())["features"]

    def hits(feat: dict) -> set[str]:  # truth polygons it shares area with (1e-12 deg² ≈ 0.01 m²)
        return {tid for tid in truth if shape(feat["geometry"]).intersection(truth[tid][1]).area > 1e-12}

    t2_flags = [f["properties"]["flag_id"] for f in first_flags if "T2" in hits(f)]
    assert len(t2_flags) == 1 and all(hits(f) == {"T2"} for f in first_flags)
    by_kind = {(f["properties"]["alert"], frozenset(hits(f))) for f in alerts}
    assert by_kind == {("new", frozenset({"T3"})), ("grown", frozenset({"T1", "T2"}))}
    grown = next(f["properties"] for f in alerts if f["properties"]["alert"] == "grown")
    assert grown["previous_flag_ids"] == t2_flags[0]
    truth_file = project / "data" / "truth" / f"{SITE}.geojson"
    t1_m2 = next(f["properties"]["area_m2"] for f in json.loads(truth_file.read_text())["features"]
                 if f["properties"]["truth_id"] == "T1")
    assert grown["growth_m2"] == pytest.approx(grown["area_m2"] - grown["previous_area_m2"], abs=0.01)
    assert grown["growth_m2"] == pytest.approx(t1_m2, rel=0.25)  # what grew is about T1's area
    assert all(f["properties"]["site_id"] == SITE for f in alerts)

    before = _files(project)
    third = _watch(project, "--end", "2023-09-30")
    assert f"nothing new since watch run {run_id}" in third
    assert _files(project) == before
