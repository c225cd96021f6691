"""Clear-sky masks from the Sentinel-2 scene classification layer (SCL)."""

from __future__ import annotations

from collections.abc import Sequence

import xarray as xr

__all__ = ["clear_mask", "SCL_INVALID_DEFAULT"]

# 0 no data, 1 saturated/defective, 3 cloud shadow, 8 cloud medium, 9 cloud high, 10 cirrus, 11 snow/ice
SCL_INVALID_DEFAULT = (0, 1, 3, 8, 9, 10, 11)


def clear_mask(scl: xr.DataArray, invalid: Sequence[int] = SCL_INVALID_DEFAULT) -> xr.DataArray:
    """True where a pixel is clear (its SCL class is not in ``invalid``); same dims as ``scl``, lazy-safe."""
    out = ~scl.isin(list(invalid))
    out.name = "clear"
    return out
