"""Change-vector analysis: features and the magnitude of their difference between dates."""

from __future__ import annotations

import xarray as xr

from pipeline.detect.indices import bsi, has_bands, ndbi

__all__ = ["change_features", "change_magnitude", "INDEX_WEIGHT"]

# Built-up indices range over -1..1 while reflectances of land sit in 0..0.5: scale the index axes so that
# a jump of 0.4 in NDBI weighs about as much as a 0.1 jump in one band.
INDEX_WEIGHT = 0.25


def change_features(refl: xr.DataArray) -> xr.DataArray:
    """Feature vectors for CVA: the reflectance bands plus weighted NDBI and BSI (when B11 is present).

    ``refl`` has a ``band`` dim; the result has a ``feature`` dim in its place (float32, unitless).
    """
    feats = [refl.rename(band="feature")]
    if has_bands(refl, "B02", "B04", "B08", "B11"):
        extra = xr.concat([ndbi(refl), bsi(refl)], dim="feature") * INDEX_WEIGHT
        extra = extra.assign_coords(feature=["NDBI", "BSI"])
        feats.append(extra)
    out = xr.concat(feats, dim="feature").astype("float32")
    return out.assign_coords(feature=[str(f) for f in out["feature"].values])


def change_magnitude(a: xr.DataArray, b: xr.DataArray, dim: str = "feature") -> xr.DataArray:
    """Euclidean length of ``b - a`` along ``dim`` (same units as the features)."""
    return ((b - a) ** 2).sum(dim, skipna=False) ** 0.5
