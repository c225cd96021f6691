"""Preprocessing: radiometric harmonisation and clear-sky masks (pure functions over xarray)."""

from __future__ import annotations

import xarray as xr

from pipeline.config import PreprocessSettings
from pipeline.preprocess.harmonise import to_reflectance
from pipeline.preprocess.mask import clear_mask
from pipeline.preprocess.radiometry import normalise_series

__all__ = ["to_reflectance", "clear_mask", "normalise_series", "preprocess_cube"]


def preprocess_cube(cube: xr.Dataset, settings: PreprocessSettings) -> xr.Dataset:
    """Harmonised float32 reflectance (0-1) and clear mask of a scene cube; lazy if ``cube`` is.

    A pixel is clear when its SCL class is not in ``settings.invalid_scl`` and every band has data. The
    ``boa_add_offset`` coordinate is dropped once applied, so it cannot be applied twice. With
    ``settings.normalise`` every date is then mapped onto the series' median composite
    (:func:`~pipeline.preprocess.radiometry.normalise_series`).
    """
    offset = cube["boa_add_offset"] if settings.harmonise and "boa_add_offset" in cube.coords else None
    refl = to_reflectance(cube["reflectance"], offset)
    clear = clear_mask(cube["scl"], settings.invalid_scl) & refl.notnull().all("band")
    if settings.normalise:
        refl = normalise_series(refl, clear)
    out = xr.Dataset({"reflectance": refl.astype("float32"), "clear": clear.astype(bool)}, attrs=dict(cube.attrs))
    out = out.drop_vars("boa_add_offset", errors="ignore")
    out.attrs["harmonised"] = int(settings.harmonise)
    if settings.normalise:
        out.attrs["normalised"] = 1
    return out
