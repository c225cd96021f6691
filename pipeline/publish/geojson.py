"""RFC 7946 GeoJSON output: write, read, merge and validate flag layers.

What :func:`write_geojson` guarantees (and :func:`validate_rfc7946` checks independently):

- a ``FeatureCollection`` of ``Feature`` objects, no ``crs`` member (RFC 7946 §4: WGS84 lon/lat only);
- geometries reprojected to EPSG:4326, positions ``[lon, lat]`` in degrees rounded to 7 decimals
  (about 1 cm), snapped with GEOS precision reduction so the rounded geometry stays valid;
- only ``Polygon`` / ``MultiPolygon`` geometries (``make_valid`` output is reduced to its polygonal parts;
  features whose geometry is empty after that are left out);
- exterior rings counter-clockwise, holes clockwise (RFC 7946 §3.1.6), rings closed, ≥ 4 positions;
- properties are plain JSON (numpy scalars → Python, NaN / NA → ``null``, dates → ISO strings), and a
  ``flag_id`` property is also written as the Feature ``id``;
- the file appears atomically (temporary file in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, cast

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry import shape as shp_shape
from shapely.geometry.base import BaseGeometry
from shapely.geometry.polygon import orient

from pipeline._files import write_text_atomic
from pipeline.errors import InputFileError, InvalidAOIError

__all__ = [
    "COORD_DECIMALS",
    "write_geojson",
    "read_geojson",
    "merge_layers",
    "validate_rfc7946",
    "to_feature_collection",
]

#: Decimal places of written coordinates (degrees): 1e-7° is about 1.1 cm.
COORD_DECIMALS = 7


# ---------------------------------------------------------------------------------------------- writing
def _polygonal(geom: BaseGeometry) -> BaseGeometry:
    """Polygon / MultiPolygon parts of a geometry (possibly empty)."""
    if isinstance(geom, (Polygon, MultiPolygon)):
        return geom
    polys: list[Polygon] = []
    for part in getattr(geom, "geoms", []):
        p = _polygonal(part)
        if isinstance(p, Polygon) and not p.is_empty:
            polys.append(p)
        elif isinstance(p, MultiPolygon):
            polys.extend(q for q in p.geoms if not q.is_empty)
    if not polys:
        return Polygon()
    return polys[0] if len(polys) == 1 else MultiPolygon(polys)


def _clean(geom: BaseGeometry | None) -> BaseGeometry | None:
    """Valid, 1e-7-degree-snapped, RFC 7946-oriented polygonal geometry, or None when nothing is left."""
    if geom is None or geom.is_empty:
        return None
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    geom = shapely.set_precision(geom, 10.0**-COORD_DECIMALS)
    if not geom.is_valid:  # precision reduction keeps validity, but be safe
        geom = shapely.make_valid(geom)
    geom = _polygonal(geom)
    if geom.is_empty:
        return None
    if isinstance(geom, Polygon):
        return orient(geom, sign=1.0)
    return MultiPolygon([orient(p, sign=1.0) for p in cast(MultiPolygon, geom).geoms])


def _ring(coords: Iterable[Sequence[float]]) -> list[list[float]]:
    out = [[round(float(x), COORD_DECIMALS), round(float(y), COORD_DECIMALS)] for x, y, *_ in coords]
    if out and out[0] != out[-1]:
        out.append(list(out[0]))
    return out


def _polygon_coords(p: Polygon) -> list[list[list[float]]]:
    return [_ring(p.exterior.coords)] + [_ring(r.coords) for r in p.interiors]


def _geometry_json(geom: BaseGeometry) -> dict[str, Any]:
    if isinstance(geom, Polygon):
        return {"type": "Polygon", "coordinates": _polygon_coords(geom)}
    return {"type": "MultiPolygon", "coordinates": [_polygon_coords(p) for p in cast(MultiPolygon, geom).geoms]}


def _json_value(v: Any) -> Any:
    """A JSON-serialisable Python value for one property (numpy → Python, NaN/NA → None)."""
    if v is None:
        return None
    if isinstance(v, (str, bool)):
        return v
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, (pd.Timestamp, dt.datetime, dt.date, np.datetime64)):
        if pd.isna(v):
            return None
        ts = pd.Timestamp(v)
        return ts.date().isoformat() if ts == ts.normalize() else ts.isoformat()
    if isinstance(v, np.ndarray):
        return [_json_value(x) for x in v.tolist()]
    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _json_value(x) for k, x in v.items()}
    try:
        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    if isinstance(v, np.generic):
        return v.item()
    return str(v)


def to_feature_collection(gdf: gpd.GeoDataFrame) -> dict[str, Any]:
    """The RFC 7946 FeatureCollection (a dict) of a layer in any CRS; see the module docstring."""
    if len(gdf) and gdf.crs is None:
        raise InvalidAOIError(
            "the layer has no CRS, so it cannot be written as GeoJSON; set one with gdf.set_crs(EPSG)"
        )
    wgs = gdf.to_crs(4326) if gdf.crs is not None and len(gdf) else gdf
    geom_col = wgs.geometry.name
    cols: list[Any] = list(wgs.columns)
    gi = cols.index(geom_col)
    features = []
    for values in wgs.itertuples(index=False, name=None):
        geom = _clean(values[gi])
        if geom is None:
            continue
        props = {c: _json_value(v) for c, v in zip(cols, values) if c != geom_col}
        feat: dict[str, Any] = {"type": "Feature"}
        if isinstance(props.get("flag_id"), str):
            feat["id"] = props["flag_id"]
        feat["properties"] = props
        feat["geometry"] = _geometry_json(geom)
        features.append(feat)
    return {"type": "FeatureCollection", "features": features}


def write_geojson(gdf: gpd.GeoDataFrame, path: str | Path) -> Path:
    """Write a layer as an RFC 7946 FeatureCollection (EPSG:4326) atomically; returns the path.

    Parent folders are created. Feature order is the row order (the ranking for flag layers).
    """
    path = Path(path)
    doc = to_feature_collection(gdf)
    text = json.dumps(doc, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return write_text_atomic(path, text + "\n")


# ---------------------------------------------------------------------------------------------- reading
def read_geojson(path: str | Path, *, columns: Sequence[str] | None = None) -> gpd.GeoDataFrame:
    """Read a GeoJSON FeatureCollection into a GeoDataFrame in EPSG:4326.

    Properties become columns in the order of first appearance (values as written: dates stay ISO
    strings), ``geometry`` last; feature order is kept. An empty collection gives an empty frame with
    ``columns`` (plus ``geometry``) when given.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"GeoJSON file {path} not found; run the stage that writes it first (dvc repro)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputFileError(f"{path} is not valid JSON ({err}); rewrite it with write_geojson") from err
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection" or not isinstance(
        doc.get("features"), list
    ):
        raise InputFileError(f"{path} is not a GeoJSON FeatureCollection")
    cols: list[str] = [c for c in (columns or []) if c != "geometry"]
    records: list[dict[str, Any]] = []
    geoms: list[BaseGeometry | None] = []
    for feat in doc["features"]:
        props = dict(feat.get("properties") or {})
        for c in props:
            if c not in cols and c != "geometry":
                cols.append(c)
        records.append(props)
        g = feat.get("geometry")
        geoms.append(shp_shape(g) if g else None)
    frame = pd.DataFrame.from_records(records, columns=cols) if records else pd.DataFrame(
        {c: pd.Series([], dtype="object") for c in cols}
    )
    series = gpd.GeoSeries(cast(Any, geoms), crs=4326, index=frame.index)  # None: a feature without geometry
    return gpd.GeoDataFrame(frame, geometry=series, crs=4326)


def merge_layers(paths: Iterable[str | Path]) -> gpd.GeoDataFrame:
    """Concatenate GeoJSON layers (e.g. one per site) into one EPSG:4326 layer, ranked.

    Rows are sorted by ``confidence`` (descending) then ``flag_id`` when those columns exist; the sort is
    stable, so each already-ranked site layer keeps its internal order. Without them the file order is kept.
    """
    layers = [read_geojson(p) for p in paths]
    layers = [g for g in layers if len(g)] or layers[:1]
    if not layers:
        return gpd.GeoDataFrame({"geometry": gpd.GeoSeries([], crs=4326)}, geometry="geometry", crs=4326)
    merged = pd.concat(layers, ignore_index=True)
    cols = [c for c in merged.columns if c != "geometry"] + ["geometry"]
    merged = gpd.GeoDataFrame(merged[cols], geometry="geometry", crs=4326)
    keys = [c for c in ("confidence", "flag_id") if c in merged.columns]
    if "confidence" in keys:
        asc = [False, True][: len(keys)]
        merged = merged.sort_values(keys, ascending=asc, kind="mergesort", na_position="last")
    return merged.reset_index(drop=True)


# ---------------------------------------------------------------------------------------------- validating
def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _signed_area(ring: list[list[float]]) -> float:
    """Shoelace signed area (> 0 counter-clockwise in lon/lat axes)."""
    s = 0.0
    for (x0, y0, *_), (x1, y1, *_) in itertools.pairwise(ring):
        s += x0 * y1 - x1 * y0
    return s / 2.0


def _check_polygon(rings: Any, where: str) -> list[str]:
    if not isinstance(rings, list) or not rings:
        return [f"{where}: polygon coordinates must be a non-empty array of linear rings"]
    problems: list[str] = []
    for k, ring in enumerate(rings):
        rw = f"{where} ring {k} ({'exterior' if k == 0 else 'hole'})"
        if not isinstance(ring, list):
            problems.append(f"{rw}: must be an array of positions")
            continue
        bad_pos = False
        for j, pos in enumerate(ring):
            if not isinstance(pos, list) or len(pos) not in (2, 3) or not all(_is_number(v) for v in pos):
                problems.append(f"{rw} position {j}: must be [lon, lat] (or [lon, lat, z]) finite numbers")
                bad_pos = True
                break
            lon, lat = pos[0], pos[1]
            if not -180 <= lon <= 180:
                problems.append(f"{rw} position {j}: longitude {lon} outside [-180, 180]")
                bad_pos = True
            if not -90 <= lat <= 90:
                problems.append(f"{rw} position {j}: latitude {lat} outside [-90, 90] (lon/lat swapped?)")
                bad_pos = True
            if bad_pos:
                break
        if bad_pos:
            continue
        if len(ring) < 4:
            problems.append(f"{rw}: has {len(ring)} positions; a linear ring needs at least 4")
            continue
        if ring[0] != ring[-1]:
            problems.append(f"{rw}: is not closed (first position {ring[0]} != last {ring[-1]})")
            continue
        area = _signed_area(ring)
        if area == 0:
            problems.append(f"{rw}: encloses no area")
        elif k == 0 and area < 0:
            problems.append(f"{rw}: is clockwise; RFC 7946 wants exterior rings counter-clockwise")
        elif k > 0 and area > 0:
            problems.append(f"{rw}: is counter-clockwise; RFC 7946 wants holes clockwise")
    return problems


def validate_rfc7946(doc: Any) -> list[str]:
    """Problems that keep ``doc`` from being an RFC 7946 polygon FeatureCollection (empty list = valid).

    Checks: ``type`` is ``FeatureCollection`` with a ``features`` array; no ``crs`` member (collection or
    feature); every feature is a ``Feature`` with an object/null ``properties`` and a ``Polygon`` or
    ``MultiPolygon`` geometry; positions are finite ``[lon, lat]`` with lon in [-180, 180] and lat in
    [-90, 90]; rings are closed with ≥ 4 positions; exterior rings counter-clockwise and holes clockwise
    (signed planar area in lon/lat); and the geometry is valid by shapely (OGC simple features).
    """
    if not isinstance(doc, dict):
        return [f"document must be a JSON object, got {type(doc).__name__}"]
    problems: list[str] = []
    if doc.get("type") != "FeatureCollection":
        problems.append(f"type must be 'FeatureCollection', got {doc.get('type')!r}")
    if "crs" in doc:
        problems.append("has a 'crs' member; RFC 7946 removed it (coordinates are always WGS84 lon/lat)")
    feats = doc.get("features")
    if not isinstance(feats, list):
        problems.append("'features' must be an array")
        return problems
    for i, feat in enumerate(feats):
        where = f"features[{i}]"
        if not isinstance(feat, dict):
            problems.append(f"{where}: must be a JSON object")
            continue
        if feat.get("type") != "Feature":
            problems.append(f"{where}: type must be 'Feature', got {feat.get('type')!r}")
        if "crs" in feat:
            problems.append(f"{where}: has a 'crs' member; RFC 7946 removed it")
        props = feat.get("properties", False)
        if not (props is None or isinstance(props, dict)):
            problems.append(f"{where}: needs a 'properties' member that is an object or null")
        geom = feat.get("geometry")
        if not isinstance(geom, dict):
            problems.append(f"{where}: geometry must be a Polygon or MultiPolygon object, got {geom!r}")
            continue
        gtype = geom.get("type")
        coords = geom.get("coordinates")
        if gtype == "Polygon":
            found = _check_polygon(coords, f"{where} Polygon")
        elif gtype == "MultiPolygon":
            if not isinstance(coords, list) or not coords:
                found = [f"{where} MultiPolygon: coordinates must be a non-empty array of polygons"]
            else:
                found = [
                    p for j, poly in enumerate(coords) for p in _check_polygon(poly, f"{where} polygon {j}")
                ]
        else:
            problems.append(f"{where}: geometry type must be Polygon or MultiPolygon, got {gtype!r}")
            continue
        problems.extend(found)
        if not found:
            try:
                g = shp_shape(geom)
                if not g.is_valid:
                    problems.append(f"{where}: invalid geometry ({shapely.is_valid_reason(g)})")
            except Exception as err:  # shapely raises several types for malformed input
                problems.append(f"{where}: geometry cannot be read ({err})")
    return problems
