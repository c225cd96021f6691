"""Pure grid maths on UTM grids (no raster I/O: numpy, affine, pyproj and shapely only).

A :class:`GridSpec` is a north-up grid: EPSG code, affine transform (metres) and shape in pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from affine import Affine
from pyproj import Transformer
from shapely.geometry.base import BaseGeometry
from shapely.ops import transform as shp_transform

from pipeline.errors import InvalidAOIError

__all__ = ["GridSpec", "utm_epsg", "to_crs", "grid_for_geometry", "tiles"]


@dataclass(frozen=True)
class GridSpec:
    """North-up raster grid: ``epsg`` CRS, ``transform`` (x pixel size > 0, y pixel size < 0), ``shape``
    (rows, cols)."""

    epsg: int
    transform: tuple[float, float, float, float, float, float]
    shape: tuple[int, int]

    @property
    def affine(self) -> Affine:
        return Affine(*self.transform)

    @property
    def resolution(self) -> float:
        """Pixel size in CRS units (metres for UTM)."""
        return float(self.transform[0])

    @property
    def pixel_area(self) -> float:
        """Area of one pixel in square CRS units (m² for UTM)."""
        return abs(self.transform[0] * self.transform[4])

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in CRS units."""
        a = self.affine
        left, top = a.c, a.f
        return left, top + a.e * self.shape[0], left + a.a * self.shape[1], top

    def coords(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixel-centre coordinates ``(y, x)`` as 1-D arrays (CRS units)."""
        a = self.affine
        x = a.c + a.a * (np.arange(self.shape[1]) + 0.5)
        y = a.f + a.e * (np.arange(self.shape[0]) + 0.5)
        return y, x


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the WGS84 UTM zone containing ``(lon, lat)`` (degrees)."""
    if not (-180 <= lon <= 180 and -80 <= lat <= 84):
        raise InvalidAOIError(
            f"({lon}, {lat}) is outside the UTM range (lon -180..180, lat -80..84); is the geometry in WGS84 lon/lat?"
        )
    zone = min(int((lon + 180) // 6) + 1, 60)
    return (32600 if lat >= 0 else 32700) + zone


def to_crs(geom: BaseGeometry, src_epsg: int, dst_epsg: int) -> BaseGeometry:
    """Reproject a shapely geometry between EPSG codes (x/y = lon/lat order for EPSG:4326)."""
    if src_epsg == dst_epsg:
        return geom
    tr = Transformer.from_crs(src_epsg, dst_epsg, always_xy=True)
    return shp_transform(tr.transform, geom)


def grid_for_geometry(geom_wgs84: BaseGeometry, resolution: float = 10.0, epsg: int | None = None) -> GridSpec:
    """The grid covering a WGS84 geometry in its UTM zone, edges snapped to multiples of ``resolution`` metres."""
    if epsg is None:
        c = geom_wgs84.centroid
        epsg = utm_epsg(c.x, c.y)
    minx, miny, maxx, maxy = to_crs(geom_wgs84, 4326, epsg).bounds
    left = math.floor(minx / resolution) * resolution
    top = math.ceil(maxy / resolution) * resolution
    right = math.ceil(maxx / resolution) * resolution
    bottom = math.floor(miny / resolution) * resolution
    shape = (int(round((top - bottom) / resolution)), int(round((right - left) / resolution)))
    return GridSpec(epsg=epsg, transform=(resolution, 0.0, left, 0.0, -resolution, top), shape=shape)


def tiles(shape: tuple[int, int], tile_size: int) -> list[tuple[slice, slice]]:
    """Row/column slices of square tiles of ``tile_size`` pixels covering ``shape`` (edge tiles smaller)."""
    rows, cols = shape
    return [
        (slice(r, min(r + tile_size, rows)), slice(c, min(c + tile_size, cols)))
        for r in range(0, rows, tile_size)
        for c in range(0, cols, tile_size)
    ]
