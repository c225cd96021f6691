"""``compoundwatch evaluate`` (the pipeline stage, as before), ``evaluate oscd`` and the case studies
``evaluate dabancheng`` / ``evaluate taizhou``."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from fake_oscd import CITIES, spy_rasterio_open, write_fake_oscd
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.evaluate.cases import DABANCHENG_ROOT, TAIZHOU_ROOT

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
    for needle in ("--params", "metrics.json", "pr_curve.csv", "oscd", "evaluate oscd [PATH]",
                   "evaluate dabancheng [PATH]", "evaluate taizhou [PATH]"):
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
    assert doc["micro_f1"] >= 0.85  # the planted blocks (see test_evaluate_oscd)
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
    opened = spy_rasterio_open(monkeypatch)
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
    assert "pipeline/evaluate/oscd.py" in stage["deps"] and "pipeline/train" in stage["deps"]


# -- the real-imagery case studies: evaluate dabancheng / taizhou ------------------------------------------

REPO = Path(__file__).resolve().parents[1]
shared = pytest.mark.shared_data


def test_case_studies_help() -> None:
    expected = {
        "dabancheng": ("PATH", "../shared/data/xinjiang_dabancheng", "--out", "dabancheng_metrics.json",
                       "--no-pairs", "top 5"),
        "taizhou": ("PATH", "../shared/data/landsat_taizhou", "--out", "taizhou_metrics.json", "CVA + Otsu",
                    "labelled pixels"),
    }
    for study, needles in expected.items():
        result = runner.invoke(app, ["evaluate", study, "--help"])
        assert result.exit_code == 0
        text = _plain(result.stdout)
        for needle in needles:
            assert needle in text, (study, needle)


@pytest.mark.parametrize("study", ["dabancheng", "taizhou"])
def test_case_study_errors_are_one_line(study: str, tmp_path: Path) -> None:
    out = tmp_path / "m.json"
    absent = str(tmp_path / "absent")
    line = _one_error_line(runner.invoke(app, ["evaluate", study, absent, "--out", str(out)]))
    assert "absent is not a folder" in line and not out.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    line = _one_error_line(runner.invoke(app, ["evaluate", study, str(empty), "--out", str(out)]))
    assert ("no scenes match" if study == "dabancheng" else "2000TM not found") in line and not out.exists()


@pytest.fixture
def replay_dabancheng(
    dabancheng_result: dict, dabancheng_pairs_result: list, monkeypatch: pytest.MonkeyPatch
) -> list[tuple[str, Path, dict[str, Any]]]:
    """``evaluate dabancheng``'s two library calls answered by the session's runs of the same calls on the
    shared data (conftest), so the suite runs the Dabancheng pipeline once; returns the calls made."""
    from pipeline.evaluate import cases as cs

    calls: list[tuple[str, Path, dict[str, Any]]] = []

    def evaluate(root: Path, **kw: Any) -> dict:
        calls.append(("evaluate", Path(root).resolve(), kw))
        return copy.deepcopy(dabancheng_result)

    def pairs(root: Path, **kw: Any) -> list:
        calls.append(("pairs", Path(root).resolve(), kw))
        return copy.deepcopy(dabancheng_pairs_result)

    monkeypatch.setattr(cs, "evaluate_dabancheng", evaluate)
    monkeypatch.setattr(cs, "dabancheng_pairs", pairs)
    return calls


@shared
def test_dabancheng_on_the_shared_data(replay_dabancheng: list, tmp_path: Path) -> None:
    out = tmp_path / "d.json"
    result = runner.invoke(app, ["evaluate", "dabancheng", str(DABANCHENG_ROOT), "--out", str(out)])
    assert result.exit_code == 0, result.output
    root = DABANCHENG_ROOT.resolve()
    assert replay_dabancheng == [("evaluate", root, {"pairs": False}), ("pairs", root, {})]
    doc = json.loads(out.read_text())
    assert {"both_in_top5", "facilities", "n_flags", "top", "pairs"} <= set(doc)
    assert doc["both_in_top5"] is True
    f1, f2 = doc["facilities"]["facility_1"], doc["facilities"]["facility_2"]
    assert f1["rank"] <= 5 and f2["rank"] <= 5 and doc["n_flags"] >= 2
    assert [p["name"] for p in doc["pairs"]] == ["new compound", "expansion"]
    text = _plain(result.stdout)
    row = (f"│ AOI run │ #1 │ yes │ {f1['rank']} │ {f1['area_m2'] / 1e4:.1f} │ "
           f"{f1['appeared_after']} │ {f1['confidence']:.3f} │")
    assert row in text, text
    assert f"{doc['n_flags']} flags" in text
    assert "pair 2: compare 2018-10-11 → 2020-06-02 (expansion)" in text
    assert "both facilities in the top 5: yes" in text and f"→ {out}" in text


@shared
def test_dabancheng_default_path_without_pairs(
    replay_dabancheng: list, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)  # PATH defaults to ../shared/data/xinjiang_dabancheng, from the project root
    out = tmp_path / "d.json"
    result = runner.invoke(app, ["evaluate", "dabancheng", "--no-pairs", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert replay_dabancheng == [("evaluate", DABANCHENG_ROOT.resolve(), {"pairs": False})]
    doc = json.loads(out.read_text())
    assert "pairs" not in doc and doc["both_in_top5"] is True
    assert "pair 1" not in _plain(result.stdout)


@shared
def test_taizhou_on_the_shared_data(tmp_path: Path) -> None:
    if not TAIZHOU_ROOT.is_dir():
        pytest.skip(f"shared Taizhou Landsat pair not found at {TAIZHOU_ROOT}")
    out = tmp_path / "t.json"
    result = runner.invoke(app, ["evaluate", "taizhou", str(TAIZHOU_ROOT), "--out", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    keys = {"f1", "precision", "recall", "iou"}
    assert keys <= set(doc) and keys <= set(doc["baseline"])
    assert doc["f1"] >= doc["baseline"]["f1"] and doc["f1"] >= 0.7  # measured 0.77 vs 0.15
    assert doc["method"].startswith("pair-ensemble-s2-4") and doc["baseline"]["method"] == "pair-cva"
    assert doc["n_labelled"] == doc["n_changed"] + doc["n_unchanged"] == 4227 + 17163
    assert doc["ratio_f1_vs_baseline"] == pytest.approx(doc["f1"] / doc["baseline"]["f1"], abs=1e-3)
    text = _plain(result.stdout)
    for label, row in (("chain", doc), ("baseline", doc["baseline"])):
        cells = " │ ".join(f"{row[k]:.3f}" for k in ("precision", "recall", "f1", "iou"))
        assert f"│ {label} │ {cells} │" in text, text
    assert f"F1 {doc['f1']:.3f} ({doc['method']}) vs {doc['baseline']['f1']:.3f} (baseline) → {out}" in text


def test_dvc_stage_runs_the_case_studies_frozen() -> None:
    """evaluate_cases in dvc.yaml: frozen (it needs ../shared/data), one command per study, each --out a DVC
    metric kept in git (cache: false)."""
    import shlex

    import yaml

    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["evaluate_cases"]
    assert stage["frozen"] is True
    argvs = [shlex.split(cmd) for cmd in stage["cmd"]]
    assert [a[:3] for a in argvs] == [["compoundwatch", "evaluate", "dabancheng"],
                                      ["compoundwatch", "evaluate", "taizhou"]]
    outs = [a[a.index("--out") + 1] for a in argvs]
    assert stage["metrics"] == [{o: {"cache": False}} for o in outs]
    assert all((REPO / o).is_file() for o in outs)  # committed, as the frozen stage never reruns
    deps = set(stage["deps"])
    assert {"pipeline/evaluate/cases.py", "pipeline/cli/evaluate.py", "configs/dabancheng.yaml"} <= deps
