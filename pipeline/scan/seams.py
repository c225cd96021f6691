"""Merge flags cut by tile and UTM-zone seams into one polygon each (vectors only: shapely, geopandas, pyproj).

A wide-area run vectorises every tile on its own grid (:func:`pipeline.flag.vectorise`), so a compound
on a seam comes out as several pieces, and in the overlap between tiles as duplicates. This module:

1. **Clips** each tile's flags to the tile's *core* (:func:`clip_to_core`, exact: cores are pixel-aligned
   rectangles of the tile's UTM grid), so overlaps cannot produce duplicates.
2. **Merges within a zone** in that zone's UTM CRS: pieces that touch or overlap (sharing an edge or only a
   corner, like the 8-connected blobs of ``vectorise``) are one flag; their union is exact because all
   tiles of a zone share one pixel grid. Holes smaller than ``min_area_m2`` are filled (as
   ``vectorise`` fills small enclosed holes).
3. **Merges across zones** in the global equal-area CRS EPSG:6933 (WGS 84 / NSIDC EASE-Grid 2.0 Global,
   cylindrical: meridians are straight vertical lines there). Each zone's flags are clipped to the zone's
   own strip of longitudes (so a zone's tiles poking over the zone meridian add nothing twice), the clipped
   parts meet exactly on the meridian and are unioned without gaps or slivers. When all pieces are in one
   zone (one scene in its own CRS, or a one-zone AOI) nothing is clipped: no other zone covers the rest.
4. **Evidence and area.** A merged flag keeps the evidence (dates, confidence, score, scenes, cloud
   fraction, method) of its highest-confidence piece; ``area_m2`` is the sum over its per-zone parts of
   their area on their own UTM grid (so a flag inside one zone has exactly the area ``vectorise`` gives
   on a single grid), plus the area of seam holes filled in step 3. Flags below ``min_area_m2`` are
   dropped only after merging, so pieces smaller than the minimum still count.

Per-tile flags should therefore be vectorised with ``vectorise(..., tile=True)``: blobs touching the tile
edge are kept whatever their area and their holes are left for step 3.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import cast

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import Transformer
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from shapely.geometry import MultiPolygon, Point, Polygon
from shapely.geometry.base import BaseGeometry

import pipeline
from pipeline.config import Settings, params_hash
from pipeline.errors import DetectionError
from pipeline.flag import FLAG_COLUMNS, empty_flags, flag_id
from pipeline.scan.tiling import TileSpec, zone_strip

__all__ = [
    "EQUAL_AREA_EPSG",
    "SCAN_COLUMNS",
    "clip_to_core",
    "clip_rows_to_core",
    "merge_flags",
    "fill_small_holes",
]

#: Global equal-area CRS for merging across zones (cylindrical: meridians and parallels are straight).
EQUAL_AREA_EPSG = 6933
#: Columns of a merged layer: the flag columns, then how many tiles and which zones contributed, then rank.
SCAN_COLUMNS: tuple[str, ...] = (*FLAG_COLUMNS[:-1], "n_tiles", "zones", "rank", "geometry")
_EVIDENCE = ("appeared_after", "appeared_before", "confidence", "score", "method", "pre_scenes",
             "post_scenes", "cloud_fraction")
_SEGMENT_M = 50.0  # densify before reprojecting (pixel-edge outlines have long straight edges)
_TRANSFORMERS: dict[tuple[int, int], Transformer] = {}


def _tr(src: int, dst: int) -> Transformer:
    key = (src, dst)
    if key not in _TRANSFORMERS:
        _TRANSFORMERS[key] = Transformer.from_crs(src, dst, always_xy=True)
    return _TRANSFORMERS[key]


def _reproject(geom: BaseGeometry, src: int, dst: int, segment: float | None = None) -> BaseGeometry:
    if segment:
        geom = shapely.segmentize(geom, segment)
    tr = _tr(src, dst)

    def fn(xy: np.ndarray) -> np.ndarray:
        x, y = tr.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])

    return shapely.transform(geom, fn)


def _polygonal(geom: BaseGeometry) -> BaseGeometry:
    """Only the polygonal part of ``geom`` (valid), possibly empty."""
    if geom is None or geom.is_empty:
        return Polygon()
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    polys = [g for g in getattr(geom, "geoms", []) if g.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.union_all(polys) if polys else Polygon()


def _core_geoms(geoms: np.ndarray, tile: TileSpec) -> np.ndarray | None:
    """``geoms`` (tile CRS) clipped to ``tile``'s core (polygonal parts, maybe empty); None = all inside."""
    x0, y0, x1, y1 = shapely.total_bounds(geoms)
    left, bottom, right, top = tile.core
    eps = 1e-6 * max(abs(left), abs(top), 1.0)
    if x0 >= left - eps and y0 >= bottom - eps and x1 <= right + eps and y1 <= top + eps:
        return None  # all inside the core (a tile without overlap): nothing to clip
    return np.array([_polygonal(g) for g in shapely.clip_by_rect(geoms, *tile.core)], dtype=object)


def clip_to_core(flags: gpd.GeoDataFrame, tile: TileSpec) -> gpd.GeoDataFrame:
    """The part of each flag inside ``tile``'s core (flags in the tile's UTM CRS), with ``tile_id``/``epsg``.

    Flags entirely in the overlap disappear; the others keep their properties (``area_m2`` is recomputed
    in m² of the tile's CRS).
    """
    out = flags.copy()
    out["tile_id"] = tile.tile_id
    out["epsg"] = tile.epsg
    if out.empty:
        return out
    if out.crs is None or out.crs.to_epsg() != tile.epsg:
        raise DetectionError(f"tile {tile.tile_id}: flags must be in the tile's CRS EPSG:{tile.epsg}, got {out.crs}")
    clipped = _core_geoms(np.asarray(out.geometry.values, dtype=object), tile)
    if clipped is None:
        return out
    out = out.set_geometry(gpd.GeoSeries(clipped, index=out.index, crs=out.crs))
    out = out[~out.geometry.is_empty & (out.geometry.area > 0)].copy()
    out["area_m2"] = out.geometry.area.round(2)
    return out


def clip_rows_to_core(rows: Sequence[dict], tile: TileSpec) -> list[dict]:
    """:func:`clip_to_core` for plain rows of :func:`pipeline.flag.flag_rows` (geometry in the tile's CRS):
    new dicts with ``tile_id`` and ``epsg`` added; rows wholly in the overlap are dropped."""
    if not rows:
        return []
    extra = {"tile_id": tile.tile_id, "epsg": tile.epsg}
    clipped = _core_geoms(np.array([r["geometry"] for r in rows], dtype=object), tile)
    if clipped is None:
        return [{**r, **extra} for r in rows]
    areas = shapely.area(clipped)
    return [{**r, **extra, "geometry": g, "area_m2": float(ar)}  # rounded as clip_to_core rounds
            for r, g, a, ar in zip(rows, clipped, areas, np.round(areas, 2)) if not g.is_empty and a > 0]


def fill_small_holes(geom: BaseGeometry, max_hole_area: float) -> tuple[BaseGeometry, float]:
    """``geom`` without interior rings smaller than ``max_hole_area`` (CRS units²), and the area added."""
    if max_hole_area <= 0 or geom.is_empty:
        return geom, 0.0
    added = 0.0
    polys = []
    for p in getattr(geom, "geoms", [geom]):
        keep = []
        for ring in p.interiors:
            a = Polygon(ring).area
            if a < max_hole_area:
                added += a
            else:
                keep.append(ring)
        polys.append(Polygon(p.exterior, keep))
    out = polys[0] if len(polys) == 1 else MultiPolygon(polys)
    return _polygonal(out), added


def _components(geoms: Sequence[BaseGeometry]) -> np.ndarray:
    """Label of the touching/overlapping group of every geometry (0..k-1)."""
    n = len(geoms)
    if n == 0:
        return np.zeros(0, np.int64)
    tree = shapely.STRtree(geoms)
    a, b = tree.query(geoms, predicate="intersects")
    graph = coo_matrix((np.ones(a.size, np.int8), (a, b)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return labels


def _strip_rect_ea(epsg: int) -> tuple[float, float, float, float]:
    lon0, lat0, lon1, lat1 = zone_strip(epsg)
    tr = _tr(4326, EQUAL_AREA_EPSG)
    x0, y0 = tr.transform(lon0, max(lat0, -85.0))
    x1, y1 = tr.transform(lon1, min(lat1, 85.0))
    return x0, y0, x1, y1


def _near_strip_edge(geom: BaseGeometry, epsg: int, margin_deg: float = 0.02) -> bool:
    """True when ``geom`` (UTM of ``epsg``) may reach outside its zone strip (checked on its bbox corners)."""
    x0, y0, x1, y1 = geom.bounds
    xs = np.array([x0, x1, x0, x1, (x0 + x1) / 2, (x0 + x1) / 2])
    ys = np.array([y0, y0, y1, y1, y0, y1])
    lon, lat = _tr(epsg, 4326).transform(xs, ys)
    lo0, la0, lo1, la1 = zone_strip(epsg)
    return bool(lon.min() < lo0 + margin_deg or lon.max() > lo1 - margin_deg
                or lat.min() < la0 + margin_deg or lat.max() > la1 - margin_deg)


def merge_flags(
    pieces: Iterable[gpd.GeoDataFrame],
    *,
    site_id: str,
    settings: Settings,
    min_area_m2: float | None = None,
) -> gpd.GeoDataFrame:
    """Merge core-clipped tile flags (any mix of UTM zones) into one ranked WGS84 layer.

    Parameters
    ----------
    pieces
        Outputs of :func:`clip_to_core` (flag columns + ``tile_id`` + ``epsg``), each in its tile's UTM CRS.
    site_id
        Written to every merged flag and hashed into its ``flag_id``.
    settings
        The run's settings (``params_hash`` of them is written to every flag).
    min_area_m2
        Minimum merged area (m²) and largest hole filled; default ``settings.flag.min_area_m2``.

    Returns
    -------
    geopandas.GeoDataFrame
        EPSG:4326, columns :data:`SCAN_COLUMNS`, sorted by confidence (descending) then ``flag_id``;
        ``rank`` 1 = most confident.
    """
    min_area = settings.flag.min_area_m2 if min_area_m2 is None else float(min_area_m2)
    frames = [p for p in pieces if p is not None and len(p)]
    if not frames:
        return _empty_scan()
    props = pd.concat([pd.DataFrame(f.drop(columns=f.geometry.name)) for f in frames], ignore_index=True)
    geoms = np.concatenate([np.asarray(f.geometry.values, dtype=object) for f in frames])
    epsgs = props["epsg"].to_numpy(dtype=np.int64)
    conf = props["confidence"].to_numpy(dtype=np.float64)
    areas = shapely.area(geoms)
    tile_ids = props["tile_id"].to_numpy()
    evidence = {col: props[col].to_numpy() for col in _EVIDENCE}  # .at per flag and column is slow
    # -- 1. within each zone, in its UTM CRS ---------------------------------------------------------
    zone_parts: list[dict] = []  # one per zone component
    multi_zone = np.unique(epsgs).size > 1  # one zone: nothing to share, flags past its strip are kept
    for epsg in np.unique(epsgs):
        epsg = int(epsg)
        in_zone = np.flatnonzero(epsgs == epsg)
        labels = _components(list(geoms[in_zone]))
        order = np.argsort(labels, kind="stable")
        bounds = np.flatnonzero(np.diff(labels[order])) + 1
        for grp in np.split(order, bounds):
            idx = in_zone[grp]
            geom = geoms[idx[0]] if idx.size == 1 else _polygonal(shapely.union_all(list(geoms[idx])))
            geom, _ = fill_small_holes(geom, min_area)
            ea: BaseGeometry | None = None
            clipped = False
            if multi_zone and _near_strip_edge(geom, epsg):
                strip = _strip_rect_ea(epsg)
                ea = _reproject(geom, epsg, EQUAL_AREA_EPSG, _SEGMENT_M)
                bx0, by0, bx1, by1 = ea.bounds
                if bx0 < strip[0] or bx1 > strip[2] or by0 < strip[1] or by1 > strip[3]:
                    ea = _polygonal(shapely.clip_by_rect(ea, *strip))
                    clipped = True
                    if ea.is_empty:
                        continue
            area = _reproject(ea, EQUAL_AREA_EPSG, epsg).area if clipped and ea is not None else geom.area
            zone_parts.append({"epsg": epsg, "utm": None if clipped else geom, "ea": ea, "area": float(area),
                               "idx": idx})
    if not zone_parts:
        return _empty_scan()
    # -- 2. across zones, in the equal-area CRS (only parts near a zone edge can meet) ----------------
    labels = np.arange(len(zone_parts))
    edge = [i for i, z in enumerate(zone_parts) if z["ea"] is not None]
    if len({zone_parts[i]["epsg"] for i in edge}) > 1:
        sub = _components([zone_parts[i]["ea"] for i in edge])
        labels[edge] = len(zone_parts) + sub
    phash = params_hash(settings)
    out_rows = []
    for lab in np.unique(labels):
        parts = [zone_parts[i] for i in np.flatnonzero(labels == lab)]
        area = sum(p["area"] for p in parts)
        if len(parts) == 1 and parts[0]["utm"] is not None:
            geom_wgs = _reproject(parts[0]["utm"], parts[0]["epsg"], 4326)
        else:
            ea = _polygonal(shapely.union_all([p["ea"] for p in parts]))
            ea, added = fill_small_holes(ea, min_area)
            area += added
            geom_wgs = _reproject(ea, EQUAL_AREA_EPSG, 4326)
        if area < min_area or geom_wgs.is_empty:
            continue
        idx = np.concatenate([p["idx"] for p in parts])
        best = idx[np.lexsort((-areas[idx], -conf[idx]))[0]]
        main = max(parts, key=lambda p: p["area"])
        c = cast(Point, _reproject(geom_wgs.centroid, 4326, main["epsg"]))
        row = {col: values[best] for col, values in evidence.items()}
        row.update(
            site_id=site_id,
            area_m2=round(float(area), 2),
            params_hash=phash,
            pipeline_version=pipeline.__version__,
            n_tiles=int(np.unique(tile_ids[idx]).size),
            zones=",".join(str(e) for e in sorted({p["epsg"] for p in parts})),
            geometry=geom_wgs,
            _c=(c.x, c.y),
        )
        out_rows.append(row)
    if not out_rows:
        return _empty_scan()
    seen: set[str] = set()
    for row in sorted(out_rows, key=lambda r: (r["_c"][1], r["_c"][0])):
        occurrence = 1
        cx, cy = row["_c"]
        fid = flag_id(site_id, cx, cy, row["appeared_before"])
        while fid in seen:
            occurrence += 1
            fid = flag_id(site_id, cx, cy, row["appeared_before"], occurrence)
        seen.add(fid)
        row["flag_id"] = fid
    gdf = gpd.GeoDataFrame(out_rows, geometry="geometry", crs=4326)
    gdf = gdf.sort_values(["confidence", "flag_id"], ascending=[False, True], kind="mergesort")
    gdf = gdf.reset_index(drop=True)
    gdf["rank"] = np.arange(1, len(gdf) + 1)
    return gdf[list(SCAN_COLUMNS)]


def _empty_scan() -> gpd.GeoDataFrame:
    base = empty_flags(4326)
    base["n_tiles"] = pd.Series([], dtype="int64")
    base["zones"] = pd.Series([], dtype="object")
    base["rank"] = pd.Series([], dtype="int64")
    return base[list(SCAN_COLUMNS)]

