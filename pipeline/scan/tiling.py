"""Cut areas into fixed UTM grid tiles (pure grid maths: numpy, pyproj and shapely only, no raster I/O).

Every UTM zone has one fixed tile grid: tile ``(row, col)`` has the *core* (the part it owns)
``[col·T, (col+1)·T) × [row·T, (row+1)·T)`` in the zone's easting/northing (metres), ``T = tile_px ×
resolution``. Because the grid is anchored at the zone's origin, the same place always falls in the same
tile, whatever the AOI, so runs are reproducible and resumable. A tile's raster grid is its core grown by
``overlap_px`` pixels on every side (neighbouring tiles overlap by ``2 × overlap_px``); flags are later
clipped back to the cores and merged across seams (:mod:`pipeline.scan.seams`).

An AOI (WGS84 lon/lat) that spans several UTM zones is split along the zone meridians (and the equator):
each zone processes only its own strip of the AOI, on its own UTM grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import shapely
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from pipeline.errors import InvalidAOIError
from pipeline.grid import GridSpec, to_crs

__all__ = [
    "TileSpec",
    "ZONE_WIDTH_DEG",
    "zone_of",
    "zone_strip",
    "zones_for",
    "tiles_for_aoi",
    "tiles_for_grid",
]

#: Width of a UTM zone in degrees of longitude.
ZONE_WIDTH_DEG = 6.0
_LAT_MIN, _LAT_MAX = -80.0, 84.0
_SEGMENT_DEG = 0.01  # densify AOI edges before projecting (~1 km), so projected outlines follow the curves


@dataclass(frozen=True)
class TileSpec:
    """One tile of a zone's fixed grid.

    ``epsg``: the UTM zone (326xx north / 327xx south); ``index``: ``(row, col)`` in the zone's tile grid
    (row counts northings upwards, col eastings; for :func:`tiles_for_grid`, rows/cols of that grid from
    its top-left corner); ``grid``: the tile's raster grid, core plus overlap (metres, north-up);
    ``core``: ``(left, bottom, right, top)`` of the part of the ground this tile owns, in metres of ``epsg``;
    ``overlap_px``: pixels the grid extends beyond the core on every side (fewer at a clipped grid edge).
    """

    epsg: int
    index: tuple[int, int]
    grid: GridSpec
    core: tuple[float, float, float, float]
    overlap_px: int = 0

    @property
    def tile_id(self) -> str:
        """Stable name, e.g. ``"32644_r00471_c00051"`` (file-name safe)."""
        r, c = self.index
        return f"{self.epsg}_r{r:05d}_c{c:05d}".replace("-", "m")

    def core_box(self) -> BaseGeometry:
        """The core as a shapely box in metres of ``epsg``."""
        return box(*self.core)

    def core_slices(self) -> tuple[slice, slice]:
        """Row/column slices of the core inside :attr:`grid` (pixels)."""
        a = self.grid.affine
        res = self.grid.resolution
        c0 = int(round((self.core[0] - a.c) / res))
        c1 = int(round((self.core[2] - a.c) / res))
        r0 = int(round((a.f - self.core[3]) / res))
        r1 = int(round((a.f - self.core[1]) / res))
        return slice(r0, r1), slice(c0, c1)


def zone_of(epsg: int) -> tuple[int, bool]:
    """``(zone number 1-60, north)`` of a WGS84 UTM EPSG code; :class:`InvalidAOIError` for other codes."""
    if 32601 <= epsg <= 32660:
        return epsg - 32600, True
    if 32701 <= epsg <= 32760:
        return epsg - 32700, False
    raise InvalidAOIError(f"EPSG:{epsg} is not a WGS84 UTM zone (32601-32660, 32701-32760)")


def zone_strip(epsg: int) -> tuple[float, float, float, float]:
    """``(lon_min, lat_min, lon_max, lat_max)`` in degrees of the part of the globe zone ``epsg`` owns.

    Zones are 6° of longitude; northern zones own latitudes 0-84°, southern ones -80-0°. (The Norway and
    Svalbard exceptions are not applied, matching :func:`pipeline.grid.utm_epsg`.)
    """
    zone, north = zone_of(epsg)
    lon0 = -180.0 + ZONE_WIDTH_DEG * (zone - 1)
    return (lon0, 0.0 if north else _LAT_MIN, lon0 + ZONE_WIDTH_DEG, _LAT_MAX if north else 0.0)


def _check_aoi(aoi: BaseGeometry) -> BaseGeometry:
    if aoi is None or aoi.is_empty:
        raise InvalidAOIError("the AOI is empty; give a Polygon or MultiPolygon in WGS84 lon/lat")
    if aoi.geom_type not in ("Polygon", "MultiPolygon", "GeometryCollection"):
        raise InvalidAOIError(f"the AOI must be a Polygon or MultiPolygon, got a {aoi.geom_type}")
    minx, miny, maxx, maxy = aoi.bounds
    if minx < -180 or maxx > 180 or miny < _LAT_MIN or maxy > _LAT_MAX:
        raise InvalidAOIError(
            f"AOI bounds {aoi.bounds} are outside lon -180..180, lat {_LAT_MIN:g}..{_LAT_MAX:g}; is it in "
            "WGS84 lon/lat (EPSG:4326, x = longitude)?"
        )
    if not aoi.is_valid:
        aoi = shapely.make_valid(aoi)
    return aoi


def zones_for(aoi: BaseGeometry) -> list[int]:
    """EPSG codes of the UTM zones whose strips intersect the WGS84 ``aoi`` (west to east, north first)."""
    aoi = _check_aoi(aoi)
    minx, _, maxx, _ = aoi.bounds
    z0 = min(int((minx + 180) // ZONE_WIDTH_DEG) + 1, 60)
    z1 = min(int((maxx + 180) // ZONE_WIDTH_DEG) + 1, 60)
    out = []
    for z in range(z0, z1 + 1):
        for base in (32600, 32700):
            epsg = base + z
            strip = box(*zone_strip(epsg))
            inter = aoi.intersection(strip)
            if not inter.is_empty and inter.area > 0:
                out.append(epsg)
    return out


def _tile(epsg: int, row: int, col: int, tile_px: int, overlap_px: int, resolution: float) -> TileSpec:
    t = tile_px * resolution
    left, bottom = col * t, row * t
    core = (left, bottom, left + t, bottom + t)
    o = overlap_px * resolution
    n = tile_px + 2 * overlap_px
    grid = GridSpec(epsg=epsg, transform=(resolution, 0.0, left - o, 0.0, -resolution, bottom + t + o),
                    shape=(n, n))
    return TileSpec(epsg=epsg, index=(row, col), grid=grid, core=core, overlap_px=overlap_px)


def tiles_for_aoi(
    aoi: BaseGeometry, tile_px: int = 1024, overlap_px: int = 32, resolution: float = 10.0
) -> list[TileSpec]:
    """The tiles of every UTM zone needed to cover a WGS84 ``aoi``.

    Parameters
    ----------
    aoi
        Polygon/MultiPolygon in EPSG:4326 (x = longitude, y = latitude, degrees).
    tile_px
        Core edge in pixels (a tile owns ``tile_px × resolution`` metres square).
    overlap_px
        Extra pixels read on every side of the core (context for per-pixel and blob work at the seams).
    resolution
        Pixel size in metres.

    Returns
    -------
    list[TileSpec]
        Tiles whose core intersects the AOI's part in their zone, ordered by zone, then row from the north,
        then column from the west.
    """
    if tile_px < 1 or overlap_px < 0 or resolution <= 0:
        raise InvalidAOIError(
            f"tile_px ({tile_px}) must be >= 1, overlap_px ({overlap_px}) >= 0, resolution ({resolution}) > 0"
        )
    aoi = _check_aoi(aoi)
    t = tile_px * resolution
    out: list[TileSpec] = []
    for epsg in zones_for(aoi):
        part = aoi.intersection(box(*zone_strip(epsg)))
        part_utm = to_crs(shapely.segmentize(part, _SEGMENT_DEG), 4326, epsg)
        shapely.prepare(part_utm)
        minx, miny, maxx, maxy = part_utm.bounds
        c0, c1 = math.floor(minx / t), math.ceil(maxx / t)
        r0, r1 = math.floor(miny / t), math.ceil(maxy / t)
        for row in range(r1 - 1, r0 - 1, -1):
            for col in range(c0, c1):
                core = box(col * t, row * t, (col + 1) * t, (row + 1) * t)
                if part_utm.intersects(core) and part_utm.intersection(core).area > 0:
                    out.append(_tile(epsg, row, col, tile_px, overlap_px, resolution))
    return out


def tiles_for_grid(grid: GridSpec, tile_px: int = 1024, overlap_px: int = 0) -> list[TileSpec]:
    """Tiles of an existing raster grid (e.g. a Sentinel-2 granule), anchored at its top-left corner.

    Cores are ``tile_px`` square (smaller at the right/bottom edge); grids grow by ``overlap_px`` on each
    side but never beyond ``grid``. With ``tile_px`` a multiple of the files' block size and no overlap,
    every stored block is decoded exactly once.
    """
    if tile_px < 1 or overlap_px < 0:
        raise InvalidAOIError(f"tile_px ({tile_px}) must be >= 1 and overlap_px ({overlap_px}) >= 0")
    rows, cols = grid.shape
    a = grid.affine
    res = grid.resolution
    out = []
    for i, r in enumerate(range(0, rows, tile_px)):
        for j, c in enumerate(range(0, cols, tile_px)):
            r1, c1 = min(r + tile_px, rows), min(c + tile_px, cols)
            gr0, gc0 = max(r - overlap_px, 0), max(c - overlap_px, 0)
            gr1, gc1 = min(r1 + overlap_px, rows), min(c1 + overlap_px, cols)
            core = (a.c + c * res, a.f + a.e * r1, a.c + c1 * res, a.f + a.e * r)
            tgrid = GridSpec(epsg=grid.epsg,
                             transform=(res, 0.0, a.c + gc0 * res, 0.0, a.e, a.f + a.e * gr0),
                             shape=(gr1 - gr0, gc1 - gc0))
            out.append(TileSpec(epsg=grid.epsg, index=(i, j), grid=tgrid, core=core, overlap_px=overlap_px))
    return out
