"""Per-date radiometric normalisation of a series onto its composite (pipeline.preprocess.radiometry)."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from pipeline.config import PreprocessSettings
from pipeline.preprocess import preprocess_cube
from pipeline.preprocess.radiometry import normalise_series, series_gains


def _series(n: int = 6, shape: tuple[int, int] = (40, 40), seed: int = 0) -> tuple[xr.DataArray, ...]:
    """A textured, unchanging 3-band landscape on ``n`` dates (small sensor noise), all clear."""
    rng = np.random.default_rng(seed)
    land = rng.uniform(0.05, 0.35, (3, *shape)).astype("float32")
    data = np.stack([land + rng.normal(0, 0.003, land.shape).astype("float32") for _ in range(n)])
    times = pd.date_range("2020-01-01", periods=n, freq="60D")
    refl = xr.DataArray(data, dims=("time", "band", "y", "x"),
                        coords={"time": times, "band": ["B02", "B03", "B04"]})
    clear = xr.DataArray(np.ones((n, *shape), bool), dims=("time", "y", "x"), coords={"time": times})
    return refl, clear


def test_a_display_stretched_date_is_mapped_back_and_new_roofs_survive() -> None:
    refl, clear = _series()
    truth = refl.copy()
    refl[3] = refl[3] * 2.5 + 0.04          # one date exported with another stretch
    refl[4:, :, 5:15, 5:15] = 0.45           # a bright roof from date 4 on (6 % of the pixels)
    out = normalise_series(refl, clear)
    gains = np.array(out.attrs["normalise_gains"]).reshape(6, 3)
    offsets = np.array(out.attrs["normalise_offsets"]).reshape(6, 3)
    assert gains[3] == pytest.approx([0.4] * 3, abs=0.01)
    assert offsets[3] == pytest.approx([-0.016] * 3, abs=0.005)
    assert np.delete(gains, 3, axis=0) == pytest.approx(np.ones((5, 3)), abs=0.03)
    # the stretched date is back on the others' scale, away from the roof
    np.testing.assert_allclose(out[3, :, 20:, 20:], truth[3, :, 20:, 20:], atol=0.01)
    # the roof is still there after normalisation (not absorbed by the fit)
    assert float(out[5, :, 5:15, 5:15].mean()) == pytest.approx(0.45, abs=0.03)


def test_cloudy_pixels_do_not_shape_the_fit_and_empty_dates_are_left_alone() -> None:
    refl, clear = _series()
    refl[2, :, :20] = 0.9                    # a cloud over half of date 2 ...
    clear[2, :20] = False                    # ... masked as not clear
    clear[5] = False                         # date 5 has no clear pixel
    gains, offsets = series_gains(refl.values, clear.values)
    assert gains[2] == pytest.approx([1.0] * 3, abs=0.03)
    assert gains[5].tolist() == [1.0, 1.0, 1.0] and offsets[5].tolist() == [0.0, 0.0, 0.0]


def test_dask_cube_stays_lazy_and_preprocess_applies_it_only_when_asked() -> None:
    refl, clear = _series()
    refl[1] = refl[1] * 2.0
    lazy = refl.copy(data=da.from_array(refl.values, chunks=(1, 3, 20, 20)))
    out = normalise_series(lazy, clear, max_pixels=400)  # fits on every 2nd row and column
    assert isinstance(out.data, da.Array)
    assert float(out.isel(time=1).mean()) == pytest.approx(float(refl.isel(time=0).mean()), rel=0.02)

    dn = (refl * 10000).round().astype("uint16")
    cube = xr.Dataset({"reflectance": dn, "scl": xr.full_like(clear, 4, dtype="uint8")})
    plain = preprocess_cube(cube, PreprocessSettings())
    assert "normalised" not in plain.attrs
    mean0 = float(refl.isel(time=0).mean())
    assert float(plain["reflectance"].isel(time=1).mean()) == pytest.approx(2 * mean0, rel=0.01)
    normed = preprocess_cube(cube, PreprocessSettings(normalise=True))
    assert normed.attrs["normalised"] == 1
    assert float(normed["reflectance"].isel(time=1).mean()) == pytest.approx(mean0, rel=0.02)
