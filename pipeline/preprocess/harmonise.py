"""Digital numbers to surface reflectance, removing the processing-baseline 04.00 offset.

Sentinel-2 products processed with baseline 04.00 or later (from 25 January 2022) store
``DN = reflectance × 10000 - BOA_ADD_OFFSET`` with ``BOA_ADD_OFFSET = -1000``. Adding the offset back makes
series across 2022 comparable.
"""

from __future__ import annotations

import xarray as xr

__all__ = ["to_reflectance", "QUANTIFICATION_VALUE"]

QUANTIFICATION_VALUE = 10000.0


def to_reflectance(dn: xr.DataArray, boa_add_offset: xr.DataArray | float | None = None) -> xr.DataArray:
    """Convert L2A digital numbers to float32 reflectance (unitless, 0-1).

    Parameters
    ----------
    dn
        Digital numbers (any dims, typically ``(time, band, y, x)``); 0 is no data.
    boa_add_offset
        Offset per date (broadcast along matching dims, e.g. a ``time`` coordinate) or a scalar; ``None``
        means no offset (baseline < 04.00 or already harmonised).

    Returns
    -------
    xarray.DataArray
        ``(dn + offset) / 10000`` as float32, NaN where ``dn == 0``; lazy if ``dn`` is dask-backed.
    """
    values = dn.astype("float32")
    if boa_add_offset is not None:
        values = values + xr.DataArray(boa_add_offset).astype("float32")
    out = (values / QUANTIFICATION_VALUE).where(dn != 0)
    out.attrs = {**dn.attrs, "units": "1", "long_name": "surface reflectance"}
    return out.astype("float32")
