"""Facility lists read into plain records: properties (missing values normalised) + a WGS84 geometry.

Readers for the formats analysts hand around: CSV with longitude/latitude columns (the ASPI Xinjiang Data
Project's ``CampDataset_v1.csv``: ``Lat``/``Long``), GeoJSON points (``facilities_points.geojson``) and
GeoJSON polygons (OSM's camp outlines, used as footprints). Missing values written as empty text, ``N/A``,
``#N/A``, ``NA``, ``null``, ``None`` or ``-`` become ``None``; text that reads as a number becomes ``int`` or
``float``. Coordinates are WGS84 longitude/latitude degrees (GeoJSON: RFC 7946 order, x = longitude).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from shapely.geometry import Point, shape
from shapely.geometry.base import BaseGeometry

from pipeline.errors import InputFileError, InvalidAOIError

__all__ = ["Record", "read_records", "clean_value", "MISSING", "LON_NAMES", "LAT_NAMES"]

#: Texts read as a missing value (compared case-insensitively, after stripping spaces).
MISSING = frozenset({"", "n/a", "#n/a", "na", "nan", "null", "none", "-"})
#: Column names taken as longitude / latitude when no ``--lon``/``--lat`` is given (case-insensitive, in order).
LON_NAMES = ("lon", "long", "longitude", "lng", "x")
LAT_NAMES = ("lat", "latitude", "y")
_INT = re.compile(r"^[-+]?\d+$")
_FLOAT = re.compile(r"^[-+]?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?$")


@dataclass(frozen=True)
class Record:
    """One row of a facility list: its 1-based ``row`` in the file, its properties and WGS84 geometry
    (a Point, Polygon or MultiPolygon; ``None`` when the row has no usable location, with ``problem`` saying
    why)."""

    row: int
    properties: dict[str, Any]
    geometry: BaseGeometry | None
    problem: str = ""


def clean_value(value: Any) -> Any:
    """``None`` for missing-value markers, ``int``/``float`` for numeric text, stripped text otherwise."""
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, (list, dict)):
        return value
    text = str(value).strip()
    if text.lower() in MISSING:
        return None
    if _INT.match(text) and len(text) < 16:
        return int(text)
    if _FLOAT.match(text):
        num = float(text)
        return num if math.isfinite(num) else None
    return text


def _pick(names: Sequence[str], wanted: Sequence[str], given: str | None, what: str, path: Path) -> str:
    if given is not None:
        if given in names:
            return given
        lower = {n.lower(): n for n in names}
        if given.lower() in lower:
            return lower[given.lower()]
        raise InputFileError(f"{path} has no column {given!r} for the {what}; its columns: {', '.join(names)}")
    lower = {n.strip().lower(): n for n in names}
    for w in wanted:
        if w in lower:
            return lower[w]
    raise InputFileError(
        f"{path} has no {what} column (looked for {', '.join(wanted)}); name it with --{what[:3]} COLUMN "
        f"(its columns: {', '.join(names[:20])}{' …' if len(names) > 20 else ''})"
    )


def _point(lon: Any, lat: Any) -> tuple[BaseGeometry | None, str]:
    if lon is None or lat is None:
        return None, "no longitude/latitude"
    if not isinstance(lon, (int, float)) or not isinstance(lat, (int, float)) or isinstance(lon, bool):
        return None, f"longitude/latitude are not numbers ({lon!r}, {lat!r})"
    if not (-180 <= lon <= 180 and -80 <= lat <= 84):
        return None, (f"({lon}, {lat}) is outside lon -180..180, lat -80..84 (UTM range); are the columns "
                      "swapped or projected?")
    return Point(float(lon), float(lat)), ""


def _read_csv(path: Path, lon: str | None, lat: str | None) -> list[Record]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    names = [n for n in (reader.fieldnames or []) if n is not None]
    if not names:
        raise InputFileError(f"{path} is empty or has no header row; give a CSV with a header line")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise InputFileError(f"{path}: column(s) {', '.join(repr(d) for d in dup)} appear twice in the header; "
                             "rename them")
    lon_col = _pick(names, LON_NAMES, lon, "longitude", path)
    lat_col = _pick(names, LAT_NAMES, lat, "latitude", path)
    out: list[Record] = []
    for i, row in enumerate(reader, start=1):
        if None in row:  # more cells than header names
            raise InputFileError(f"{path}: row {i} has more cells than the header has columns; check its quoting")
        props = {k: clean_value(v) for k, v in row.items() if k is not None}
        geom, problem = _point(props.get(lon_col), props.get(lat_col))
        out.append(Record(i, props, geom, problem))
    return out


def _read_geojson(path: Path) -> list[Record]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InvalidAOIError(f"{path} is not valid JSON ({err}); give a GeoJSON FeatureCollection or a CSV "
                              "with longitude/latitude columns") from err
    if isinstance(doc, dict) and doc.get("type") == "Feature":
        doc = {"type": "FeatureCollection", "features": [doc]}
    feats = doc.get("features") if isinstance(doc, dict) else None
    if not isinstance(feats, list):
        raise InvalidAOIError(f"{path} is not a GeoJSON FeatureCollection (no 'features' list)")
    out: list[Record] = []
    for i, feat in enumerate(feats, start=1):
        props_in = (feat.get("properties") if isinstance(feat, dict) else None) or {}
        props = {str(k): clean_value(v) for k, v in props_in.items()} if isinstance(props_in, dict) else {}
        gj = feat.get("geometry") if isinstance(feat, dict) else None
        if not gj:
            out.append(Record(i, props, None, "no geometry"))
            continue
        try:
            geom = shape(gj)
        except Exception as err:  # shapely raises several types for malformed GeoJSON
            out.append(Record(i, props, None, f"unreadable geometry ({err})"))
            continue
        if geom.is_empty:
            out.append(Record(i, props, None, "empty geometry"))
        elif geom.geom_type == "Point":
            pt, problem = _point(cast(Point, geom).x, cast(Point, geom).y)
            out.append(Record(i, props, pt, problem))
        elif geom.geom_type in ("Polygon", "MultiPolygon"):
            out.append(Record(i, props, geom))
        else:
            out.append(Record(i, props, None, f"a {geom.geom_type} (give Points or Polygons)"))
    return out


def read_records(path: str | Path, *, lon: str | None = None, lat: str | None = None) -> list[Record]:
    """The rows of a facility list (``.csv`` or ``.geojson``/``.json``), in file order.

    Raises
    ------
    InputFileError
        When the file is missing, empty, or (CSV) lacks longitude/latitude columns.
    InvalidAOIError
        When a GeoJSON file is not valid JSON or not a FeatureCollection.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"facility list {path} not found; give a CSV with longitude/latitude columns or a "
                             "GeoJSON file of points or polygons")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        records = _read_csv(path, lon, lat)
    elif suffix in (".geojson", ".json"):
        records = _read_geojson(path)
    else:
        raise InputFileError(f"{path}: unknown list format {suffix or '(no suffix)'!r}; give a .csv (with "
                             "longitude/latitude columns) or a .geojson file")
    if not records:
        raise InputFileError(f"{path} has no rows; give a list with at least one facility")
    return records
