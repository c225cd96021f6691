"""Tests for pipeline.detect.learned (the learned pair detector) and the OSCD loader / training helpers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pytest
import xarray as xr

from pipeline.config import DetectSettings
from pipeline.detect.features import BAND_SETS, build_features, feature_names
from pipeline.detect.learned import (
    LearnedDetector,
    adaptive_threshold,
    available_band_sets,
    detect_pair_learned,
    load_model,
    prepare_pair,
)
from pipeline.errors import BandError, DetectionError

OSCD = Path(__file__).resolve().parents[2] / "shared" / "data" / "oscd"
SOIL = {"B01": 0.08, "B02": 0.09, "B03": 0.12, "B04": 0.16, "B05": 0.19, "B06": 0.2, "B07": 0.21,
        "B08": 0.22, "B8A": 0.23, "B09": 0.05, "B10": 0.01, "B11": 0.30, "B12": 0.26}
ROOF = {"B01": 0.30, "B02": 0.42, "B03": 0.44, "B04": 0.46, "B05": 0.47, "B06": 0.47, "B07": 0.48,
        "B08": 0.48, "B8A": 0.48, "B09": 0.2, "B10": 0.02, "B11": 0.50, "B12": 0.47}


def _scene(bands: tuple[str, ...], block: bool, seed: int, size: int = 64) -> xr.DataArray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    tex = 1 + 0.1 * np.sin(xx / 3.7) * np.cos(yy / 2.3)
    data = np.stack([SOIL[b] * tex for b in bands]).astype(np.float32)
    if block:
        data[:, 20:40, 20:40] = np.array([ROOF[b] for b in bands], np.float32)[:, None, None]
    data += rng.normal(0, 0.003, data.shape).astype(np.float32)
    return xr.DataArray(data, dims=("band", "y", "x"),
                        coords={"band": list(bands), "y": 5000.0 - 10 * np.arange(size),
                                "x": 10 * np.arange(size) + 0.0})


def _tiny_model(tmp_path: Path, band_set: str = "s2-4", trees: int = 10) -> Path:
    """Train a tiny model on a synthetic pair with its planted block as the label; write text + sidecar."""
    bands = BAND_SETS[band_set]
    b, a = _scene(bands, False, 0).values, _scene(bands, True, 1).values
    names, feats, _ = build_features(b, a, bands, band_set)
    y = np.zeros((64, 64), bool)
    y[20:40, 20:40] = True
    x = feats.reshape(len(names), -1).T
    booster = lgb.train({"objective": "binary", "verbose": -1, "num_threads": 1, "seed": 0,
                         "min_data_in_leaf": 5, "deterministic": True}, lgb.Dataset(x, y.ravel()), trees)
    booster.save_model(str(tmp_path / f"oscd-{band_set}.txt"))
    meta = {"band_set": band_set, "bands": list(bands), "features": names, "threshold": 0.5,
            "smooth_sigma_px": 1.0, "coregister": True, "normalise": True}
    (tmp_path / f"oscd-{band_set}.json").write_text(json.dumps(meta))
    return tmp_path


def test_detect_contract_and_block_found(tmp_path: Path) -> None:
    mdir = _tiny_model(tmp_path)
    bands = BAND_SETS["s2-4"]
    before, after = _scene(bands, False, 2), _scene(bands, True, 3)
    det = detect_pair_learned(before, after, DetectSettings(), model_dir=mdir)
    assert set(det.data_vars) == {"change", "score", "valid", "confidence"}
    assert det["change"].dtype == bool and det["valid"].dtype == bool
    assert det["score"].dtype == np.float32 and det["confidence"].dtype == np.float32
    assert det["change"].shape == (64, 64)
    assert det.attrs["method"] == "pair-lgbm-s2-4" and det.attrs["threshold"] == 0.5
    ch = det["change"].values
    assert ch[24:36, 24:36].all()
    assert ch[:12, :12].sum() == 0 and ch[50:, 50:].sum() == 0
    conf = det["confidence"].values
    assert ((conf >= 0.5) == ch).all() and conf.max() <= 1.0
    np.testing.assert_array_equal(det["y"].values, before["y"].values)


def test_adaptive_threshold_rule() -> None:
    rule = {"quantile": 0.99, "scale": 0.8, "min": 0.3, "max": 0.7}
    valid = np.ones((100, 100), bool)
    low = np.zeros((100, 100), np.float32)
    low[:10, :20] = 0.5  # an under-confident image: its top 2 % sits at 0.5 -> cut at 0.4
    assert adaptive_threshold(low, valid, rule) == 0.4
    assert adaptive_threshold(np.full((100, 100), 0.95, np.float32), valid, rule) == 0.7  # capped
    assert adaptive_threshold(np.full((100, 100), 0.01, np.float32), valid, rule) == 0.3  # floored
    # pixels outside the valid mask do not count
    masked = valid.copy()
    masked[:10, :20] = False
    assert adaptive_threshold(low, masked, rule) == 0.3


def test_detect_uses_adaptive_threshold_from_sidecar(tmp_path: Path) -> None:
    mdir = _tiny_model(tmp_path)
    side = mdir / "oscd-s2-4.json"
    meta = json.loads(side.read_text())
    meta["adaptive_threshold"] = {"quantile": 0.99, "scale": 0.5, "min": 0.2, "max": 0.45}
    side.write_text(json.dumps(meta))
    bands = BAND_SETS["s2-4"]
    det = detect_pair_learned(_scene(bands, False, 2), _scene(bands, True, 3), DetectSettings(), model_dir=mdir)
    thr = det.attrs["threshold"]
    assert 0.2 <= thr <= 0.45
    score, valid = det["score"].values, det["valid"].values
    np.testing.assert_array_equal(det["change"].values, (score >= thr) & valid)


def test_select_threshold_adaptive_beats_global_on_uncalibrated_cities() -> None:
    from pipeline.train.oscd import select_threshold

    rng = np.random.default_rng(0)
    probs, labels = {}, {}
    # two confident "cities" (background up to 0.5, change at 0.9) and two under-confident ones (background
    # up to 0.1, change at 0.3): no global threshold separates all four, a per-image one does
    for i, (bg, top) in enumerate(((0.5, 0.9), (0.1, 0.3), (0.5, 0.9), (0.1, 0.3))):
        lab = np.zeros((60, 60), bool)
        lab[10:30, 10:30] = True
        p = rng.uniform(0.0, bg, lab.shape).astype(np.float32)
        p[lab] = top
        probs[f"c{i}"], labels[f"c{i}"] = p, lab
    sel = select_threshold(probs, labels, sigmas=(0.0,))
    assert sel["adaptive"] is not None
    assert sel["micro_f1"] > sel["global"]["micro_f1"] and sel["micro_f1"] > 0.99
    assert sel["strict"]["micro_f1"] > 0.99


def test_extra_bands_and_band_order_ignored(tmp_path: Path) -> None:
    mdir = _tiny_model(tmp_path)
    bands = ("B08", "B04", "B11", "B03", "B02")  # a richer, shuffled scene: only s2-4 has a model here
    det = LearnedDetector(mdir).detect(_scene(bands, False, 2), _scene(bands, True, 3))
    assert det.attrs["band_set"] == "s2-4"
    assert det["change"].values[24:36, 24:36].all()


def test_nan_pixels_are_invalid_not_change(tmp_path: Path) -> None:
    mdir = _tiny_model(tmp_path)
    bands = BAND_SETS["s2-4"]
    before, after = _scene(bands, False, 2), _scene(bands, True, 3)
    after = after.copy()
    after.values[:, 30, 30] = np.nan
    det = detect_pair_learned(before, after, model_dir=mdir)
    assert not det["valid"].values[30, 30]
    assert not det["change"].values[30, 30]


def test_errors(tmp_path: Path) -> None:
    mdir = _tiny_model(tmp_path)
    bands = BAND_SETS["s2-4"]
    with pytest.raises(BandError, match="B02"):
        detect_pair_learned(_scene(("B03", "B04", "B08"), False, 0), _scene(("B03", "B04", "B08"), True, 1),
                            model_dir=mdir)
    with pytest.raises(DetectionError, match="differ"):
        detect_pair_learned(_scene(bands, False, 0), _scene(bands, True, 1, size=32), model_dir=mdir)
    with pytest.raises(DetectionError, match="no model"):
        LearnedDetector(mdir, band_set="s2-13")
    assert available_band_sets(tmp_path / "empty") == []
    assert not LearnedDetector(tmp_path / "empty").supports(list(bands))


def test_prepare_pair_reports_shift_and_gains() -> None:
    bands = list(BAND_SETS["s2-4"])
    b, a = _scene(tuple(bands), False, 0).values, _scene(tuple(bands), False, 1).values * 1.1
    out, info = prepare_pair(b, a, bands)
    assert out.shape == b.shape
    assert len(info["shift_px"]) == 2 and max(abs(v) for v in info["shift_px"]) < 0.5
    np.testing.assert_allclose(info["gains"], 1 / 1.1, atol=0.05)


def test_shipped_models_load_and_run() -> None:
    shipped = available_band_sets()
    assert {"s2-13", "s2-6", "s2-4"} <= set(shipped), f"shipped models: {shipped}"
    total = 0
    for bs in shipped:
        m = load_model(bs)
        assert m.meta["features"] == feature_names(bs), f"{bs}: retrain, features changed"
        assert 0 < m.threshold < 1
        total += len(m.booster.model_to_string())
    assert total < 6_000_000
    bands = BAND_SETS["s2-6"]
    det = detect_pair_learned(_scene(bands, False, 2), _scene(bands, True, 3))
    assert det.attrs["band_set"] == "s2-6"
    assert det["change"].shape == (64, 64)
    score = det["score"].values
    assert np.isfinite(score).all() and score.min() >= 0 and score.max() <= 1
    # a 200 m bright block on soil is the strongest change in the scene
    assert score[25:35, 25:35].mean() > score[:10, :10].mean()


@pytest.mark.shared_data
def test_oscd_city_smoke() -> None:
    if not (OSCD / "train_labels" / "bercy").is_dir():
        pytest.skip(f"OSCD shared data not found at {OSCD}")
    from pipeline.fetch.oscd import labelled_cities, read_city

    cities = labelled_cities(OSCD)
    assert "bercy" in cities and not {"beirut", "hongkong", "nantes", "pisa"} & set(cities)
    oc = read_city(OSCD, "bercy")
    assert oc.before.shape[1:] == oc.after.shape[1:] == oc.label.shape == (395, 360)
    det = detect_pair_learned(oc.before, oc.after)
    assert det.attrs["band_set"] == "s2-13"
    assert det["valid"].values.mean() > 0.95
    # bercy is one of the shipped model's training cities: this is a smoke test, not an evaluation
    assert 0.001 < det["change"].values.mean() < 0.1


def _set_sidecar(mdir: Path, band_set: str, **keys: Any) -> None:
    from pipeline.detect.learned import _load

    side = mdir / f"oscd-{band_set}.json"
    side.write_text(json.dumps({**json.loads(side.read_text()), **keys}))
    _load.cache_clear()  # the sidecar changed under the cached model


def test_blend_averages_member_probabilities(tmp_path: Path) -> None:
    """A sidecar ``blend`` averages its model's probability with the named band sets' models (each on its own
    bands and features) before smoothing; a missing partner model is one clear error."""
    from scipy import ndimage

    bands = BAND_SETS["s2-6"]
    before, after = _scene(bands, False, 2), _scene(bands, True, 3)
    _tiny_model(tmp_path, "s2-6")
    _set_sidecar(tmp_path, "s2-6", smooth_sigma_px=0.0, blend=["s2-4"])
    with pytest.raises(DetectionError, match="averages its probability with band set"):
        LearnedDetector(tmp_path).probability(before, after)
    _tiny_model(tmp_path, "s2-4", trees=5)  # fewer trees: less confident than the s2-6 model
    _set_sidecar(tmp_path, "s2-4", smooth_sigma_px=0.0)
    p4, valid4, _, _ = LearnedDetector(tmp_path, band_set="s2-4").probability(before, after)
    _set_sidecar(tmp_path, "s2-6", blend=[])
    p6, valid6, _, _ = LearnedDetector(tmp_path, band_set="s2-6").probability(before, after)
    assert not np.allclose(p4, p6)
    _set_sidecar(tmp_path, "s2-6", blend=["s2-4"])
    det = LearnedDetector(tmp_path)
    prob, valid, model, _ = det.probability(before, after)
    assert model.band_set == "s2-6" and model.blend == ["s2-4"]
    np.testing.assert_array_equal(valid, valid6 & valid4)
    np.testing.assert_allclose(prob, np.where(valid, (p6 + p4) / 2, 0), atol=1e-6)
    _set_sidecar(tmp_path, "s2-6", smooth_sigma_px=1.0)
    smooth, _, _, _ = det.probability(before, after)
    np.testing.assert_allclose(smooth, ndimage.gaussian_filter(prob, 1.0), atol=1e-6)
    out = det.detect(before, after)
    assert out.attrs["method"] == "pair-lgbm-s2-6"
    assert out["change"].values[24:36, 24:36].all()


def test_segment_average_from_sidecar(tmp_path: Path) -> None:
    """A sidecar ``segment_average`` pulls the probability towards its superpixel's mean before smoothing."""
    from pipeline.detect.segments import SegmentRule, segment_average, superpixels

    bands = BAND_SETS["s2-4"]
    before, after = _scene(bands, False, 2), _scene(bands, True, 3)
    _tiny_model(tmp_path, "s2-4")
    _set_sidecar(tmp_path, "s2-4", smooth_sigma_px=0.0)
    det = LearnedDetector(tmp_path)
    plain, valid, model, _ = det.probability(before, after)
    assert model.segment_rule is None
    rule = SegmentRule(scale=1e6, min_size=5000, weight=0.5)  # one segment: the image mean
    _set_sidecar(tmp_path, "s2-4", segment_average=rule.as_dict())
    averaged, _, model, _ = det.probability(before, after)
    assert model.segment_rule == rule
    b = before.values.astype(np.float32)
    a, _ = prepare_pair(b, after.values.astype(np.float32), list(bands))
    seg = superpixels(b, a, bands, rule)
    assert seg.max() == 0
    np.testing.assert_allclose(averaged, segment_average(plain, seg, 0.5), atol=1e-6)
    np.testing.assert_allclose(averaged, np.where(valid, (plain + plain.mean()) / 2, 0), atol=1e-6)
