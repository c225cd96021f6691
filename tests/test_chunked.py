"""Block-wise two-date detection (pipeline.detect.chunked) against detect_pair's CVA chain on the whole image."""

from __future__ import annotations

import numpy as np
import xarray as xr

from pipeline.config import DetectSettings

try:  # the CVA chain of detect_pair (detect_pair may dispatch to a learned chain)
    from pipeline.detect.pair import detect_pair_cva as detect_pair
except ImportError:  # pragma: no cover - before the learned chain existed
    from pipeline.detect import detect_pair
from pipeline.detect.chunked import PairStats, detect_pair_block, detect_pair_chunked, pair_magnitude

BANDS = ["B02", "B03", "B04", "B08", "B11", "B12"]


def _pair(seed: int = 0, n: int = 64) -> tuple[xr.DataArray, xr.DataArray]:
    rng = np.random.default_rng(seed)
    base = (0.1 + 0.2 * rng.random((len(BANDS), 1, 1)) + 0.02 * rng.standard_normal((len(BANDS), n, n)))
    before = base.astype(np.float32)
    after = (base + 0.01 * rng.standard_normal(base.shape)).astype(np.float32)
    after[:, 20:34, 10:40] = 0.45  # a bright new roof, 14 x 30 px
    after[:4, 50:55, 50:55] = np.nan  # no data
    after[[2, 3], 2:8, 2:8] = [[[0.03]], [[0.45]]]  # greening: red down, NIR up
    coords = {"band": BANDS, "y": np.arange(n) * -10.0, "x": np.arange(n) * 10.0}
    dims = ("band", "y", "x")
    return xr.DataArray(before, dims=dims, coords=coords), xr.DataArray(after, dims=dims, coords=coords)


def test_chunked_equals_detect_pair_with_full_stats() -> None:
    before, after = _pair()
    s = DetectSettings()
    ref = detect_pair(before, after, s)
    got = detect_pair_chunked(before, after, s)
    assert got.attrs["threshold"] == ref.attrs["threshold"]
    for v in ("change", "valid"):
        np.testing.assert_array_equal(got[v].values, ref[v].values)
    np.testing.assert_allclose(got["score"].values, ref["score"].values, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["confidence"].values, ref["confidence"].values, rtol=1e-5, atol=1e-6)
    assert int(got["change"].sum()) >= 250  # most of the 420 roof pixels (some are gated as greening)
    assert not got["change"].values[2:8, 2:8].any()  # greened pixels are gated


def test_blocks_with_global_stats_equal_whole_image() -> None:
    before, after = _pair(1)
    s = DetectSettings()
    bv, av = before.values, after.values
    mag, valid, _ = pair_magnitude(bv, av, BANDS, s.max_ndvi_gain)
    stats = PairStats.from_samples(mag[valid], s)
    whole = detect_pair_block(bv, av, BANDS, stats, s)
    top = detect_pair_block(bv[:, :32], av[:, :32], BANDS, stats, s)
    bottom = detect_pair_block(bv[:, 32:], av[:, 32:], BANDS, stats, s)
    np.testing.assert_array_equal(np.vstack([top["change"], bottom["change"]]), whole["change"])
    # stats from a subsample are close to the full ones
    sub = PairStats.from_samples(mag[::2, ::2][valid[::2, ::2]], s)
    assert abs(sub.median - stats.median) < 0.1 * stats.median


def test_score_magnitude_equals_detect_pair_block():
    """A block scored later from its magnitude (scan_pair_files' sample blocks) equals one detected at once."""
    from pipeline.config import DetectSettings
    from pipeline.detect.chunked import PairStats, detect_pair_block, pair_magnitude, score_magnitude

    rng = np.random.default_rng(5)
    bands = ["B02", "B03", "B04", "B08", "B11", "B12"]
    field = np.array([500, 700, 600, 3000, 2000, 1200])[:, None, None]  # vegetation, a little noise
    before = (field + rng.integers(-60, 60, (6, 40, 50))).astype(np.uint16)
    after = before.copy()
    roof = np.array([3000, 3200, 3400, 3000, 4000, 3800], np.uint16)  # a new bright roof (NDVI falls)
    after[:, 10:25, 5:30] = roof[:, None, None]
    after[0, 0, :5] = 0  # no data
    settings = DetectSettings()
    mag, valid, greened = pair_magnitude(before, after, bands, settings.max_ndvi_gain, scale=1e-4,
                                         zero_is_nodata=True)
    stats = PairStats.from_samples(mag[valid], settings)
    want = detect_pair_block(before, after, bands, stats, settings, scale=1e-4, zero_is_nodata=True)
    got = score_magnitude(mag, valid, greened, stats)
    assert want["change"][10:25, 5:30].mean() > 0.9 and not want["change"][0, :5].any()
    for k in ("change", "score", "valid", "confidence"):
        np.testing.assert_array_equal(got[k], want[k])
