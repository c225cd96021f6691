"""Fetchers: the I/O edge that turns a :class:`FetchRequest` into an ``xarray.Dataset`` scene cube.

The cube contract (every fetcher returns it, everything downstream relies on it):

- ``reflectance``: uint16 ``(time, band, y, x)``, Sentinel-2 L2A digital numbers (reflectance × 10000,
  plus the per-date ``boa_add_offset`` of processing baseline 04.00+ *not yet removed*);
- ``scl``: uint8 ``(time, y, x)``, Sentinel-2 scene classification (0 no data … 11 snow);
- coords ``time`` (datetime64, acquisition date), ``band`` (names such as ``B02``), ``y``/``x`` (pixel
  centres in metres of the site's UTM CRS), ``boa_add_offset`` (int, per time, e.g. -1000 or 0),
  ``scene_id`` (str, per time), and a rioxarray ``spatial_ref`` carrying the CRS.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol

import xarray as xr

from pipeline.grid import GridSpec

__all__ = ["FetchRequest", "Fetcher"]


@dataclass(frozen=True)
class FetchRequest:
    """What to fetch for one site: its grid (UTM), the date range (inclusive, UTC) and band names."""

    site_id: str
    grid: GridSpec
    start: dt.date
    end: dt.date
    bands: tuple[str, ...]
    scenario: str = "arid"


class Fetcher(Protocol):
    """Anything that can produce the scene cube described in this module's docstring."""

    def fetch(self, request: FetchRequest) -> xr.Dataset: ...
