"""Sentinel-2 from any STAC API through pystac-client (search) and odc-stac (lazy, dask-backed load).

The search covers the site's grid (its WGS84 bounds), ``[start, end]`` and ``eo:cloud_cover <=
max_cloud_cover`` (STAC ``query`` extension). Items are loaded onto the request's UTM grid (same EPSG,
transform and shape; bilinear for reflectance, nearest for SCL), grouped by solar day, as uint16 DNs and
uint8 SCL. Reflectance stays lazy (dask, ``chunk_px`` square chunks); SCL is read eagerly to drop solar
days without any clear pixel (listed in ``ds.attrs["skipped"]``).

Band assets are found by name: ``band_assets`` overrides, else ``B04``/``b04``, else Earth Search's common
names (``red``, ``nir``, ``swir16`` …); the SCL asset is ``scl_asset`` or ``SCL``/``scl``. The per-date
``boa_add_offset`` comes from item metadata (:mod:`pipeline.fetch.harmonise_meta`): Earth Search items
that say ``earthsearch:boa_offset_applied: true`` get 0. Planetary Computer needs ``sign: true`` and the
``planetary-computer`` package (asset URLs are signed on the fly).

HTTP 429/5xx of the API are retried by urllib3 (``max_retries``, exponential ``backoff`` with jitter,
``Retry-After`` honoured); COG reads by GDAL (``GDAL_HTTP_MAX_RETRY``/``GDAL_HTTP_RETRY_DELAY``).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np
import pandas as pd
import xarray as xr
from shapely.geometry import Point, box
from urllib3 import Retry

from pipeline.config import StacSettings
from pipeline.errors import ConfigError, FetchError
from pipeline.fetch import FetchRequest
from pipeline.fetch._cube import DEFAULT_INVALID_SCL, build_cube, empty_note
from pipeline.fetch._secrets import redacting_logs
from pipeline.fetch.harmonise_meta import boa_add_offset
from pipeline.grid import to_crs

__all__ = ["StacFetcher", "EARTH_SEARCH_ASSETS"]

LOGGER = logging.getLogger(__name__)

EARTH_SEARCH_ASSETS = {
    "B01": "coastal", "B02": "blue", "B03": "green", "B04": "red", "B05": "rededge1", "B06": "rededge2",
    "B07": "rededge3", "B08": "nir", "B8A": "nir08", "B09": "nir09", "B11": "swir16", "B12": "swir22",
}
"""Sentinel-2 band -> asset key in Earth Search v1 (``sentinel-2-l2a``)."""


def _solar_date(when: dt.datetime | np.datetime64, lon: float) -> dt.date:
    """Local solar date at longitude ``lon`` (degrees) of a UTC time (as odc-stac's ``groupby="solar_day"``)."""
    ts = pd.Timestamp(when)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return (ts + pd.Timedelta(hours=lon / 15.0)).date()


class StacFetcher:
    """Scene cubes from a STAC API (implements :class:`~pipeline.fetch.Fetcher`); see the module docstring."""

    def __init__(self, settings: StacSettings, *, invalid_scl: Sequence[int] = DEFAULT_INVALID_SCL) -> None:
        self.settings = settings
        self.invalid_scl = tuple(invalid_scl)

    def __repr__(self) -> str:
        return f"StacFetcher(url={self.settings.url!r}, collection={self.settings.collection!r})"

    # -- search ---------------------------------------------------------------------------------------
    def _signer(self) -> Callable[[Any], Any] | None:
        if not self.settings.sign:
            return None
        try:
            import planetary_computer  # type: ignore[import-not-found]
        except ImportError as err:
            raise ConfigError(
                "stac.sign: true needs the 'planetary-computer' package (pip install planetary-computer), "
                "or set stac.sign: false for APIs with public assets"
            ) from err
        return planetary_computer.sign_inplace

    def _client(self) -> Any:
        from pystac_client import Client
        from pystac_client.stac_api_io import StacApiIO

        s = self.settings
        retry = Retry(
            total=s.max_retries,
            connect=s.max_retries,
            read=s.max_retries,
            status=s.max_retries,
            backoff_factor=s.backoff,
            backoff_jitter=s.backoff * 0.25,
            status_forcelist=(429, 500, 502, 503, 504),
            allowed_methods=None,  # POST /search is safe to repeat
            respect_retry_after_header=True,
            raise_on_status=True,
        )
        return Client.open(s.url, stac_io=StacApiIO(max_retries=retry, timeout=120), modifier=self._signer())

    def _api_error(self, err: Exception) -> FetchError:
        text = str(err)
        m = re.search(r"too many (\d{3}) error responses", text)
        if m:
            return FetchError(
                f"STAC API {self.settings.url} answered HTTP {m.group(1)} on all {self.settings.max_retries + 1} "
                "attempt(s); the service is overloaded or failing: wait and run again, or raise stac.max_retries"
            )
        status = getattr(err, "status_code", None)
        if status is None and re.search(r"Failed to establish a new connection|Connection refused|Max retries "
                                        r"exceeded|Name or service not known|timed out", text):
            return FetchError(
                f"STAC API {self.settings.url} could not be reached (connection failed); check stac.url and the "
                "network, then run again"
            )
        what = f"HTTP {status}" if status else text.splitlines()[0][:200]
        return FetchError(f"STAC API {self.settings.url} failed ({what}); check stac.url and stac.collection")

    def search(self, request: FetchRequest) -> list[Any]:
        """The STAC items over the grid and dates (``pystac.Item`` list, sorted by time)."""
        from pystac_client.exceptions import APIError

        wgs = to_crs(box(*request.grid.bounds), request.grid.epsg, 4326).bounds
        s = self.settings
        try:
            with redacting_logs():
                search = self._client().search(
                    collections=[s.collection],
                    bbox=list(wgs),
                    datetime=f"{request.start.isoformat()}T00:00:00Z/{request.end.isoformat()}T23:59:59Z",
                    query={"eo:cloud_cover": {"lte": s.max_cloud_cover}},
                    limit=100,
                )
                items = list(search.items())
        except APIError as err:
            raise self._api_error(err) from err
        return sorted(items, key=lambda it: (it.datetime, it.id))

    # -- load -----------------------------------------------------------------------------------------
    def _asset_keys(self, items: Sequence[Any], bands: Sequence[str]) -> tuple[dict[str, str], str]:
        keys = set(items[0].assets)
        out = {}
        for b in bands:
            cands = [self.settings.band_assets.get(b), b, b.lower(), EARTH_SEARCH_ASSETS.get(b)]
            hit = next((c for c in cands if c and c in keys), None)
            if hit is None:
                raise FetchError(
                    f"STAC items of {self.settings.collection!r} have no asset for band {b} (assets: "
                    f"{', '.join(sorted(keys))}); map it with stac.band_assets, e.g. {{{b}: <asset key>}}"
                )
            out[b] = hit
        scl = next((c for c in (self.settings.scl_asset, "SCL", "scl") if c and c in keys), None)
        if scl is None:
            raise FetchError(
                f"STAC items of {self.settings.collection!r} have no scene classification asset (SCL/scl); "
                "set stac.scl_asset"
            )
        return out, scl

    def fetch(self, request: FetchRequest) -> xr.Dataset:
        """Search and lazily load the cube (see :mod:`pipeline.fetch`); SCL is computed to skip empty days."""
        import odc.stac
        from odc.geo.geobox import GeoBox

        items = self.search(request)
        attrs = {"source": "stac", "stac_url": self.settings.url, "collection": self.settings.collection}
        if not items:
            LOGGER.warning("fetch %s: no STAC items found", request.site_id)
            return build_cube(request, [], None, None, [], [], attrs)
        assets, scl_key = self._asset_keys(items, request.bands)
        s = self.settings
        odc.stac.configure_rio(
            cloud_defaults=True, GDAL_HTTP_MAX_RETRY=str(s.max_retries), GDAL_HTTP_RETRY_DELAY=str(max(s.backoff, 0.0))
        )
        geobox = GeoBox(request.grid.shape, request.grid.affine, f"EPSG:{request.grid.epsg}")
        try:
            ds = odc.stac.load(
                items,
                bands=[*assets.values(), scl_key],
                geobox=geobox,
                groupby="solar_day",
                chunks={"y": s.chunk_px, "x": s.chunk_px},
                resampling={"*": "bilinear", scl_key: "nearest"},
                fail_on_error=True,
            )
            scl = ds[scl_key].astype(np.uint8).values  # eager: small, decides which days to keep
        except (RuntimeError, OSError, ValueError) as err:
            raise FetchError(f"STAC assets from {s.url} could not be read ({str(err)[:200]})") from err

        lon = cast(Point, to_crs(box(*request.grid.bounds).centroid, request.grid.epsg, 4326)).x
        by_day: dict[dt.date, list[Any]] = {}
        for it in items:
            by_day.setdefault(_solar_date(it.datetime, lon), []).append(it)
        keep, dates, offsets, ids, skipped = [], [], [], [], []
        for t, when in enumerate(ds.time.values):
            day = _solar_date(when, lon)
            group = sorted(by_day.get(day, []), key=lambda it: (it.properties.get("eo:cloud_cover", 100.0), it.id))
            sid = group[0].id if group else f"{day.isoformat()}"
            if not (~np.isin(scl[t], np.asarray(self.invalid_scl, np.uint8))).any():
                skipped.append(empty_note(day, sid))
                continue
            keep.append(t)
            dates.append(day)
            ids.append(sid)
            first = group[0] if group else None
            if first is None:
                offsets.append(boa_add_offset({}, day))
            else:
                band_assets = {k: v.to_dict() for k, v in first.assets.items() if k in assets.values()}
                offsets.append(boa_add_offset(first.properties, day, scene_id=first.id, assets=band_assets))
        refl = xr.concat([ds[assets[b]] for b in request.bands], dim="band").transpose("time", "band", "y", "x")
        refl = refl.isel(time=keep).astype(np.uint16)
        return build_cube(request, dates, refl.data, scl[keep], offsets, ids, attrs, skipped)
