"""Vector tiles of the published layers as one PMTiles (v3) archive, in pure Python.

Tiles are Mapbox Vector Tiles (``mapbox-vector-tile`` encoder; extent 4096, 64-unit buffer, gzip) in
the Web Mercator tile grid (EPSG:3857, XYZ scheme), written with the ``pmtiles`` package's writer, so
MapLibre (with the pmtiles protocol), QGIS (≥ 3.32 reads ``.pmtiles`` vector tiles) and the ``pmtiles``
command-line tools read the archive. Each input layer becomes one tile layer of the same name.

Generalisation: a feature whose tile-space bounding box is smaller than :data:`MIN_POLYGON_UNITS` tile
units (it would collapse to nothing) is written as a ``Point`` at its representative point instead, so
every feature stays visible and countable at every zoom (a 150 m flag is a point up to about zoom 8 and a
polygon from there on). Properties are the layer's columns (nulls left out, lists/dicts as JSON text);
the MVT feature id is the flag id's 48-bit hex number for flags (``cw-`` + 12 hex digits) and the row
number + 1 otherwise. The ``flag_id`` property carries the stable id either way.

Header: tile type MVT, gzip tiles and directories, zoom range, the data's WGS84 bounds and a centre.
Metadata: TileJSON-style ``name``, ``description``, ``attribution``, ``vector_layers`` (fields and zooms
per layer), ``generator``.
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import geopandas as gpd
import mapbox_vector_tile
import shapely
from mapbox_vector_tile.encoder import on_invalid_geometry_make_valid
from pmtiles.tile import Compression, TileType, zxy_to_tileid
from pmtiles.writer import Writer
from shapely.geometry import shape as shp_shape
from shapely.geometry.base import BaseGeometry

import pipeline
from pipeline._files import atomic_path
from pipeline.errors import InvalidAOIError
from pipeline.publish.geojson import to_feature_collection

__all__ = ["EXTENT", "BUFFER", "MIN_POLYGON_UNITS", "write_pmtiles", "tile_bounds_3857", "tiles_for_bounds"]

#: Tile extent (units per tile side) and clip buffer, in tile units.
EXTENT = 4096
BUFFER = 64
#: Polygons smaller than this many tile units (bounding-box side) are written as points.
MIN_POLYGON_UNITS = 4.0
#: Half the Web Mercator world width, metres.
_HALF = 20037508.342789244
#: Web Mercator's latitude limit, degrees.
_MAX_LAT = 85.05112878


def tile_bounds_3857(z: int, x: int, y: int) -> tuple[float, float, float, float]:
    """``(minx, miny, maxx, maxy)`` of XYZ tile ``z/x/y`` in EPSG:3857 metres."""
    size = 2 * _HALF / 2**z
    return (-_HALF + x * size, _HALF - (y + 1) * size, -_HALF + (x + 1) * size, _HALF - y * size)


def tiles_for_bounds(bounds: tuple[float, float, float, float], z: int) -> list[tuple[int, int]]:
    """``(x, y)`` of the zoom-``z`` tiles touching EPSG:3857 ``bounds`` (minx, miny, maxx, maxy)."""
    n = 2**z
    size = 2 * _HALF / n
    minx, miny, maxx, maxy = bounds
    x0 = max(0, min(n - 1, int(math.floor((minx + _HALF) / size))))
    x1 = max(0, min(n - 1, int(math.floor((maxx + _HALF) / size))))
    y0 = max(0, min(n - 1, int(math.floor((_HALF - maxy) / size))))
    y1 = max(0, min(n - 1, int(math.floor((_HALF - miny) / size))))
    return [(x, y) for x in range(x0, x1 + 1) for y in range(y0, y1 + 1)]


def _mvt_value(v: Any) -> Any:
    if isinstance(v, (list, dict)):
        return json.dumps(v, ensure_ascii=False, separators=(",", ":"))
    return v


def _field_type(values: list[Any]) -> str:
    vals = [v for v in values if v is not None]
    if vals and all(isinstance(v, bool) for v in vals):
        return "Boolean"
    if vals and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
        return "Number"
    return "String"


def _feature_id(props: Mapping[str, Any], row: int) -> int:
    fid = props.get("flag_id")
    if isinstance(fid, str) and fid.startswith("cw-"):
        try:
            return int(fid[3:], 16)
        except ValueError:
            pass
    return row + 1


def _prepare(gdf: gpd.GeoDataFrame) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Cleaned features of a layer in EPSG:3857 (``geometry`` as shapely) and its field types."""
    fc = to_feature_collection(gdf)
    feats: list[dict[str, Any]] = []
    fields: dict[str, list[Any]] = {}
    for i, f in enumerate(fc["features"]):
        props = {k: _mvt_value(v) for k, v in f["properties"].items() if v is not None}
        for k, v in f["properties"].items():
            fields.setdefault(k, []).append(_mvt_value(v))
        feats.append({"id": _feature_id(f["properties"], i), "properties": props, "geometry": f["geometry"]})
    if feats:
        geoms = gpd.GeoSeries([shp_shape(f["geometry"]) for f in feats], crs=4326)
        # clamp to Web Mercator's latitude range before projecting
        geoms = geoms.clip_by_rect(-180.0, -_MAX_LAT, 180.0, _MAX_LAT).to_crs(3857)
        for f, g in zip(feats, geoms, strict=True):
            f["geometry"] = g
    return [f for f in feats if f["geometry"] is not None and not f["geometry"].is_empty], {
        k: _field_type(v) for k, v in fields.items()
    }


def _tile_geometry(geom: BaseGeometry, bounds: tuple[float, float, float, float]) -> BaseGeometry | None:
    """The part of ``geom`` in the buffered tile, or its representative point when it is too small."""
    minx, miny, maxx, maxy = bounds
    unit = (maxx - minx) / EXTENT
    gx0, gy0, gx1, gy1 = geom.bounds
    if max(gx1 - gx0, gy1 - gy0) < MIN_POLYGON_UNITS * unit:
        p = geom.representative_point()
        return p if (minx <= p.x < maxx and miny < p.y <= maxy) else None
    buf = BUFFER * unit
    clipped = shapely.clip_by_rect(geom, minx - buf, miny - buf, maxx + buf, maxy + buf)
    if clipped.is_empty:
        return None
    return clipped


def write_pmtiles(
    layers: Mapping[str, gpd.GeoDataFrame],
    path: str | Path,
    *,
    min_zoom: int = 0,
    max_zoom: int = 14,
    name: str = "compoundwatch",
    description: str = "compoundwatch flags and site summaries",
    attribution: str = "Contains modified Copernicus Sentinel data",
) -> Path:
    """Write ``{layer name: GeoDataFrame}`` (any CRS) as one PMTiles archive at ``path``; returns it.

    Every zoom from ``min_zoom`` to ``max_zoom`` gets the tiles that hold features (MapLibre overzooms
    past ``max_zoom``). Empty input gives a valid archive with one empty tile at ``min_zoom``.
    The file appears atomically.
    """
    if not 0 <= min_zoom <= max_zoom <= 22:
        raise InvalidAOIError(
            f"zoom range {min_zoom}..{max_zoom} is invalid; use 0 <= min_zoom <= max_zoom <= 22"
        )
    path = Path(path)
    prepared = {lname: _prepare(gdf) for lname, gdf in layers.items()}

    tiles: dict[int, bytes] = {}
    all_bounds: list[tuple[float, float, float, float]] = []
    for feats, _ in prepared.values():
        all_bounds.extend(f["geometry"].bounds for f in feats)
    for z in range(min_zoom, max_zoom + 1):
        members: dict[tuple[int, int], dict[str, list[int]]] = {}
        for lname, (feats, _) in prepared.items():
            for i, f in enumerate(feats):
                gx0, gy0, gx1, gy1 = f["geometry"].bounds
                pad = BUFFER * (2 * _HALF / 2**z) / EXTENT
                for xy in tiles_for_bounds((gx0 - pad, gy0 - pad, gx1 + pad, gy1 + pad), z):
                    members.setdefault(xy, {}).setdefault(lname, []).append(i)
        for (x, y), per_layer in members.items():
            bounds = tile_bounds_3857(z, x, y)
            mvt_layers = []
            for lname, idx in per_layer.items():
                feats = prepared[lname][0]
                out = []
                for i in idx:
                    g = _tile_geometry(feats[i]["geometry"], bounds)
                    if g is not None:
                        out.append(
                            {"id": feats[i]["id"], "properties": feats[i]["properties"], "geometry": g}
                        )
                if out:
                    mvt_layers.append({"name": lname, "features": out})
            if mvt_layers:
                data = mapbox_vector_tile.encode(
                    mvt_layers,
                    default_options={
                        "quantize_bounds": bounds,
                        "extents": EXTENT,
                        "on_invalid_geometry": on_invalid_geometry_make_valid,
                    },
                )
                tiles[zxy_to_tileid(z, x, y)] = gzip.compress(data, mtime=0)
    if not tiles:
        empty = mapbox_vector_tile.encode([{"name": n, "features": []} for n in layers] or [])
        tiles[zxy_to_tileid(min_zoom, 0, 0)] = gzip.compress(empty, mtime=0)

    if all_bounds:
        from pyproj import Transformer

        tr = Transformer.from_crs(3857, 4326, always_xy=True)
        w, s = tr.transform(min(b[0] for b in all_bounds), min(b[1] for b in all_bounds))
        e, n = tr.transform(max(b[2] for b in all_bounds), max(b[3] for b in all_bounds))
    else:
        w, s, e, n = -180.0, -_MAX_LAT, 180.0, _MAX_LAT
    span = max(e - w, (n - s) * 1.5, 1e-9)
    center_zoom = int(max(min_zoom, min(max_zoom, math.floor(math.log2(360.0 / span)))))
    header = {
        "tile_type": TileType.MVT,
        "tile_compression": Compression.GZIP,
        "min_zoom": min_zoom,
        "max_zoom": max_zoom,
        "min_lon_e7": int(math.floor(w * 1e7)),
        "min_lat_e7": int(math.floor(s * 1e7)),
        "max_lon_e7": int(math.ceil(e * 1e7)),
        "max_lat_e7": int(math.ceil(n * 1e7)),
        "center_zoom": center_zoom,
        "center_lon_e7": int(round((w + e) / 2 * 1e7)),
        "center_lat_e7": int(round((s + n) / 2 * 1e7)),
    }
    metadata = {
        "name": name,
        "description": description,
        "attribution": attribution,
        "format": "pbf",
        "type": "overlay",
        "generator": f"compoundwatch {pipeline.__version__} (mapbox-vector-tile + pmtiles)",
        "vector_layers": [
            {"id": lname, "fields": fields, "minzoom": min_zoom, "maxzoom": max_zoom}
            for lname, (_, fields) in prepared.items()
        ],
    }

    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        writer = Writer(fh)
        for tid in sorted(tiles):
            writer.write_tile(tid, tiles[tid])
        writer.finalize(header, metadata)
    return path
