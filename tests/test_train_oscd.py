"""Tests for pipeline.train.oscd (the training entry point) on the tiny fake OSCD folder (fake_oscd.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from fake_oscd import CITIES, write_fake_oscd

from pipeline.detect.features import feature_names
from pipeline.detect.learned import LearnedDetector
from pipeline.fetch.oscd import read_city
from pipeline.train import oscd as tr


def test_blend_probs_mean_and_invalid() -> None:
    a = {"c": np.array([[0.2, 0.0], [0.6, 0.9]], np.float32)}
    b = {"c": np.array([[0.4, 0.5], [0.0, 0.7]], np.float32)}
    out = tr.blend_probs([a, b])["c"]
    np.testing.assert_allclose(out, [[0.3, 0.0], [0.0, 0.8]], atol=1e-7)
    assert out.dtype == np.float32
    assert tr.blend_partners("s2-13") == ["s2-4"] and tr.blend_partners("s2-4") == []


def test_main_trains_the_blend_partner_and_writes_blended_sidecars(tmp_path: Path) -> None:
    """Asking for the 6-band model also trains the 4-band one it is averaged with; the 6-band sidecar names
    the blend, its rule comes from the averaged LOCO maps, and the folder detects the fake city's roof."""
    root = write_fake_oscd(tmp_path / "oscd")
    out, report = tmp_path / "models", tmp_path / "report.json"
    rc = tr.main(["--data", str(root), "--out", str(out), "--band-sets", "s2-6", "--pos", "300",
                  "--neg", "600", "--trees", "20", "--threads", "1", "--report", str(report)])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["oscd-s2-4.json", "oscd-s2-4.txt", "oscd-s2-6.json",
                                                     "oscd-s2-6.txt"]
    six, four = (json.loads((out / f"oscd-{b}.json").read_text()) for b in ("s2-6", "s2-4"))
    assert six["blend"] == ["s2-4"] and four["blend"] == []
    for side in (six, four):  # chosen on the LOCO maps: the rule, or None when the plain maps pool higher
        assert side["segment_average"] in (None, {"scale": 100.0, "sigma": 0.5, "min_size": 20, "weight": 0.5})
    assert six["features"] == feature_names("s2-6") and four["features"] == feature_names("s2-4")
    doc = json.loads(report.read_text())
    assert set(doc["band_sets"]) == {"s2-6", "s2-4"}
    rep6 = doc["band_sets"]["s2-6"]
    assert rep6["blend"] == ["s2-4"] and "loco_alone" in rep6 and "loco_alone" not in doc["band_sets"]["s2-4"]
    assert six["smooth_sigma_px"] == rep6["loco"]["sigma"]
    assert six["adaptive_threshold"] == rep6["loco"]["adaptive"]
    secs4 = doc["band_sets"]["s2-4"]["loco_seconds_per_city"]
    for c in CITIES:  # fold seconds of the blend: both models' folds
        assert rep6["loco_seconds_per_city"][c.name] > secs4[c.name]
    city = CITIES[0]
    oc = read_city(root, city.name)
    det = LearnedDetector(out).detect(oc.before, oc.after)
    assert det.attrs["band_set"] == "s2-6"
    assert oc.label is not None
    tp = int((det["change"].values & oc.label).sum())
    assert tp >= 0.6 * city.n_change


def test_select_chain_keeps_superpixel_averaging_only_when_it_helps() -> None:
    rng = np.random.default_rng(0)
    labels, probs, segs = {}, {}, {}
    for i in range(3):
        lab = np.zeros((40, 40), bool)
        lab[10:20, 10:20] = True
        seg = np.zeros((40, 40), np.int64)
        seg[10:20, 10:20] = 1
        p = np.where(lab, rng.uniform(0.2, 0.9, lab.shape), rng.uniform(0.01, 0.5, lab.shape)).astype(np.float32)
        labels[f"c{i}"], probs[f"c{i}"], segs[f"c{i}"] = lab, p, seg
    sel, rule, maps = tr.select_chain(probs, labels, segs)
    assert rule is not None and sel["micro_f1"] > sel["without_segments_micro_f1"]  # the roof segment helps
    assert not np.allclose(maps["c0"], probs["c0"])
    from pipeline.detect.segments import SegmentRule

    # a weight of 0 leaves the maps as they are: no gain, so the plain maps are kept
    sel2, rule2, maps2 = tr.select_chain(probs, labels, segs, SegmentRule(weight=0.0))
    assert rule2 is None and maps2 is probs and sel2["micro_f1"] == sel2["with_segments_micro_f1"]
    sel3, rule3, _ = tr.select_chain(probs, labels, None)
    assert rule3 is None and sel3["micro_f1"] == sel2["micro_f1"]
