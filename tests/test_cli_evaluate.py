"""``compoundwatch evaluate`` (the pipeline stage, as before) and ``compoundwatch evaluate oscd``."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import rasterio
from typer.testing import CliRunner

from fake_oscd import CITIES, write_fake_oscd
from pipeline.cli import app

runner = CliRunner()
NAMES = sorted(c.name for c in CITIES)


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fake_oscd(tmp_path_factory.mktemp("oscd"))


def _plain(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"\x1b\[[0-9;]*m", "", text))


def _one_error_line(result: Any) -> str:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_help_of_the_group_and_of_oscd() -> None:
    group = _plain(runner.invoke(app, ["evaluate", "--help"]).stdout)
    for needle in ("--params", "metrics.json", "pr_curve.csv", "oscd", "evaluate oscd [PATH]"):
        assert needle in group, needle
    result = runner.invoke(app, ["evaluate", "oscd", "--help"])
    assert result.exit_code == 0
    text = _plain(result.stdout)
    for needle in ("PATH", "../shared/data/oscd", "--out", "--plot", "--method", "learned|cva", "--band-set",
                   "--cities", "--from-report", "--trees", "leave-one-city-out"):
        assert needle in text, needle


def test_without_subcommand_runs_the_pipeline_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no params.yaml / dvc.yaml here: the stage says so, as before
    assert "params.yaml not found" in _one_error_line(runner.invoke(app, ["evaluate"]))
    assert "absent.yaml not found" in _one_error_line(runner.invoke(app, ["evaluate", "-p", "absent.yaml"]))
    # the subcommand does not run the stage (it needs neither file)
    line = _one_error_line(runner.invoke(app, ["evaluate", "oscd", str(tmp_path / "none")]))
    assert "none is not a folder" in line and ".yaml" not in line


def test_oscd_cva_subset_writes_metrics_and_plot(fake_root: Path, tmp_path: Path) -> None:
    out, png = tmp_path / "m.json", tmp_path / "f1.png"
    result = runner.invoke(app, ["evaluate", "oscd", str(fake_root), "--method", "cva", "--cities",
                                 "charlie,alpha", "--out", str(out), "--plot", str(png)])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert {"micro_f1", "macro_f1", "per_city", "baseline"} <= set(doc)
    assert list(doc["per_city"]) == ["alpha", "charlie"] and doc["method"] == "cva-otsu"
    assert doc["micro_f1"] >= 0.85  # the planted blocks (see test_oscd_eval)
    assert png.read_bytes()[:4] == b"\x89PNG"
    text = _plain(result.stdout)
    assert re.search(r"alpha │ 0\.\d{3} │", text) and "micro" in text and "macro" in text
    assert f"→ {out}" in text


def test_oscd_learned_loco(fake_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.json"
    result = runner.invoke(app, ["evaluate", "oscd", str(fake_root), "--trees", "10", "--out", str(out),
                                 "--band-set", "s2-4"])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["method"] == "lgbm-loco" and doc["band_set"] == "s2-4" and list(doc["per_city"]) == NAMES
    assert doc["learned"]["recipe"]["n_trees"] == 10
    assert doc["ratio_micro_f1_vs_baseline"] == pytest.approx(doc["micro_f1"] / doc["baseline"]["micro_f1"])
    assert doc["micro_f1"] >= 0.6
    text = _plain(result.stdout)
    assert "LOCO F1" in text and "strict" in text and "learned: s2-4, loco" in text and "vs 0." in text


def test_errors_are_one_line(fake_root: Path, tmp_path: Path) -> None:
    line = _one_error_line(runner.invoke(app, ["evaluate", "oscd", str(tmp_path / "absent")]))
    assert "absent is not a folder" in line
    line = _one_error_line(runner.invoke(app, ["evaluate", "oscd", str(tmp_path)]))
    assert "train_labels is missing" in line
    line = _one_error_line(runner.invoke(app, ["evaluate", "oscd", str(fake_root), "--cities", "beirut"]))
    assert "hold-out" in line
    line = _one_error_line(runner.invoke(app, ["evaluate", "oscd", str(fake_root), "--band-set", "rgb"]))
    assert "--band-set 'rgb' is unknown" in line
    line = _one_error_line(runner.invoke(app, ["evaluate", "oscd", str(fake_root), "--cities", "alpha"]))
    assert "at least 2 cities" in line
    line = _one_error_line(runner.invoke(app, ["evaluate", "oscd", str(fake_root), "--method", "cva",
                                               "--from-report", str(tmp_path / "r.json")]))
    assert "--from-report" in line
    args = ["--out", str(tmp_path / "o.json"), "--from-report", str(tmp_path / "r.json")]
    line = _one_error_line(runner.invoke(app, ["evaluate", "oscd", str(fake_root), *args]))
    assert "r.json not found" in line and not (tmp_path / "o.json").exists()


def test_oscd_from_report(fake_root: Path, tmp_path: Path) -> None:
    loco = {"sigma": 1.0, "threshold": 0.5, "adaptive": None,
            "per_city": {c: {"tp": 300, "fp": 20, "fn": 24} for c in NAMES},
            "strict": {"per_city": {c: {"tp": 290, "fp": 30, "fn": 34} for c in NAMES}}}
    report = tmp_path / "r.json"
    seconds = dict.fromkeys(NAMES, 9.0)
    report.write_text(json.dumps({"band_sets": {"s2-13": {"loco": loco, "loco_seconds_per_city": seconds}}}))
    out = tmp_path / "m.json"
    result = runner.invoke(app, ["evaluate", "oscd", str(fake_root), "--from-report", str(report),
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["micro_f1"] == 600 / 644 and doc["per_city"]["alpha"]["seconds"] == 9.0
    assert doc["learned"]["source"] == f"report:{report}"


def test_holdout_city_is_never_opened(
    fake_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []
    real = rasterio.open

    def spy(path: Any, *args: Any, **kw: Any) -> Any:
        opened.append(str(path))
        return real(path, *args, **kw)

    monkeypatch.setattr(rasterio, "open", spy)
    result = runner.invoke(app, ["evaluate", "oscd", str(fake_root), "--method", "cva", "--out",
                                 str(tmp_path / "m.json")])
    assert result.exit_code == 0, result.output
    assert list(json.loads((tmp_path / "m.json").read_text())["per_city"]) == NAMES
    assert opened and not [p for p in opened if "beirut" in p]


def test_dvc_stage_runs_this_command_frozen() -> None:
    """evaluate_oscd in dvc.yaml: frozen (dvc repro never runs the 25-40 min LOCO), its --out is a DVC metric
    and its --plot a plot, both kept in git (cache: false)."""
    import shlex

    import yaml

    doc = yaml.safe_load((Path(__file__).resolve().parents[1] / "dvc.yaml").read_text())
    stage = doc["stages"]["evaluate_oscd"]
    argv = shlex.split(stage["cmd"])
    assert stage["frozen"] is True and argv[:3] == ["compoundwatch", "evaluate", "oscd"]
    out, plot = argv[argv.index("--out") + 1], argv[argv.index("--plot") + 1]
    assert stage["metrics"] == [{out: {"cache": False}}]
    assert stage["outs"] == [{plot: {"cache": False}}] and plot in doc["plots"]
    assert "pipeline/oscd_eval.py" in stage["deps"] and "pipeline/train" in stage["deps"]
