"""Tests for pipeline.detect.features (tiny synthetic reflectance stacks)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.detect.features import (
    BAND_SETS,
    MIN_BANDS,
    build_features,
    choose_band_set,
    feature_names,
)
from pipeline.errors import BandError

SOIL = {"B01": 0.08, "B02": 0.09, "B03": 0.12, "B04": 0.16, "B05": 0.19, "B06": 0.2, "B07": 0.21,
        "B08": 0.22, "B8A": 0.23, "B09": 0.05, "B10": 0.01, "B11": 0.30, "B12": 0.26}
ROOF = {b: 0.45 for b in SOIL}


def _pair(bands: tuple[str, ...], size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    before = np.stack([np.full((size, size), SOIL[b], np.float32) for b in bands])
    before += rng.normal(0, 0.002, before.shape).astype(np.float32)
    after = before + rng.normal(0, 0.002, before.shape).astype(np.float32)
    after[:, 10:18, 10:18] = np.array([ROOF[b] for b in bands], np.float32)[:, None, None]
    return before, after


def test_choose_band_set_richest_available() -> None:
    assert choose_band_set(BAND_SETS["s2-13"]) == "s2-13"
    assert choose_band_set([b for b in BAND_SETS["s2-13"] if b != "B10"]) == "s2-10"
    assert choose_band_set(["B02", "B03", "B04", "B08", "B11", "B12", "B05"]) == "s2-6"
    assert choose_band_set(["B08", "B04", "B03", "B02"]) == "s2-4"
    assert choose_band_set(BAND_SETS["s2-13"], available=["s2-6", "s2-4"]) == "s2-6"


def test_choose_band_set_needs_min_bands() -> None:
    with pytest.raises(BandError, match="B02"):
        choose_band_set(["B03", "B04", "B08"])


@pytest.mark.parametrize("band_set", list(BAND_SETS))
def test_build_features_shapes_names_finite(band_set: str) -> None:
    bands = BAND_SETS[band_set]
    before, after = _pair(bands)
    names, feats, valid = build_features(before, after, bands, band_set)
    assert names == feature_names(band_set)
    assert len(set(names)) == len(names)
    assert feats.shape == (len(names), 32, 32)
    assert feats.dtype == np.float32
    assert np.isfinite(feats).all()
    assert valid.all()
    assert ("i1_NDBI" in names) == ("B11" in bands)


def test_change_features_high_inside_block_low_outside() -> None:
    bands = BAND_SETS["s2-6"]
    before, after = _pair(bands)
    names, feats, _ = build_features(before, after, bands, "s2-6")
    cva = feats[names.index("cva")]
    assert cva[12:16, 12:16].min() > 0.4  # |roof - soil| over 6 bands
    assert cva[:5, :5].max() < 0.02
    d_bright = feats[names.index("di_BRIGHT")]
    assert d_bright[14, 14] == pytest.approx(0.45 - (0.09 + 0.12 + 0.16) / 3, abs=0.01)
    # the 3x3 shift-tolerant CVA is ~0 on the block's edge only when AFTER is misregistered; here the
    # block interior stays high and it never exceeds the plain CVA
    cmin = feats[names.index("cva_min3")]
    assert (cmin <= cva + 1e-6).all()
    assert cmin[13, 13] > 0.4


def test_band_order_does_not_matter() -> None:
    bands = BAND_SETS["s2-4"]
    before, after = _pair(bands)
    order = [3, 1, 0, 2]
    n1, f1, _ = build_features(before, after, bands, "s2-4")
    n2, f2, _ = build_features(before[order], after[order], [bands[i] for i in order], "s2-4")
    assert n1 == n2
    np.testing.assert_allclose(f1, f2, rtol=1e-5, atol=1e-6)


def test_nan_pixels_invalid_but_features_finite() -> None:
    bands = MIN_BANDS
    before, after = _pair(bands)
    before[:, 0, 0] = np.nan
    after[2, 5, 5] = np.nan
    _, feats, valid = build_features(before, after, bands, "s2-4")
    assert not valid[0, 0] and not valid[5, 5]
    assert valid.sum() == 32 * 32 - 2
    assert np.isfinite(feats).all()


def test_missing_band_raises() -> None:
    bands = MIN_BANDS
    before, after = _pair(bands)
    with pytest.raises(BandError, match="B11"):
        build_features(before, after, bands, "s2-6")
    with pytest.raises(BandError, match="unknown band set"):
        build_features(before, after, bands, "s2-99")
