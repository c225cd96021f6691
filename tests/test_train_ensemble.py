"""The ensemble's grouped cross-validation (pipeline.train.ensemble.select) on small made-up maps."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.train.ensemble import RULES, CityMaps, select

FOLDS = (("a", "b"), ("c", "d"), ("e", "f"))


def _city(rng: np.random.Generator, unet_good: bool, lgbm_good: bool) -> CityMaps:
    label = np.zeros((40, 40), bool)
    label[10:20, 10:25] = True  # 150 change pixels
    truth = np.where(label, 0.9, 0.1).astype(np.float32)
    noise = rng.random(label.shape).astype(np.float32)
    return CityMaps(unet=truth if unet_good else noise, lgbm=truth if lgbm_good else noise,
                    strong=np.zeros_like(label), valid=np.ones_like(label), label=label)


def test_the_member_that_sees_the_change_gets_the_weight_and_scores_one() -> None:
    rng = np.random.default_rng(0)
    maps = {c: _city(rng, unet_good=True, lgbm_good=False) for f in FOLDS for c in f}
    res = select(maps, FOLDS, weights=np.array([0.0, 0.5, 1.0]))
    assert res["weight_unet"] == 1.0
    assert 0.1 < res["threshold"] <= 0.55  # the first global threshold separating 0.1 (+ noise / 2) from 0.9
    assert res["cv"]["micro_f1"] == 1.0 and res["cv"]["macro_f1"] == 1.0
    assert res["fixed_weight"]["1.0"]["micro_f1"] == 1.0
    assert res["fixed_weight"]["0.0"]["micro_f1"] < 0.5  # noise alone
    city = res["cv"]["per_city"]["a"]
    assert city["predicted_fraction"] == city["true_fraction"] == pytest.approx(150 / 1600, abs=1e-4)
    assert city["objects"] == {"true": 1, "found": 1, "predicted": 1, "correct": 1}


def test_a_citys_weight_and_threshold_come_from_the_other_folds_only() -> None:
    rng = np.random.default_rng(1)
    maps = {c: _city(rng, unet_good=True, lgbm_good=False) for f in FOLDS for c in f}
    base = select(maps, FOLDS, weights=np.array([0.0, 1.0]))
    # fold (a, b) now favours LightGBM strongly: its own choice must not move, the other folds' may
    flipped = dict(maps, a=_city(rng, unet_good=False, lgbm_good=True), b=_city(rng, unet_good=False, lgbm_good=True))
    res = select(flipped, FOLDS, weights=np.array([0.0, 1.0]))
    for c in ("a", "b"):
        assert res["cv"]["per_city"][c]["weight_unet"] == base["cv"]["per_city"][c]["weight_unet"] == 1.0
        assert res["cv"]["per_city"][c]["f1"] < 0.5  # scored with the other folds' choice: the wrong member


def test_extreme_cva_changes_and_missing_data() -> None:
    label = np.zeros((20, 20), bool)
    label[:5, :5] = True
    strong = np.zeros_like(label)
    strong[:5, :5] = True
    valid = np.ones_like(label)
    valid[0, 0] = False  # no data: a change there is a miss whatever the maps say
    zero = np.zeros(label.shape, np.float32)
    m = CityMaps(zero, zero, strong, valid, label)
    pred = m.predict(0.5, 0.3)
    assert not pred[0, 0] and pred[:5, :5].sum() == 24 and not pred[5:, :].any()
    counts = m.counts(0.5)
    assert counts.shape == (len(RULES), 3)
    assert (counts == [24, 0, 1]).all()  # every rule: the extreme changes pass, the rest is 0


def test_per_image_rules_are_bounded_and_scored_as_the_detector_cuts() -> None:
    label = np.zeros((50, 50), bool)
    label[:10, :10] = True
    p = np.full(label.shape, 0.05, np.float32)
    p[:10, :10] = 0.7
    m = CityMaps(p, p, np.zeros_like(label), np.ones_like(label), label)
    rule = {"quantile": 0.98, "scale": 0.5, "min": 0.2, "max": 0.6}
    assert m.threshold(1.0, rule) == 0.35  # 0.5 x the 98th percentile (0.7)
    assert m.threshold(1.0, {**rule, "scale": 0.1}) == 0.2  # clipped at min
    i = RULES.index(rule)
    assert m.counts(1.0)[i].tolist() == [100, 0, 0]
    assert (m.predict(1.0, rule) == label).all()


# ----------------------------------------------------------------------------------------------- inference


def _ensemble_dir(tmp_path, cv_f1: float = 0.99):
    import json

    side = {"chain": "ensemble", "band_set": "rgb", "members": {"unet": "rgb", "lgbm": "s2-4"},
            "weight_unet": 0.25, "threshold": 0.3, "cv": {"micro_f1": cv_f1}}
    (tmp_path / "ensemble-rgb.json").write_text(json.dumps(side))
    return tmp_path


def test_detect_pair_ensemble_averages_the_shipped_members(tmp_path) -> None:
    from pipeline.detect.ensemble import choose_band_set, detect_pair_ensemble
    from pipeline.detect.learned import LearnedDetector
    from pipeline.detect.unet import pair_probability
    from tests.test_learned import _scene

    bands = ("B02", "B03", "B04", "B08")
    before, after = _scene(bands, False, 0, size=96), _scene(bands, True, 1, size=96)
    d = _ensemble_dir(tmp_path)
    assert choose_band_set(list(bands), d) == "rgb"
    assert choose_band_set(["B02", "B03", "B04"], d) is None  # the LightGBM member needs B08
    det = detect_pair_ensemble(before, after, "rgb", model_dir=d)
    pu, vu, _ = pair_probability(before, after, "rgb")
    pl, vl, _, _ = LearnedDetector(band_set="s2-4").probability(before, after)
    want = np.where(vu & vl, 0.25 * pu + 0.75 * pl, 0.0)
    np.testing.assert_allclose(det["score"].values, want, atol=1e-6)
    assert (det["change"].values == ((want >= 0.3) & vu & vl)).all()
    assert det.attrs["method"] == "pair-ensemble-rgb" and det.attrs["threshold"] == 0.3
    roof = det["change"].values[20:40, 20:40].mean()
    assert roof > 0.8 and det["change"].values[50:, 50:].mean() < 0.05  # the new roof, not the rest

    import json

    from pipeline.detect.learned import adaptive_threshold

    rule = {"quantile": 0.99, "scale": 0.9, "min": 0.2, "max": 0.6}
    side = json.loads((d / "ensemble-rgb.json").read_text())
    side.pop("threshold")
    (d / "ensemble-rgb.json").write_text(json.dumps({**side, "adaptive_threshold": rule}))
    det = detect_pair_ensemble(before, after, "rgb", model_dir=d)
    thr = adaptive_threshold(want.astype(np.float32), vu & vl, rule)
    assert 0.2 <= thr <= 0.6 and det.attrs["threshold"] == thr
    assert (det["change"].values == ((want >= thr) & vu & vl)).all()


def test_detect_pair_runs_the_ensemble_where_it_scored_highest(tmp_path, monkeypatch) -> None:
    from pipeline.config import DetectSettings
    from pipeline.detect import ensemble
    from pipeline.detect.pair import best_learned_chain, detect_pair
    from tests.test_learned import _scene

    bands = ["B02", "B03", "B04", "B08"]
    monkeypatch.setattr(ensemble, "_root", lambda _model_dir: _ensemble_dir(tmp_path, 0.99))
    assert best_learned_chain(bands) == ("ensemble", "rgb")
    assert best_learned_chain(["B02", "B03", "B04"]) == ("unet", "rgb")
    det = detect_pair(_scene(tuple(bands), False, 0, 96), _scene(tuple(bands), True, 1, 96), DetectSettings())
    assert det.attrs["method"] == "pair-ensemble-rgb+cva"
    monkeypatch.setattr(ensemble, "_root", lambda _model_dir: _ensemble_dir(tmp_path, 0.01))
    assert best_learned_chain(bands) == ("lgbm", "s2-4")  # a worse cross-validation: not chosen


def test_sentinel2_pairs_run_the_best_shipped_chain() -> None:
    """The shipped sidecars decide: every ensemble cross-validated above its members; the 10-band one
    (U-Net s2-10 + LightGBM s2-6, 0.445) runs wherever its bands are (L1C's 13, L2A's 12), the 4-band one
    (U-Net s2-4 + LightGBM s2-4, 0.443) on 6- and 4-band pairs, true colour the RGB model. The block path
    takes the best spatial model alone: s2-4 (0.2790) for every Sentinel-2 set, RGB for true colour."""
    from pipeline.config import DetectSettings
    from pipeline.detect.ensemble import choose_band_set as choose_ensemble
    from pipeline.detect.ensemble import load_ensemble_meta
    from pipeline.detect.features import BAND_SETS
    from pipeline.detect.pair import best_learned_chain, detect_pair
    from pipeline.detect.unet import choose_band_set, load_unet_meta
    from tests.test_learned import _scene

    for name in ("s2-13", "s2-10", "s2-4"):
        meta = load_ensemble_meta(name)
        assert 0.0 < meta["weight_unet"] < 1.0
        assert meta["cv"]["micro_f1"] > max(v["micro_f1"] for v in meta["fixed_weight"].values())
    cv = {n: load_ensemble_meta(n)["cv"]["micro_f1"] for n in ("s2-13", "s2-10", "s2-4")}
    assert cv["s2-10"] > cv["s2-4"] > cv["s2-13"]
    assert load_unet_meta("s2-4")["cv"]["micro_f1"] >= load_unet_meta("s2-10")["cv"]["micro_f1"]
    l2a = [b for b in BAND_SETS["s2-13"] if b != "B10"]
    for bands in (list(BAND_SETS["s2-13"]), l2a, list(BAND_SETS["s2-10"])):
        assert choose_ensemble(bands) == "s2-10" and choose_band_set(bands) == "s2-4"
        assert best_learned_chain(bands) == ("ensemble", "s2-10")
    for bands in (list(BAND_SETS["s2-6"]), list(BAND_SETS["s2-4"])):
        assert best_learned_chain(bands) == ("ensemble", "s2-4")
        assert choose_band_set(bands) == "s2-4"  # the block path's model
    assert best_learned_chain(["B02", "B03", "B04"]) == ("unet", "rgb")
    bands = BAND_SETS["s2-13"]
    det = detect_pair(_scene(bands, False, 0, 96), _scene(bands, True, 1, 96), DetectSettings())
    assert det.attrs["method"] == "pair-ensemble-s2-10+cva"
    assert det["change"].values[20:40, 20:40].mean() > 0.8 and det["change"].values[50:, 50:].mean() < 0.05
