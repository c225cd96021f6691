"""Tests for pipeline.evaluate.oscd (the OSCD evaluation harness) on a tiny fake OSCD folder (fake_oscd.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_oscd import CITIES, SIZE, spy_rasterio_open, write_fake_oscd

from pipeline.errors import ConfigError, DetectionError, InputFileError
from pipeline.evaluate import oscd as ev
from pipeline.evaluate.metrics import Scores

OSCD = Path(__file__).resolve().parents[2] / "shared" / "data" / "oscd"
FAST = ev.Recipe(n_trees=20, n_pos=300, n_neg=600)  # a few seconds for 3 fake cities; not the shipped recipe


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fake_oscd(tmp_path_factory.mktemp("oscd"))


@pytest.fixture(scope="module")
def baseline(fake_root: Path) -> tuple[ev.ChainResult, dict[str, np.ndarray]]:
    return ev.evaluate_baseline(fake_root, ev.pick_cities(fake_root))


@pytest.fixture(scope="module")
def learned(fake_root: Path, baseline: tuple[ev.ChainResult, dict[str, np.ndarray]]) -> ev.ChainResult:
    base, strong = baseline
    return ev.evaluate_learned(fake_root, ev.pick_cities(fake_root), "s2-13", recipe=FAST, strong=strong,
                               cva_seconds=base.seconds)


def test_scores_hand_computed() -> None:
    label = np.array([[1, 1, 0, 0],
                      [1, 1, 0, 0],
                      [0, 1, 0, 0]], bool)  # 5 change pixels
    pred = np.array([[1, 1, 0, 1],
                     [0, 1, 0, 0],
                     [0, 0, 0, 0]], bool)  # 4 predicted: 3 right, 1 wrong; 2 changes missed
    s = Scores.from_masks(pred, label)
    assert (s.tp, s.fp, s.fn) == (3, 1, 2)
    assert s.precision == 0.75 and s.recall == 0.6
    assert s.f1 == pytest.approx(2 * 0.75 * 0.6 / (0.75 + 0.6)) == pytest.approx(6 / 9)
    assert s.iou == 0.5
    assert s.as_dict() == {"precision": 0.75, "recall": 0.6, "f1": 6 / 9, "iou": 0.5,
                           "tp": 3, "fp": 1, "fn": 2}
    empty = Scores.from_masks(np.zeros((2, 2), bool), np.zeros((2, 2), bool))
    # the one rule of pipeline.evaluate.metrics: an empty denominator scores 1.0 (nothing went wrong)
    assert (empty.precision, empty.recall, empty.f1, empty.iou) == (1.0, 1.0, 1.0, 1.0)
    with pytest.raises(DetectionError, match="one grid"):
        Scores.from_masks(pred, label[:2])


def test_micro_pools_counts_macro_averages_cities() -> None:
    per_city = {"a": Scores(tp=9, fp=1, fn=0), "b": Scores(tp=1, fp=9, fn=10)}
    pooled = ev.pool(per_city)
    # micro: counts summed first (tp 10, fp 10, fn 10) -> 20 / 40; not the mean of 18/19 and 2/21
    assert pooled["micro_f1"] == 0.5
    assert pooled["micro_precision"] == 0.5 and pooled["micro_recall"] == 0.5 and pooled["micro_iou"] == 1 / 3
    assert pooled["macro_f1"] == pytest.approx((18 / 19 + 2 / 21) / 2)
    with pytest.raises(ConfigError):
        ev.pool({})


def test_pick_cities(fake_root: Path, tmp_path: Path) -> None:
    names = sorted(c.name for c in CITIES)
    assert ev.pick_cities(fake_root) == names  # the hold-out decoy folder is not listed
    assert ev.pick_cities(fake_root, ["charlie", " alpha"]) == ["alpha", "charlie"]  # label order, trimmed
    with pytest.raises(ConfigError, match="beirut: hold-out"):
        ev.pick_cities(fake_root, ["alpha", "beirut"])
    with pytest.raises(ConfigError, match="unknown or unlabelled city delta.*alpha, bravo, charlie"):
        ev.pick_cities(fake_root, ["delta"])
    with pytest.raises(InputFileError, match="not a folder"):
        ev.pick_cities(tmp_path / "absent")
    (tmp_path / "train_labels").mkdir()
    with pytest.raises(InputFileError, match="no labelled city"):
        ev.pick_cities(tmp_path)


def test_baseline_finds_the_planted_blocks(baseline: tuple[ev.ChainResult, dict[str, np.ndarray]]) -> None:
    base, strong = baseline
    assert base.method == "cva-otsu" and set(base.scores) == {c.name for c in CITIES}
    for city in CITIES:
        s = base.scores[city.name]
        # the whole block is found; false alarms are at most the block's ring: the 20 m / 60 m bands are
        # bilinearly up-sampled (1 px ring, 4 x 18 px), 1.5 px when date 2 is half a pixel off (bravo), so
        # precision >= 324 / (324 + 4 * 18 * 1.5) ≈ 0.75 and F1 >= 0.85
        assert s.tp == city.n_change and s.fn == 0, city.name
        assert s.fp <= 1.5 * 4 * 18 and s.f1 >= 0.85, (city.name, s)
        assert base.seconds[city.name] > 0
        assert strong[city.name].shape == (SIZE, SIZE) and strong[city.name].dtype == bool
    assert ev.pool(base.scores)["micro_f1"] >= 0.85


def test_learned_loco(fake_root: Path, learned: ev.ChainResult,
                      baseline: tuple[ev.ChainResult, dict[str, np.ndarray]]) -> None:
    assert learned.method == "lgbm-loco"
    for city in CITIES:
        s = learned.scores[city.name]
        assert s.tp + s.fn == city.n_change
        assert s.f1 >= 0.6, (city.name, s)  # a model trained on the two other cities finds the block
        assert learned.seconds[city.name] > baseline[0].seconds[city.name]  # fold training + CVA union
    assert ev.pool(learned.scores)["micro_f1"] >= 0.8
    info = learned.info
    assert info["source"] == "loco" and info["cva_union"] is True and info["recipe"]["n_trees"] == 20
    assert info["band_set"] == "s2-13" and info["blend"] == ["s2-4"]  # the shipped chain: 13- and 4-band mean
    assert set(info["decision_rule"]) == {"smooth_sigma_px", "adaptive_threshold", "threshold"}
    assert set(info["strict"]["per_city"]) == {c.name for c in CITIES}
    assert 0 <= info["strict"]["micro_f1"] <= 1


def test_learned_without_union_is_the_training_selection(fake_root: Path) -> None:
    """Without the CVA union the harness re-derives exactly the scores of the training recipe's rule
    selection (same probabilities, same decision rule), and every fold trains on the other cities only."""
    from pipeline.train import oscd as tr

    rows: list[int] = []
    real = tr.train_booster

    def spy(x: np.ndarray, y: np.ndarray, *args: Any, **kw: Any) -> Any:
        rows.append(len(y))
        return real(x, y, *args, **kw)

    cities = ev.pick_cities(fake_root)
    mp = pytest.MonkeyPatch()
    mp.setattr(tr, "train_booster", spy)
    try:
        res = ev.evaluate_learned(fake_root, cities, "s2-4", recipe=FAST)
    finally:
        mp.undo()
    assert res.info["cva_union"] is False and res.info["blend"] == []
    assert ev.pool(res.scores)["micro_f1"] == pytest.approx(res.info["classifier_only"]["micro_f1"], abs=1e-9)
    assert ev.pool(res.scores)["macro_f1"] == pytest.approx(res.info["classifier_only"]["macro_f1"], abs=1e-9)
    # each fold: 300 change + 600 no-change sampled pixels from each of the 2 other cities, never its own
    assert rows == [2 * (300 + 600)] * 3
    with pytest.raises(ConfigError, match="at least 2"):
        ev.evaluate_learned(fake_root, cities[:1], recipe=FAST)
    with pytest.raises(ConfigError, match="unknown band set"):
        ev.evaluate_learned(fake_root, cities, "s2-99", recipe=FAST)


def test_document_and_plot(tmp_path: Path, learned: ev.ChainResult,
                           baseline: tuple[ev.ChainResult, dict[str, np.ndarray]]) -> None:
    base = baseline[0]
    doc = ev.build_document(base, learned, "s2-13")
    assert {"micro_f1", "macro_f1", "per_city", "method", "band_set", "baseline",
            "ratio_micro_f1_vs_baseline"} <= set(doc)
    assert doc["method"] == "lgbm-loco" and doc["baseline"]["method"] == "cva-otsu"
    assert doc["micro_f1"] == ev.pool(learned.scores)["micro_f1"]
    assert doc["ratio_micro_f1_vs_baseline"] == doc["micro_f1"] / doc["baseline"]["micro_f1"]
    for chain in (doc, doc["baseline"]):
        assert set(chain["per_city"]) == {c.name for c in CITIES}
        for row in chain["per_city"].values():
            assert set(row) == {"precision", "recall", "f1", "iou", "tp", "fp", "fn", "seconds", "objects"}
            assert set(row["objects"]) == {"true", "found", "predicted", "correct"}
            assert row["objects"]["found"] <= row["objects"]["true"]
            assert row["objects"]["correct"] <= row["objects"]["predicted"]
        objs = [row["objects"] for row in chain["per_city"].values()]
        found, true = sum(o["found"] for o in objs), sum(o["true"] for o in objs)
        assert chain["object_recall"] == (found / true if true else 1.0)
    # the shipped spatial model's grouped cross-validation, read from its sidecar
    assert doc["spatial"]["rgb"]["source"] == "grouped-cv" and len(doc["spatial"]["rgb"]["per_city"]) == 10
    ens = doc["spatial"]["ensemble-s2-13"]  # and the shipped ensemble's, with its members alone beside it
    assert ens["members"] == {"unet": "s2-13", "lgbm": "s2-13"} and len(ens["per_city"]) == 10
    assert ens["micro_f1"] > max(ens["members_alone_micro_f1"].values())
    only_cva = ev.build_document(base, None, "s2-13")
    assert only_cva["method"] == "cva-otsu" and only_cva["per_city"] == only_cva["baseline"]["per_city"]
    assert only_cva["ratio_micro_f1_vs_baseline"] == 1.0 and "learned" not in only_cva

    out = ev.write_document(doc, tmp_path / "m" / "oscd.json")
    assert json.loads(out.read_text()) == json.loads(json.dumps(doc))
    png = ev.write_plot(doc, tmp_path / "oscd.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert ev.write_plot(only_cva, tmp_path / "cva.png").stat().st_size > 1000


def test_default_recipe_is_the_training_recipe() -> None:
    import inspect

    from pipeline.cli.evaluate import oscd
    from pipeline.train import oscd as tr

    recipe = ev.Recipe()
    assert (recipe.n_trees, recipe.seed) == (tr.N_TREES, tr.SEED)
    main = inspect.getsource(tr.main)
    assert f'"--pos", type=int, default={recipe.n_pos}' in main
    assert f'"--neg", type=int, default={recipe.n_neg}' in main
    assert inspect.signature(oscd).parameters["trees"].default == recipe.n_trees


def test_learned_from_report(tmp_path: Path) -> None:
    def row(tp: int, fp: int, fn: int) -> dict[str, float]:
        return {**Scores(tp, fp, fn).as_dict(), "rule": "global"}

    loco = {"sigma": 1.5, "threshold": 0.6, "adaptive": None, "micro_f1": 0.0, "macro_f1": 0.0,
            "per_city": {"a": row(8, 2, 2), "b": row(1, 1, 8)},
            "strict": {"per_city": {"a": row(7, 1, 3), "b": row(0, 0, 9)}}}
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"cities": ["a", "b"], "band_sets": {
        "s2-13": {"loco": loco, "loco_seconds_per_city": {"a": 12.5, "b": 3.0}}}}))
    res = ev.learned_from_report(report, "s2-13", ["a", "b"])
    assert res.scores == {"a": Scores(8, 2, 2), "b": Scores(1, 1, 8)}
    assert res.seconds == {"a": 12.5, "b": 3.0}
    assert res.info["cva_union"] is False and res.info["decision_rule"]["smooth_sigma_px"] == 1.5
    assert res.info["strict"]["micro_f1"] == Scores(7, 1, 12).f1
    with pytest.raises(ConfigError, match="no LOCO scores for c"):
        ev.learned_from_report(report, "s2-13", ["a", "c"])
    with pytest.raises(ConfigError, match="no LOCO section for band set s2-4"):
        ev.learned_from_report(report, "s2-4", ["a"])
    with pytest.raises(InputFileError, match="not found"):
        ev.learned_from_report(tmp_path / "absent.json", "s2-13", ["a"])


def test_holdout_folder_is_never_read(fake_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened = spy_rasterio_open(monkeypatch)
    base, _ = ev.evaluate_baseline(fake_root, ev.pick_cities(fake_root))
    assert "beirut" not in base.scores
    assert len(opened) >= 3 * 27  # 26 band files and a label per city
    assert not [p for p in opened if "beirut" in p]


@pytest.mark.shared_data
def test_real_oscd_baseline_bercy() -> None:
    if not (OSCD / "train_labels" / "bercy").is_dir():
        pytest.skip(f"OSCD shared data not found at {OSCD} (../shared/data/oscd absent)")
    base, _ = ev.evaluate_baseline(OSCD, ev.pick_cities(OSCD, ["bercy"]))
    s = base.scores["bercy"]
    assert s.tp + s.fn == 1046  # bercy's labelled change pixels (0.74 % of 360 x 395)
    assert s.f1 == pytest.approx(0.1256, abs=0.002)  # CVA + Otsu on bercy, as in oscd_metrics.json
