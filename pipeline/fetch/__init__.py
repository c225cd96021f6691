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
from typing import TYPE_CHECKING, Protocol

import xarray as xr

from pipeline.config import Settings, Source
from pipeline.errors import ConfigError
from pipeline.grid import GridSpec

if TYPE_CHECKING:
    import geopandas as gpd

    from pipeline.sites import Site

__all__ = ["FetchRequest", "Fetcher", "make_fetcher", "request_for", "truth_for"]


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


def request_for(site: Site, settings: Settings) -> FetchRequest:
    """The :class:`FetchRequest` of ``site`` under ``settings`` (its UTM grid at ``fetch.resolution_m``)."""
    return FetchRequest(
        site_id=site.site_id,
        grid=site.grid(settings.fetch.resolution_m),
        start=settings.fetch.start,
        end=settings.fetch.end,
        bands=tuple(settings.fetch.bands),
        scenario=site.scenario,
    )


def make_fetcher(settings: Settings) -> Fetcher:
    """The fetcher for ``settings.fetch.source`` (imported lazily: each source has its own client)."""
    source = settings.fetch.source
    invalid = settings.preprocess.invalid_scl
    if source is Source.SYNTHETIC:
        from pipeline.fetch.synthetic import SyntheticFetcher

        syn = settings.synthetic
        return SyntheticFetcher(seed=syn.seed, revisit_days=syn.revisit_days, horizon=syn.horizon)
    if source is Source.SENTINELHUB:
        from pipeline.fetch.sentinelhub import SentinelHubFetcher

        sh = settings.sentinelhub.model_copy(update={"max_cloud_cover": settings.fetch.max_cloud_cover})
        return SentinelHubFetcher(sh, invalid_scl=invalid)
    if source is Source.STAC:
        from pipeline.fetch.stac import StacFetcher

        stac = settings.stac.model_copy(update={"max_cloud_cover": settings.fetch.max_cloud_cover})
        return StacFetcher(stac, invalid_scl=invalid)
    if source is Source.LOCAL and settings.local is not None:
        from pipeline.fetch.local import LocalFetcher

        return LocalFetcher(settings.local, invalid_scl=invalid)
    raise ConfigError(f"fetch.source: {source.value!r} needs its own section in params.yaml (e.g. `local:`)")


def truth_for(fetcher: Fetcher, request: FetchRequest, control: bool = False) -> gpd.GeoDataFrame:
    """Ground-truth polygons of ``request`` in WGS84 (EPSG:4326).

    Only the synthetic source knows the truth (its ``truth`` method); real sources and control sites
    (no construction expected) give an empty layer with the ``truth_id``/``site_id`` columns.
    """
    import geopandas as gpd

    truth_fn = getattr(fetcher, "truth", None)
    if truth_fn is not None and not control:
        return truth_fn(request).to_crs(4326)
    return gpd.GeoDataFrame({"truth_id": [], "site_id": []}, geometry=[], crs=4326)
