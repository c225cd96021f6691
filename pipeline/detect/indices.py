"""Spectral indices on reflectance DataArrays with a ``band`` dimension (names such as B04, B08, B11).

All functions are lazy-safe (work on dask-backed arrays) and return float32 without the ``band`` dim.
"""

from __future__ import annotations

import xarray as xr

from pipeline.errors import BandError

__all__ = ["normalized_difference", "ndvi", "ndbi", "bsi", "brightness", "has_bands"]


def has_bands(refl: xr.DataArray, *names: str) -> bool:
    """True when every band in ``names`` is in ``refl``'s ``band`` coordinate."""
    present = set(map(str, refl["band"].values))
    return all(n in present for n in names)


def _b(refl: xr.DataArray, name: str) -> xr.DataArray:
    if not has_bands(refl, name):
        raise BandError(f"band {name} is needed but the scene has only {list(map(str, refl['band'].values))}")
    return refl.sel(band=name, drop=True)


def normalized_difference(a: xr.DataArray, b: xr.DataArray) -> xr.DataArray:
    """(a - b) / (a + b), NaN where the sum is 0."""
    s = a + b
    return ((a - b) / s.where(s != 0)).astype("float32")


def ndvi(refl: xr.DataArray) -> xr.DataArray:
    """Normalised difference vegetation index (B08, B04)."""
    return normalized_difference(_b(refl, "B08"), _b(refl, "B04"))


def ndbi(refl: xr.DataArray) -> xr.DataArray:
    """Normalised difference built-up index (B11, B08); needs B11."""
    return normalized_difference(_b(refl, "B11"), _b(refl, "B08"))


def bsi(refl: xr.DataArray) -> xr.DataArray:
    """Bare soil index ((B11 + B04) - (B08 + B02)) / ((B11 + B04) + (B08 + B02)); needs B11."""
    return normalized_difference(_b(refl, "B11") + _b(refl, "B04"), _b(refl, "B08") + _b(refl, "B02"))


def brightness(refl: xr.DataArray) -> xr.DataArray:
    """Mean reflectance of the visible bands B02, B03, B04."""
    return ((_b(refl, "B02") + _b(refl, "B03") + _b(refl, "B04")) / 3).astype("float32")
