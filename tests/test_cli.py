"""The compoundwatch command line: help texts, one-line errors, paths shared with dvc.yaml."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from small_project import SMALL_SITES, small_params, write_sites
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.cli._common import Layout
from pipeline.cli.demo import summary_table
from pipeline.errors import ConfigError, InputFileError
from pipeline.stages.publish import MERGED_NAME, SITES_DIR

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()

COMMANDS = {
    "demo": ["--project-dir", "--verbose"],
    "run": ["--params", "--force", "--project-dir"],
    "fetch": ["--params", "SITES"],
    "tile": ["--params", "tile_size_px"],
    "detect": ["--params", "min_score"],
    "flag": ["--params", "min_area_m2"],
    "publish": ["--params", "flags.geojson"],
    "evaluate": ["--params", "metrics.json", "pr_curve.csv"],
}


@pytest.fixture
def in_repo(monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(REPO)
    return REPO


def _plain(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"\x1b\[[0-9;]*m", "", text))


def test_root_help_lists_every_command() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in [*COMMANDS, "--debug", "--version"]:
        assert name in result.stdout


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_command_help(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    text = _plain(result.stdout)
    for needle in COMMANDS[command]:
        assert needle.lower() in text.lower(), needle


def test_compare_is_registered() -> None:
    result = runner.invoke(app, ["compare", "--help"])
    assert result.exit_code == 0 and "BEFORE" in result.stdout and "--blockwise" in result.stdout


def test_debug_shows_the_traceback_for_compare_too(tmp_path: Path) -> None:
    args = ["compare", str(tmp_path / "missing.tif"), str(tmp_path / "also-missing"), "--out",
            str(tmp_path / "f.geojson")]
    plain = runner.invoke(app, args)
    assert plain.exit_code == 1 and isinstance(plain.exception, SystemExit)
    assert "missing.tif does not exist" in plain.stderr and "Traceback" not in plain.output
    debug = runner.invoke(app, ["--debug", *args])
    assert debug.exit_code == 1
    assert isinstance(debug.exception, InputFileError)  # raised through the handler, traceback shown


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.startswith("compoundwatch ")


def test_bad_params_file_is_one_line_error(in_repo: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("detect:\n  persistence: 2.0\n")
    result = runner.invoke(app, ["detect", "--params", str(bad)])
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "detect.persistence" in lines[0] and "Traceback" not in result.stderr


def test_invalid_yaml_and_missing_params(in_repo: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("detect: [\n")
    result = runner.invoke(app, ["fetch", "-p", str(bad)])
    assert result.exit_code == 1 and "not valid YAML" in result.stderr
    result = runner.invoke(app, ["publish", "-p", str(tmp_path / "absent.yaml")])
    assert result.exit_code == 1 and "absent.yaml not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_site_is_named(in_repo: Path) -> None:
    result = runner.invoke(app, ["fetch", "no-such-site"])
    assert result.exit_code == 1
    assert "unknown site(s) no-such-site" in result.stderr and "arid-compound" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_debug_shows_the_exception(in_repo: Path) -> None:
    result = runner.invoke(app, ["--debug", "tile", "no-such-site"])
    assert result.exit_code == 1
    assert isinstance(result.exception, ConfigError)


def test_missing_input_points_to_dvc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, tmp_path / name)
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["tile", "arid-compound"])
    assert result.exit_code == 1
    assert "data/raw/arid-compound.zarr not found" in result.stderr and "dvc repro" in result.stderr


def test_demo_outside_a_dvc_project(tmp_path: Path) -> None:
    result = runner.invoke(app, ["demo", "-C", str(tmp_path)])
    assert result.exit_code == 1 and "has no dvc.yaml" in result.stderr
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    result = runner.invoke(app, ["demo", "-C", str(tmp_path)])
    assert result.exit_code == 1 and "not a DVC project" in result.stderr


def test_run_never_installs_a_broken_params_file(tmp_path: Path) -> None:
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, tmp_path / name)
    (tmp_path / ".dvc").mkdir()
    before = (tmp_path / "params.yaml").read_text()
    bad = tmp_path / "other.yaml"
    bad.write_text("flag:\n  min_area_m2: -5\n")
    result = runner.invoke(app, ["run", "-C", str(tmp_path), "--params", str(bad)])
    assert result.exit_code == 1 and "flag.min_area_m2" in result.stderr
    assert (tmp_path / "params.yaml").read_text() == before
    assert not (tmp_path / "params.yaml.bak").exists()


def test_layout_matches_dvc_yaml() -> None:
    """The CLI's default paths are the ones the dvc.yaml stage commands use."""
    doc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    paths = next(v["paths"] for v in doc["vars"] if "paths" in v)
    layout = Layout.load(REPO)
    site = "arid-compound"

    def cmd(stage: str) -> str:
        text = " ".join(doc["stages"][stage].get("do", doc["stages"][stage])["cmd"].split())
        text = text.replace("${item}", site)
        return re.sub(r"\$\{paths\.(\w+)\}", lambda m: paths[m.group(1)], text)

    rel = lambda p: str(p.relative_to(REPO))  # noqa: E731
    assert cmd("fetch").endswith(f"{site} {rel(layout.raw_cube(site))} {rel(layout.truth_file(site))}")
    assert cmd("tile").endswith(f"{rel(layout.raw_cube(site))} {rel(layout.tile_cube(site))}")
    assert cmd("detect").endswith(f"{rel(layout.tile_cube(site))} {rel(layout.detect_cube(site))}")
    assert cmd("flag").endswith(f"{site} {rel(layout.detect_cube(site))} {rel(layout.flags_file(site))}")
    assert cmd("publish").endswith(f"{rel(layout.flags)} {rel(layout.tiles)} {rel(layout.out)}")
    outs = (layout.flags, layout.truth, layout.detect, layout.metrics, layout.pr_curve)
    assert cmd("evaluate").endswith(" ".join(rel(p) for p in outs))
    assert rel(layout.merged_flags) == f"{paths['out']}/{MERGED_NAME}"
    assert rel(layout.published_site(site)) == f"{paths['out']}/{SITES_DIR}/{site}.geojson"


def test_summary_table_reads_outputs(tmp_path: Path) -> None:
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"sites": ["a", "b"]}))
    layout = Layout.load(tmp_path)
    feats = [{"type": "Feature", "properties": {"area_m2": 5000.0}, "geometry": None}] * 2
    layout.published_site("a").parent.mkdir(parents=True)
    layout.published_site("a").write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    layout.published_site("b").write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    layout.metrics.write_text(json.dumps({
        "object_recall": 0.5, "object_precision": 1.0, "pixel_f1": 0.8, "control_site_flags": 0,
        "per_site": {"a": {"control": False, "object_recall": 0.5, "object_precision": 1.0, "n_truth": 2},
                     "b": {"control": True, "n_truth": 0}},
    }))
    from rich.console import Console

    console = Console(width=120, record=True)
    console.print(summary_table(tmp_path, tmp_path / "params.yaml"))
    text = console.export_text()
    assert re.search(r"a\s+│\s+2\s+│\s+10,000\s+│\s+100 %\s+│\s+50 %", text)
    assert re.search(r"b \(control\)\s+│\s+0\s+│\s+0\s+│\s+—\s+│\s+—", text)
    assert "pixel F1 0.80" in text

    # real imagery: no truth anywhere -> nothing is scored, the caption says so
    layout.metrics.write_text(json.dumps({
        "object_recall": 1.0, "object_precision": 0.0, "pixel_f1": 0.0, "control_site_flags": 0,
        "per_site": {"a": {"control": False, "object_precision": 0.0, "n_truth": 0},
                     "b": {"control": False, "n_truth": 0}},
    }))
    console = Console(width=120, record=True)
    console.print(summary_table(tmp_path, tmp_path / "params.yaml"))
    text = console.export_text()
    assert re.search(r"a\s+│\s+2\s+│\s+10,000\s+│\s+—\s+│\s+—", text)
    assert "no ground truth" in text and "0 %" not in text


def test_fetch_command_writes_the_dvc_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    write_sites(tmp_path / "sites.geojson")
    site_ids = [s[0] for s in SMALL_SITES]
    params = small_params(REPO / "params.yaml", "sites.geojson", site_ids)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["fetch", site_ids[1]])  # the control site: no truth polygons
    assert result.exit_code == 0, result.stderr
    layout = Layout.load(".")
    assert layout.raw_cube(site_ids[1]).is_dir() and not layout.raw_cube(site_ids[0]).exists()
    assert json.loads(layout.truth_file(site_ids[1]).read_text()) == {"type": "FeatureCollection", "features": []}
    assert f"{site_ids[1]}: " in result.stdout and "0 truth polygon(s)" in result.stdout
