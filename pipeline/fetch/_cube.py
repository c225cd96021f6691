"""Assemble the scene cube (see :mod:`pipeline.fetch`) from per-date arrays; shared by the real fetchers."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr

from pipeline.fetch import FetchRequest

__all__ = ["DEFAULT_INVALID_SCL", "L1C_SCL_CODES", "has_clear", "build_cube", "empty_note"]

DEFAULT_INVALID_SCL: tuple[int, ...] = (0, 1, 3, 8, 9, 10, 11)
"""SCL classes that are not clear (no data, saturated, shadow, cloud medium/high, cirrus, snow)."""

L1C_SCL_CODES = {"nodata": 0, "clear": 7, "cloud": 9}
"""SCL-like codes written for L1C scenes (no scene classification): a cloud mask (Sentinel Hub ``CLM``,
s2cloudless) becomes 9 (cloud, high probability) where cloudy, 7 (unclassified, treated as clear) where
not, and 0 where there is no data. Shadows and snow are therefore *not* flagged for L1C."""


def has_clear(scl: np.ndarray, invalid: Sequence[int] = DEFAULT_INVALID_SCL) -> bool:
    """Whether any pixel of an SCL (or SCL-like) array is clear."""
    return bool((~np.isin(scl, np.asarray(invalid, dtype=scl.dtype))).any())


def empty_note(date: dt.date, scene_id: str, why: str = "no clear pixel over the AOI") -> str:
    """The provenance line kept in ``ds.attrs["skipped"]`` for a skipped scene."""
    return f"{date.isoformat()} {scene_id}: {why}"


def build_cube(
    request: FetchRequest,
    dates: Sequence[dt.date],
    reflectance: np.ndarray | Any,
    scl: np.ndarray | Any,
    offsets: Sequence[int],
    scene_ids: Sequence[str],
    attrs: dict[str, Any],
    skipped: Sequence[str] = (),
) -> xr.Dataset:
    """The cube: ``reflectance`` uint16 ``(time, band, y, x)`` and ``scl`` uint8 ``(time, y, x)`` on
    ``request.grid`` (numpy or dask arrays), with coords ``time``, ``band``, ``y``, ``x``,
    ``boa_add_offset`` and ``scene_id``, the CRS/transform written by rioxarray and
    ``attrs["skipped"]`` listing the scenes left out (one line each)."""
    h, w = request.grid.shape
    nt, nb = len(dates), len(request.bands)
    if nt == 0:
        reflectance = np.zeros((0, nb, h, w), np.uint16)
        scl = np.zeros((0, h, w), np.uint8)
    y, x = request.grid.coords()
    ds = xr.Dataset(
        {
            "reflectance": (("time", "band", "y", "x"), reflectance),
            "scl": (("time", "y", "x"), scl),
        },
        coords={
            "time": pd.to_datetime([d.isoformat() for d in dates]).values.astype("datetime64[ns]"),
            "band": list(request.bands),
            "y": y,
            "x": x,
            "boa_add_offset": ("time", np.asarray(offsets, dtype=np.int32).reshape(nt)),
            "scene_id": ("time", np.asarray([str(s) for s in scene_ids], dtype=str).reshape(nt)),
        },
        attrs={"site_id": request.site_id, **attrs, "skipped": list(skipped)},
    )
    ds["reflectance"].attrs.update(units="DN", long_name="Sentinel-2 L2A digital numbers (reflectance x 10000)")
    ds["scl"].attrs.update(long_name="Sentinel-2 scene classification")
    ds = ds.rio.write_crs(request.grid.epsg)
    return ds.rio.write_transform(request.grid.affine)
