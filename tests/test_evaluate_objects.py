"""Object matching, truth rasterisation, pixel scores and PR curves (pipeline.evaluate.objects,
pipeline.evaluate.metrics), hand-computed."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import box

from pipeline.errors import DetectionError, InvalidAOIError
from pipeline.evaluate.metrics import pixel_scores
from pipeline.evaluate.objects import match_objects, object_metrics, pr_curve, rasterize_truth
from pipeline.testing import DEFAULT_ORIGIN, make_detection

X0, Y0 = DEFAULT_ORIGIN  # EPSG:32645 metres
EPSG = 32645


def ubox(x: float, y: float, w: float, h: float):
    """A w×h m box whose lower-left corner is (X0 + x, Y0 - 1000 + y) in EPSG:32645."""
    return box(X0 + x, Y0 - 1000 + y, X0 + x + w, Y0 - 1000 + y + h)


def layer(geoms, crs=EPSG, **cols) -> gpd.GeoDataFrame:
    n = len(geoms)
    data = {"site_id": cols.pop("site_id", ["s"] * n), **cols}
    return gpd.GeoDataFrame(data, geometry=list(geoms), crs=crs)


TRUTH = layer([ubox(0, 0, 100, 100)])  # 10 000 m²


@pytest.mark.parametrize(("width", "hit"), [(25, False), (35, True)])
def test_iou_threshold_decides_a_hit(width, hit):
    flag = layer([ubox(0, 0, width, 100)], confidence=[0.9])  # inside the truth: IoU = width / 100
    m = object_metrics(flag, TRUTH, iou_threshold=0.3)
    assert m["n_flags"] == 1 and m["n_truth"] == 1
    assert (m["tp"], m["fp"], m["fn"]) == ((1, 0, 0) if hit else (0, 1, 1))
    assert m["object_recall"] == (1.0 if hit else 0.0)
    assert m["object_precision"] == (1.0 if hit else 0.0)
    matches, areas = match_objects(flag, TRUTH, iou_threshold=0.3)
    assert areas.tolist() == pytest.approx([10_000.0])
    if hit:
        assert matches == [(0, 0, pytest.approx(0.35))]


def test_recall_ignores_small_truth_but_small_matches_are_true_positives():
    truth = layer([ubox(0, 0, 100, 100), ubox(500, 500, 50, 50)])  # 10 000 m² and 2 500 m²
    only_big = layer([ubox(0, 0, 100, 100)])
    m = object_metrics(only_big, truth, min_truth_area_m2=5000)
    assert m == {
        "object_recall": 1.0,
        "object_precision": 1.0,
        "n_flags": 1,
        "n_truth": 1,
        "tp": 1,
        "fp": 0,
        "fn": 0,
        "truth_found": 1,
    }
    both = layer([ubox(0, 0, 100, 100), ubox(500, 500, 50, 50)])
    m = object_metrics(both, truth, min_truth_area_m2=5000)
    assert (m["tp"], m["fp"], m["n_truth"], m["object_precision"]) == (2, 0, 1, 1.0)
    m = object_metrics(layer([ubox(500, 500, 50, 50)]), truth, min_truth_area_m2=5000)
    assert (m["object_recall"], m["object_precision"], m["fn"]) == (0.0, 1.0, 1)
    m = object_metrics(only_big, truth, min_truth_area_m2=0)
    assert (m["n_truth"], m["fn"], m["object_recall"]) == (2, 1, 0.5)


def test_matching_is_one_to_one_and_greedy_by_iou():
    flags = layer([ubox(0, 0, 60, 100), ubox(0, 0, 90, 100)])  # IoU 0.6 and 0.9 with the same truth
    matches, _ = match_objects(flags, TRUTH, iou_threshold=0.3)
    assert matches == [(1, 0, pytest.approx(0.9))]
    m = object_metrics(flags, TRUTH)
    assert (m["tp"], m["fp"], m["fn"], m["object_precision"]) == (1, 1, 0, 0.5)


def test_empty_layers_conventions():
    none_flags = layer([], confidence=[])
    none_truth = layer([])
    assert object_metrics(none_flags, TRUTH)["object_precision"] == 1.0
    assert object_metrics(none_flags, TRUTH)["object_recall"] == 0.0
    m = object_metrics(layer([ubox(0, 0, 10, 10)]), none_truth)
    assert (m["object_recall"], m["object_precision"], m["fp"]) == (1.0, 0.0, 1)
    m = object_metrics(none_flags, none_truth)
    assert (m["object_recall"], m["object_precision"], m["n_flags"], m["n_truth"]) == (1.0, 1.0, 0, 0)
    truth_no_site = gpd.GeoDataFrame(geometry=[], crs=4326)  # e.g. an empty truth file read back
    assert object_metrics(layer([ubox(0, 0, 10, 10)]), truth_no_site)["fp"] == 1


def test_matching_is_per_site_and_across_crs():
    truth_wgs = layer([ubox(0, 0, 100, 100)], site_id=["a"]).to_crs(4326)
    flag_a = layer([ubox(0, 0, 90, 100)], site_id=["a"])
    flag_b = layer([ubox(0, 0, 90, 100)], site_id=["b"])
    m = object_metrics(flag_a, truth_wgs)
    assert m["tp"] == 1 and m["object_recall"] == 1.0
    assert object_metrics(flag_b, truth_wgs)["tp"] == 0  # same place, other site
    _, areas = match_objects(flag_a, truth_wgs)
    assert areas[0] == pytest.approx(10_000.0, rel=1e-6)  # measured back in UTM


def test_missing_crs_is_an_error():
    no_crs = gpd.GeoDataFrame({"site_id": ["s"]}, geometry=[ubox(0, 0, 10, 10)])
    with pytest.raises(InvalidAOIError, match="CRS"):
        object_metrics(no_crs, TRUTH)


def test_pr_curve_filters_by_confidence():
    flags = layer([ubox(0, 0, 90, 100), ubox(300, 300, 100, 100)], confidence=[0.9, 0.5])
    curve = pr_curve(flags, TRUTH, [0.0, 0.6, 0.95], iou_threshold=0.3)
    assert [c["threshold"] for c in curve] == [0.0, 0.6, 0.95]
    assert [c["object_precision"] for c in curve] == [0.5, 1.0, 1.0]
    assert [c["object_recall"] for c in curve] == [1.0, 1.0, 0.0]
    assert [c["n_flags"] for c in curve] == [2, 1, 0]


def test_rasterize_truth_onto_detection_grid():
    like = make_detection()["score"]  # 64x64 px, 10 m, top-left at (X0, Y0)
    rows, cols = (10, 22), (5, 15)
    geom = box(X0 + cols[0] * 10, Y0 - rows[1] * 10, X0 + cols[1] * 10, Y0 - rows[0] * 10)
    expected = np.zeros((64, 64), bool)
    expected[rows[0] : rows[1], cols[0] : cols[1]] = True
    for truth in (layer([geom]), layer([geom]).to_crs(4326)):
        mask = rasterize_truth(truth, like)
        assert mask.dtype == bool and mask.shape == (64, 64)
        assert mask.sum() == 120
        assert np.array_equal(mask, expected)
    assert not rasterize_truth(layer([]), like).any()
    with pytest.raises(DetectionError, match="CRS"):
        rasterize_truth(layer([geom]), like.drop_vars("spatial_ref"))


def test_pixel_scores_hand_computed():
    pred = np.zeros((4, 5), bool)
    truth = np.zeros((4, 5), bool)
    pred[0, :4] = True  # 4 predicted
    truth[0, 2:] = True  # 3 true: overlap (0,2),(0,3) -> tp 2, fp 2, fn 1
    s = pixel_scores(pred, truth)
    assert (s["tp"], s["fp"], s["fn"]) == (2, 2, 1)
    assert all(type(s[k]) is int for k in ("tp", "fp", "fn"))
    assert s["pixel_precision"] == pytest.approx(0.5)
    assert s["pixel_recall"] == pytest.approx(2 / 3)
    assert s["pixel_f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert s["pixel_iou"] == pytest.approx(2 / 5)
    valid = np.ones((4, 5), bool)
    valid[0, 0] = valid[0, 4] = False  # drops one false positive and the false negative
    s = pixel_scores(pred, truth, valid)
    assert (s["tp"], s["fp"], s["fn"]) == (2, 1, 0)
    assert s["pixel_recall"] == 1.0
    empty = pixel_scores(np.zeros((2, 2), bool), np.zeros((2, 2), bool))
    assert (empty["pixel_precision"], empty["pixel_recall"], empty["pixel_iou"]) == (1.0, 1.0, 1.0)
    with pytest.raises(DetectionError, match="shape"):
        pixel_scores(pred, truth[:2])
