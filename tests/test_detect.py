"""Detectors on tiny hand-built series: step changes, transients, greening, thresholds, pair mode."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from pipeline.config import DetectSettings
from pipeline.detect import detect_pair, detect_series
from pipeline.detect.pair import _detect_pair_cva_normalised
from pipeline.detect.persistence import nan_lower_quantile
from pipeline.detect.threshold import otsu_threshold
from pipeline.errors import BandError, DetectionError
from pipeline.preprocess import clear_mask, to_reflectance

BANDS = ["B02", "B03", "B04", "B08", "B11", "B12"]
SOIL = np.array([0.15, 0.19, 0.24, 0.29, 0.36, 0.32], "float32")
ROOF = np.array([0.26, 0.24, 0.17, 0.20, 0.17, 0.14], "float32")
CROP = np.array([0.035, 0.07, 0.04, 0.42, 0.20, 0.10], "float32")


def _series(n=30, shape=(24, 24), seed=0):
    rng = np.random.default_rng(seed)
    times = pd.date_range("2020-01-15", periods=n, freq="30D")
    data = np.broadcast_to(SOIL[None, :, None, None], (n, len(BANDS), *shape)).copy()
    data += rng.normal(0, 0.004, data.shape).astype("float32")
    da = xr.DataArray(
        data,
        dims=("time", "band", "y", "x"),
        coords={"time": times, "band": BANDS, "y": 1000.0 - 10 * np.arange(shape[0]), "x": 10.0 * np.arange(shape[1])},
    )
    clear = xr.DataArray(np.ones((n, *shape), bool), dims=("time", "y", "x"), coords={"time": times})
    return da, clear


def test_step_change_found_with_its_dates():
    refl, clear = _series()
    refl[20:, :, 5:13, 5:13] = ROOF[:, None, None]
    det = detect_series(refl, clear, DetectSettings())
    assert det["change"].values[5:13, 5:13].all()
    assert det["change"].values.sum() == 64
    assert set(np.unique(det["break_index"].values[5:13, 5:13])) == {20}
    assert set(np.unique(det["after_index"].values[5:13, 5:13])) == {19}
    assert (det["break_index"].values[~det["change"].values] == -1).all()
    assert 0.5 <= float(det["confidence"].values[8, 8]) <= 1.0
    assert float(det["confidence"].values[0, 0]) == 0.0


def test_cloud_hidden_break_date_uses_last_clear_date():
    refl, clear = _series()
    refl[20:, :, 5:13, 5:13] = ROOF[:, None, None]
    clear[19] = False  # the date before the change is cloudy
    clear[20] = False  # and so is the first date with it
    det = detect_series(refl, clear, DetectSettings())
    assert int(det["break_index"].values[8, 8]) == 21
    assert int(det["after_index"].values[8, 8]) == 18


def test_transient_changes_are_not_persistent():
    refl, clear = _series()
    refl[20:22, :, 5:13, 5:13] = ROOF[:, None, None]  # two dates only (e.g. a parked convoy, snow)
    refl[25, :, 0:4, 0:4] = 0.8  # an unmasked cloud
    det = detect_series(refl, clear, DetectSettings())
    assert det["change"].values.sum() == 0


def test_seasonal_crop_cycle_is_not_change_but_greening_gate_holds():
    refl, clear = _series()
    times = pd.DatetimeIndex(refl.time.values)
    veg = np.clip(np.sin(np.pi * (times.dayofyear.values - 100) / 130), 0, None) * (times.dayofyear.values > 100)
    cycle = SOIL[None] * (1 - veg[:, None]) + CROP[None] * veg[:, None]
    refl[:, :, 0:10, 14:24] = cycle[:, :, None, None]
    refl[22:, :, 14:22, 0:8] = CROP[:, None, None]  # new permanent vegetation: greening, not a compound
    det = detect_series(refl, clear, DetectSettings())
    assert det["change"].values[0:10, 14:24].sum() == 0
    assert det["change"].values[14:22, 0:8].sum() == 0


def test_fixed_threshold_and_dask_chunks_give_same_result():
    refl, clear = _series()
    refl[18:, :, 2:9, 2:9] = ROOF[:, None, None]
    eager = detect_series(refl, clear, DetectSettings(threshold=8.0))
    lazy = detect_series(refl.chunk({"y": 8, "x": 8}), clear.chunk({"y": 8, "x": 8}), DetectSettings(threshold=8.0))
    assert eager.attrs["threshold"] == 8.0
    np.testing.assert_array_equal(eager["change"].values, lazy["change"].values)
    np.testing.assert_allclose(eager["score"].values, lazy["score"].values, rtol=1e-6)


def test_too_short_series_is_a_clear_error():
    refl, clear = _series(n=10)
    with pytest.raises(DetectionError, match="reference_months"):
        detect_series(refl, clear, DetectSettings(reference_months=12))


def test_pair_detects_new_roofs_and_needs_visible_bands():
    refl, _ = _series(n=2)
    before, after = refl.isel(time=0, drop=True), refl.isel(time=1, drop=True).copy()
    after[:, 4:12, 4:12] = ROOF[:, None, None]
    after[:, 0, 0] = np.nan
    det = detect_pair(before, after, DetectSettings(pair_method="cva"))
    assert det.attrs["method"] == "pair-cva"
    assert det["change"].values[4:12, 4:12].all()
    assert det["change"].values.sum() == 64
    assert not det["valid"].values[0, 0]
    # a true-colour pair runs the spatial model; where no model fits, normalised CVA (no vegetation gate):
    # an AFTER with another display stretch (gain 1.8, offset 0.03) finds the same roofs
    rgb = ["B02", "B03", "B04"]
    stretched = after.sel(band=rgb) * 1.8 + 0.03
    assert detect_pair(before.sel(band=rgb), stretched, DetectSettings()).attrs["method"] == "pair-unet-rgb"
    det_rgb = _detect_pair_cva_normalised(before.sel(band=rgb), stretched, DetectSettings(), rgb)
    assert det_rgb.attrs["method"] == "pair-cva-normalised"
    assert all(0.45 <= g <= 0.65 for g in det_rgb.attrs["gains"])  # ~1/1.8 (noise-only scene: rough)
    assert det_rgb["change"].values[4:12, 4:12].all()
    assert det_rgb["change"].values.sum() == 64
    with pytest.raises(BandError, match="B04"):
        detect_pair(before.sel(band=["B02", "B03"]), after.sel(band=["B02", "B03"]), DetectSettings())


def test_harmonise_removes_baseline_offset_and_nodata():
    dn = xr.DataArray(np.array([[2500, 0], [3500, 3500]], "uint16"), dims=("time", "x"))
    off = xr.DataArray([0, -1000], dims="time")
    r = to_reflectance(dn, off).values
    assert r[0, 0] == pytest.approx(0.25)
    assert np.isnan(r[0, 1])
    assert r[1, 0] == pytest.approx(0.25)


def test_clear_mask_from_scl():
    scl = xr.DataArray(np.array([4, 5, 3, 8, 9, 11, 6], "uint8"), dims="x")
    assert clear_mask(scl).values.tolist() == [True, True, False, False, False, False, True]


def test_otsu_threshold_floor_and_split():
    v = np.r_[np.full(900, 1.0), np.full(100, 20.0)] + np.linspace(0, 0.01, 1000)
    t = otsu_threshold(v)
    assert v[:900].max() < t < v[900:].min()
    assert (v > t).sum() == 100
    assert otsu_threshold(v, floor=50.0) == 50.0
    assert otsu_threshold(np.ones(5), floor=3.0) == 3.0


def test_nan_lower_quantile_matches_numpy():
    rng = np.random.default_rng(1)
    a = rng.random((9, 5, 4)).astype("float32")
    a[rng.random(a.shape) < 0.3] = np.nan
    a[:, 0, 0] = np.nan
    got = nan_lower_quantile(a, 0.2)
    want = np.nanquantile(a[:, 1:, :], 0.2, axis=0, method="lower")
    np.testing.assert_allclose(got[1:, :], want, rtol=1e-6)
    assert np.isnan(got[0, 0])


def test_rgb_only_series_still_detects():
    refl, clear = _series()
    refl[20:, :, 5:13, 5:13] = ROOF[:, None, None]
    det = detect_series(refl.sel(band=["B02", "B03", "B04"]), clear, DetectSettings())
    assert det["change"].values[5:13, 5:13].all()
    assert det["change"].values.sum() == 64


def test_pair_uses_the_learned_model_when_one_fits_the_bands():
    refl, _ = _series(n=2, shape=(40, 40))
    before, after = refl.isel(time=0, drop=True), refl.isel(time=1, drop=True).copy()
    after[:, 12:28, 12:28] = ROOF[:, None, None]
    det = detect_pair(before, after, DetectSettings())  # pair_method auto: 6 bands -> the 4-band ensemble
    assert det.attrs["method"] == "pair-ensemble-s2-4+cva"
    assert 0 < det.attrs["threshold"] < 1  # a probability
    assert det["change"].values[14:26, 14:26].mean() > 0.9
    assert det["change"].values[:8, :8].sum() == 0
    with pytest.raises(BandError, match="no shipped model"):
        detect_pair(before.sel(band=["B02", "B03"]), after.sel(band=["B02", "B03"]),
                     DetectSettings(pair_method="learned"))
