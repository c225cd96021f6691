"""What a scan will cost before it starts: area, UTM zones, tiles, scenes, processing units and hours.

``compoundwatch scan`` prints :meth:`ScanEstimate.summary` before any work and refuses an AOI whose estimate
exceeds :data:`CONFIRM_HOURS` unless ``--yes`` is given (a mistyped AOI must not silently work for days).

The numbers are estimates from the AOI's geodesic area, never from fetching anything:

* tiles: area / tile core area, plus one row and column of edge tiles per zone part;
* dates: the period divided by the revisit (``synthetic.revisit_days`` for the synthetic source, else 5 days,
  the two Sentinel-2 satellites together); scenes: Sentinel-2 granules (110 km × 110 km, taken as 100 km²
  of new ground each) × dates;
* processing units: Sentinel Hub's rule (:func:`pipeline.fetch.sentinelhub.estimate_pu`) for every tile and
  date with the fetch bands plus SCL;
* hours: :data:`SECONDS_PER_MPX_DATE` × megapixels × dates (measured: one 544 × 544 px synthetic tile of 38
  dates took 34 s on the 2-core development machine, about 3 s per megapixel-date; downloads not included).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from pyproj import Geod
from shapely.geometry.base import BaseGeometry

from pipeline.config import Settings, Source

__all__ = ["ScanEstimate", "estimate_scan", "CONFIRM_HOURS", "SECONDS_PER_MPX_DATE"]

#: Scans estimated to take longer than this many hours need ``--yes``.
CONFIRM_HOURS = 1.0
#: Compute seconds per megapixel and date on 2 cores (fetch + preprocess + detect + flag, synthetic source).
SECONDS_PER_MPX_DATE = 3.0
_GRANULE_KM2 = 100.0 * 100.0
_S2_REVISIT_DAYS = 5.0
_GEOD = Geod(ellps="WGS84")


@dataclass(frozen=True)
class ScanEstimate:
    """The expected size of a scan (see the module docstring for how each number is estimated)."""

    area_km2: float
    n_zones: int
    n_tiles: int
    n_dates: int
    n_scenes: int
    processing_units: float
    hours: float

    @property
    def needs_confirmation(self) -> bool:
        """Whether the scan is long enough to need ``--yes``."""
        return self.hours > CONFIRM_HOURS

    def summary(self) -> str:
        """One line, e.g. ``about 1,234 km² in 1 UTM zone: about 48 tiles, 380 scenes, … 0.5 hours``."""
        zones = f"spans {self.n_zones} UTM zones" if self.n_zones > 1 else "lies in 1 UTM zone"
        return (f"the AOI covers about {self.area_km2:,.0f} km² and {zones}: about {self.n_tiles:,} tiles × "
                f"{self.n_dates:,} dates, {self.n_scenes:,} scenes, {self.processing_units:,.0f} processing units "
                f"(Sentinel Hub), {self.hours:,.1f} hours of compute on this machine")


def estimate_scan(sites: Sequence[tuple[str, BaseGeometry]], settings: Settings, tile_px: int = 512,
                  overlap_px: int = 16) -> ScanEstimate:
    """Estimate a scan of ``sites`` (WGS84 geometries, already checked) without computing any tile."""
    from pipeline.fetch.sentinelhub import estimate_pu

    res = settings.fetch.resolution_m
    tile_km = tile_px * res / 1000.0
    area = 0.0
    tiles = 0.0
    zones: set[tuple[int, bool]] = set()
    for _, geom in sites:
        a, _ = _GEOD.geometry_area_perimeter(geom)
        a_km2 = abs(a) / 1e6
        area += a_km2
        minx, miny, maxx, maxy = geom.bounds
        z0, z1 = int((minx + 180) // 6), int((min(maxx, 179.999999) + 180) // 6)
        zones.update((z, maxy >= 0) for z in range(z0, z1 + 1))
        # edge tiles: a bounding-box perimeter's worth of partly covered tiles
        w_km = (maxx - minx) * 111.32 * math.cos(math.radians((miny + maxy) / 2))
        h_km = (maxy - miny) * 110.57
        tiles += a_km2 / tile_km**2 + (w_km + h_km) / tile_km + (z1 - z0 + 1)
    days = (settings.fetch.end - settings.fetch.start).days + 1
    revisit = settings.synthetic.revisit_days if settings.fetch.source is Source.SYNTHETIC else _S2_REVISIT_DAYS
    n_dates = max(1, math.ceil(days / revisit))
    n_tiles = max(1, math.ceil(tiles))
    n_px = tile_px + 2 * overlap_px
    pu = estimate_pu(n_px, n_px, len(settings.fetch.bands) + 1, n_dates) * n_tiles
    mpx = n_tiles * n_px * n_px / 1e6
    hours = SECONDS_PER_MPX_DATE * mpx * n_dates / 3600.0
    granules = max(len(zones), math.ceil(area / _GRANULE_KM2))
    return ScanEstimate(area_km2=area, n_zones=len(zones), n_tiles=n_tiles, n_dates=n_dates,
                        n_scenes=granules * n_dates, processing_units=pu, hours=hours)
