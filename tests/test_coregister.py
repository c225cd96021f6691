"""Tests for pipeline.preprocess.coregister and pipeline.preprocess.normalise (tiny synthetic arrays)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from pipeline.preprocess.coregister import MAX_SHIFT_PX, apply_shift, coregister, estimate_shift
from pipeline.preprocess.normalise import invariant_mask, normalise_to


def _texture(shape: tuple[int, int] = (64, 64), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.random(shape), 1.5).astype(np.float32) + 0.1


def test_estimate_shift_recovers_subpixel_translation() -> None:
    ref = _texture((96, 96))
    moved = ndimage.shift(ref, (0.6, -1.3), order=3, mode="nearest")
    dy, dx = estimate_shift(ref, moved)
    # moving AFTER by (dy, dx) puts it back onto BEFORE: the opposite of the applied shift
    assert dy == pytest.approx(-0.6, abs=0.15)
    assert dx == pytest.approx(1.3, abs=0.15)


def test_estimate_shift_zero_for_identical_and_flat_images() -> None:
    ref = _texture()
    assert estimate_shift(ref, ref) == pytest.approx((0.0, 0.0), abs=0.05)
    flat = np.full((64, 64), 0.2, np.float32)
    assert estimate_shift(flat, ref) == (0.0, 0.0)
    assert estimate_shift(ref[:8, :8], ref[:8, :8]) == (0.0, 0.0)  # too small to trust


def test_estimate_shift_rejects_large_shift() -> None:
    ref = _texture((96, 96))
    moved = np.roll(ref, (8, 0), axis=(0, 1))
    assert MAX_SHIFT_PX < 8
    assert estimate_shift(ref, moved) == (0.0, 0.0)


def test_estimate_shift_tolerates_nan() -> None:
    ref = _texture((96, 96))
    moved = ndimage.shift(ref, (1.0, 0.0), order=1, mode="nearest")
    moved[:5] = np.nan
    dy, dx = estimate_shift(ref, moved)
    assert dy == pytest.approx(-1.0, abs=0.2) and dx == pytest.approx(0.0, abs=0.2)


def test_apply_shift_integer_moves_pixels_and_marks_edges_nan() -> None:
    img = np.arange(36, dtype=np.float32).reshape(6, 6)
    out = apply_shift(img, (1.0, 0.0))
    assert np.isnan(out[0]).all()
    np.testing.assert_allclose(out[1:], img[:-1])
    stack = np.stack([img, img * 2])
    out3 = apply_shift(stack, (0.0, -2.0))
    assert out3.shape == (2, 6, 6)
    np.testing.assert_allclose(out3[1, :, :4], 2 * img[:, 2:])
    assert np.isnan(out3[:, :, 4:]).all()


def test_apply_shift_spreads_nan_holes_only_locally() -> None:
    img = np.ones((10, 10), np.float32)
    img[5, 5] = np.nan
    out = apply_shift(img, (0.5, 0.0))
    assert np.isnan(out[5, 5]) and np.isnan(out[6, 5])
    assert np.isfinite(out[8, 8]) and out[8, 8] == pytest.approx(1.0)


def test_coregister_aligns_stack() -> None:
    ref = _texture((80, 80), seed=3)
    before = np.stack([ref, ref * 1.5])
    after = np.stack([ndimage.shift(b, (-0.8, 0.5), order=3, mode="nearest") for b in before])
    out, (dy, dx) = coregister(before, after, ref_index=1)
    assert dy == pytest.approx(0.8, abs=0.15) and dx == pytest.approx(-0.5, abs=0.15)
    inner = (slice(5, -5), slice(5, -5))
    err_before = np.nanmean(np.abs(after[0][inner] - ref[inner]))
    err_after = np.nanmean(np.abs(out[0][inner] - ref[inner]))
    assert err_after < 0.3 * err_before


def test_normalise_recovers_gain_and_offset_despite_changed_pixels() -> None:
    rng = np.random.default_rng(1)
    before = rng.uniform(0.05, 0.4, (3, 64, 64)).astype(np.float32)
    gains = np.array([1.2, 0.9, 1.05], np.float32)
    offs = np.array([0.02, -0.01, 0.0], np.float32)
    after = (before - offs[:, None, None]) / gains[:, None, None]  # so that gains*after+offs == before
    after = after + rng.normal(0, 0.002, after.shape).astype(np.float32)
    after[:, :16, :16] = 0.9  # a changed block (bright new roofs), ~6 % of the pixels
    out, g, o = normalise_to(before, after)
    np.testing.assert_allclose(g, gains, atol=0.03)
    np.testing.assert_allclose(o, offs, atol=0.01)
    unchanged = np.ones((64, 64), bool)
    unchanged[:16, :16] = False
    assert np.abs(out - before)[:, unchanged].mean() < 0.005


def test_invariant_mask_excludes_change_and_nan() -> None:
    rng = np.random.default_rng(2)
    before = rng.uniform(0.05, 0.3, (2, 32, 32)).astype(np.float32)
    after = before + rng.normal(0, 0.003, before.shape).astype(np.float32)
    after[:, :8, :8] += 0.5
    after[0, 20, 20] = np.nan
    m = invariant_mask(before, after, keep=0.5)
    assert not m[:8, :8].any()
    assert not m[20, 20]
    assert 0.4 < m.mean() < 0.6


def test_normalise_leaves_tiny_input_unchanged() -> None:
    before = np.full((2, 5, 5), 0.1, np.float32)
    after = np.full((2, 5, 5), 0.2, np.float32)
    out, g, _o = normalise_to(before, after)
    np.testing.assert_array_equal(g, [1, 1])
    np.testing.assert_array_equal(out, after)
