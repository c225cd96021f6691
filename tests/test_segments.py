"""Tests for pipeline.detect.segments (superpixel averaging of a change probability)."""

from __future__ import annotations

import numpy as np

from pipeline.detect.segments import SEGMENT_BANDS, SegmentRule, segment_average, superpixels


def _pair(size: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Soil with a dark field (rows 45-60) on both dates; AFTER has a bright 20 x 20 px roof at rows/cols
    20-40."""
    rng = np.random.default_rng(0)
    b = np.full((4, size, size), 0.15, np.float32) + rng.normal(0, 0.002, (4, size, size)).astype(np.float32)
    b[:, 45:, :] -= 0.1
    a = b.copy()
    a[:, 20:40, 20:40] = 0.45
    return b, a


def test_superpixels_follow_the_new_roof() -> None:
    b, a = _pair()
    seg = superpixels(b, a, SEGMENT_BANDS)
    assert seg.shape == (60, 60) and seg.dtype.kind == "i"
    inside = np.zeros_like(seg, bool)
    inside[20:40, 20:40] = True
    roof = np.unique(seg[22:38, 22:38])
    assert roof.size <= 3  # a few large segments cover the roof ...
    for r in roof:  # ... and do not leak out of it
        assert inside[seg == r].mean() > 0.95, r


def test_superpixels_bands_by_name_and_nan() -> None:
    b, a = _pair()
    want = superpixels(b, a, SEGMENT_BANDS)
    order = ("B08", "B04", "B03", "B02")
    flip = [SEGMENT_BANDS.index(x) for x in order]
    np.testing.assert_array_equal(superpixels(b[flip], a[flip], order), want)  # bands matched by name
    extra = np.concatenate([b, b[:1] * 2])  # a fifth band (B11) is ignored
    np.testing.assert_array_equal(superpixels(extra, np.concatenate([a, a[:1]]), (*SEGMENT_BANDS, "B11")), want)
    a[:, 0, 0] = np.nan  # no data: still labelled (its probability is 0 and stays 0)
    seg = superpixels(b, a, SEGMENT_BANDS)
    assert seg.shape == (60, 60) and seg.min() == 0 and seg.max() == np.unique(seg).size - 1  # labels 0..n-1


def test_segment_average_values() -> None:
    labels = np.array([[0, 0, 1], [0, 0, 1]])
    prob = np.array([[0.2, 0.6, 0.9], [0.4, 0.0, 0.5]], np.float32)
    out = segment_average(prob, labels, 0.5)
    # segment 0 mean = (0.2 + 0.6 + 0.4 + 0.0) / 4 = 0.3; segment 1 mean = 0.7; invalid (0) stays 0
    np.testing.assert_allclose(out, [[0.25, 0.45, 0.8], [0.35, 0.0, 0.6]], atol=1e-6)
    assert out.dtype == np.float32
    np.testing.assert_allclose(segment_average(prob, labels, 0.0), prob)
    np.testing.assert_allclose(segment_average(prob, labels, 1.0)[0], [0.3, 0.3, 0.7], atol=1e-6)


def test_rule_round_trip() -> None:
    rule = SegmentRule(50.0, 1.0, 10, 0.3)
    assert SegmentRule.from_dict(rule.as_dict()) == rule
    assert SegmentRule().as_dict() == {"scale": 100.0, "sigma": 0.5, "min_size": 20, "weight": 0.5}
