"""Facility lists → a sites file for the pipeline (:func:`import_sites`).

Points become square areas of interest of ``size_m`` metres a side, centred on the point and snapped to the
10 m pixel grid of the point's UTM zone (the grid :meth:`pipeline.sites.Site.grid` will use, so a 2,000 m
square is exactly 200 × 200 pixels); polygons (e.g. OSM compound outlines) are kept as footprints, optionally
buffered by ``buffer_m`` metres on the same UTM grid. Every site gets a safe, unique ``site_id`` (from the
name, or ``id_column``), a plain-text ``name``, and keeps the source row: ``source``, ``source_row``,
``source_id``, ``lon``/``lat`` (the facility's point, WGS84 degrees), the normalised attributes below and
every original column under ``source_properties``.

Normalised attributes (found by column name, case-insensitive, in any list):

- ``tier`` ← ``Tier`` (ASPI's security tier 1-4);
- ``buildings_<year>`` ← ``Number of Buildings in <year>`` (the source's own building counts);
- ``construction_ongoing_<year>`` ← ``Construction ongoing in <year>?`` (0/1);
- ``source_latest_imagery`` ← ``Date of Latest Sat Imagery`` (ASPI's ``YY-Mon``, as ``YYYY-MM``).

The output is RFC 7946 GeoJSON (WGS84 lon/lat, exterior rings counter-clockwise) that
:func:`pipeline.sites.load_sites` accepts: every site is checked with the same rules (valid polygon, in range,
one UTM zone, at most :data:`pipeline.sites.MAX_SITE_PX` pixels).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from shapely.geometry import MultiPolygon, Point, Polygon, box, mapping, shape
from shapely.geometry.base import BaseGeometry
from shapely.geometry.polygon import orient

from pipeline._files import write_text_atomic
from pipeline.errors import ConfigError, InputFileError, InvalidAOIError
from pipeline.grid import to_crs, utm_epsg
from pipeline.sites import MAX_SITE_PX, Site, check_polygon
from pipeline.watchlist.expr import parse_where
from pipeline.watchlist.records import read_records

__all__ = ["ImportOptions", "ImportResult", "import_sites", "read_within", "write_sites_file", "slug",
            "normalised_attributes", "ID_COLUMNS",
           "NAME_COLUMNS", "DEFAULT_SIZE_M"]

#: Default side of the square area of interest around a point (metres): 200 × 200 pixels at 10 m.
DEFAULT_SIZE_M = 2000.0
#: Columns taken as the source's id when none is named (case-insensitive, in order).
ID_COLUMNS = ("site_id", "id", "number", "osm_way_id", "osm_id", "fid")
#: Columns taken as the name (first non-empty one per row; case-insensitive, in order).
NAME_COLUMNS = ("name_code", "name:en", "name", "title", "label")
_UNSAFE = re.compile(r"[<>\x00-\x1f\x7f-\x9f\u2028\u2029]")
_BUILDINGS = re.compile(r"^(?:number of )?buildings(?: in)? (\d{4})$", re.I)
_ONGOING = re.compile(r"^construction ongoing in (\d{4})\??$", re.I)
_MONTHS = {m: i for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov",
                                       "dec"), start=1)}
_ID_MAX = 58  # room for a "-NNN" suffix within the 63 characters of a site id


@dataclass(frozen=True)
class ImportOptions:
    """How to turn a list into sites.

    ``size_m``: side of the square around points (m); ``buffer_m``: buffer around polygons (m, ≥ 0);
    ``where``: filter expressions (all must hold; see :mod:`pipeline.watchlist.expr`); ``within``: a WGS84
    polygon the facility's point must fall in; ``id_column``/``name_column``/``lon``/``lat``: columns to use
    instead of the automatic choice; ``skip_invalid``: leave out rows without a usable location (else the
    first such row stops the import); ``resolution_m``: pixel size of the grid the squares snap to.
    """

    size_m: float = DEFAULT_SIZE_M
    buffer_m: float = 0.0
    where: tuple[str, ...] = ()
    within: BaseGeometry | None = None
    id_column: str | None = None
    name_column: str | None = None
    lon: str | None = None
    lat: str | None = None
    skip_invalid: bool = False
    resolution_m: float = 10.0


@dataclass(frozen=True)
class ImportResult:
    """The sites FeatureCollection (a dict, ready to write as JSON) and what happened to the rows."""

    collection: dict[str, Any]
    n_rows: int
    n_points: int
    n_footprints: int
    n_filtered: int
    skipped: tuple[str, ...] = field(default_factory=tuple)

    @property
    def site_ids(self) -> list[str]:
        return [f["properties"]["site_id"] for f in self.collection["features"]]


def slug(text: str) -> str:
    """Lowercase ASCII letters, digits and single hyphens (accents dropped, other characters → ``-``)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", ascii_text.lower())).strip("-")


def _plain(text: str) -> str:
    return " ".join(_UNSAFE.sub(" ", text).split())[:200]


def _latest_imagery(value: Any) -> str | None:
    """ASPI's ``YY-Mon`` (``20-Mar``) as ``2020-03``; other texts unchanged."""
    if value is None:
        return None
    m = re.match(r"^(\d{2})-([A-Za-z]{3})$", str(value).strip())
    if m and m.group(2).lower() in _MONTHS:
        return f"20{m.group(1)}-{_MONTHS[m.group(2).lower()]:02d}"
    return str(value)


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)) and math.isfinite(value) and float(value).is_integer():
        return int(value)
    return None


def normalised_attributes(props: Mapping[str, Any]) -> dict[str, Any]:
    """``tier``, ``buildings_<year>``, ``construction_ongoing_<year>`` and ``source_latest_imagery`` from a
    row's columns (see the module docstring); absent columns give no key, missing values ``None``."""
    out: dict[str, Any] = {}
    for key, value in props.items():
        k = " ".join(str(key).split())
        if k.lower() == "tier":
            out["tier"] = _as_int(value)
        elif m := _BUILDINGS.match(k):
            out[f"buildings_{m.group(1)}"] = _as_int(value)
        elif m := _ONGOING.match(k):
            flag = _as_int(value)
            out[f"construction_ongoing_{m.group(1)}"] = None if flag is None else int(flag != 0)
        elif k.lower() == "date of latest sat imagery":
            out["source_latest_imagery"] = _latest_imagery(value)
    return dict(sorted(out.items()))


def _column(names: Sequence[str], wanted: str) -> str:
    lower = {n.lower(): n for n in names}
    if wanted in names:
        return wanted
    if wanted.lower() in lower:
        return lower[wanted.lower()]
    raise ConfigError(f"the list has no column {wanted!r}; its columns: {', '.join(list(names)[:20])}")


def _square(lon: float, lat: float, size_m: float, res: float) -> BaseGeometry:
    """A ``size_m`` square centred on (lon, lat), its edges on multiples of ``res`` metres of the point's UTM
    zone (so the site grid is exactly ``ceil(size_m / res)`` pixels a side), as a WGS84 polygon."""
    epsg = utm_epsg(lon, lat)
    p = cast(Point, to_crs(Point(lon, lat), 4326, epsg))
    n = max(1, math.ceil(size_m / res - 1e-9))
    x0 = math.floor((p.x - n * res / 2) / res + 0.5) * res
    y0 = math.floor((p.y - n * res / 2) / res + 0.5) * res
    eps = 0.05  # 5 cm inside the pixel edges: rounding to 1e-7° (about 1 cm) cannot spill into a next pixel
    sq = box(x0 + eps, y0 + eps, x0 + n * res - eps, y0 + n * res - eps)
    return orient(cast(Polygon, to_crs(sq, epsg, 4326)), 1.0)


def _buffered(geom: BaseGeometry, buffer_m: float) -> BaseGeometry:
    if buffer_m <= 0:
        return geom
    c = geom.centroid
    epsg = utm_epsg(c.x, c.y)
    return to_crs(to_crs(geom, 4326, epsg).buffer(buffer_m, join_style="mitre"), epsg, 4326)


def _rounded(geom: BaseGeometry) -> dict[str, Any]:
    """GeoJSON geometry with coordinates rounded to 1e-7° (about 1 cm), exterior rings counter-clockwise."""
    def rnd(coords: Any) -> Any:
        if isinstance(coords, (list, tuple)) and coords and isinstance(coords[0], (int, float)):
            return [round(float(c), 7) for c in coords]
        return [rnd(c) for c in coords]

    if geom.geom_type == "Polygon":
        geom = orient(cast(Polygon, geom), 1.0)
    else:
        geom = MultiPolygon([orient(cast(Polygon, g), 1.0) for g in getattr(geom, "geoms", [])])
    gj = dict(mapping(geom))
    return {"type": gj["type"], "coordinates": rnd(gj["coordinates"])}


def import_sites(path: str | Path, options: ImportOptions = ImportOptions()) -> ImportResult:
    """Read a facility list and build the sites FeatureCollection (see the module docstring).

    Raises
    ------
    ConfigError
        Bad options: a size or buffer out of range, a ``where`` expression that does not parse, an unknown
        column, or every row filtered out.
    InvalidAOIError
        A row without a usable location (unless ``skip_invalid``), or a site the pipeline could not run
        (invalid polygon, too large for one cube).
    InputFileError
        The list cannot be read.
    """
    if not (options.resolution_m > 0 and options.size_m >= 10 * options.resolution_m):
        raise ConfigError(f"--size-m must be at least {10 * options.resolution_m:g} m (10 pixels), "
                          f"got {options.size_m:g}")
    side_px = math.ceil(options.size_m / options.resolution_m)
    if side_px * side_px > MAX_SITE_PX:
        raise ConfigError(
            f"--size-m {options.size_m:g} gives {side_px} × {side_px} px sites; a site is held as one cube of at "
            f"most {MAX_SITE_PX / 1e6:g} Mpx ({math.isqrt(MAX_SITE_PX) * options.resolution_m:,.0f} m a side at "
            f"{options.resolution_m:g} m); use a smaller size, or screen large areas with compoundwatch scan")
    if not (0 <= options.buffer_m <= 5000):
        raise ConfigError(f"--buffer-m must be between 0 and 5000 m, got {options.buffer_m:g}")
    path = Path(path)
    records = read_records(path, lon=options.lon, lat=options.lat)
    names = list(dict.fromkeys(k for r in records for k in r.properties))
    predicates = [parse_where(w, names) for w in options.where]
    id_col = _column(names, options.id_column) if options.id_column else next(
        (n for w in ID_COLUMNS for n in names if n.lower() == w), None)
    name_cols = [_column(names, options.name_column)] if options.name_column else [
        n for w in NAME_COLUMNS for n in names if n.lower() == w]

    features: list[dict[str, Any]] = []
    skipped: list[str] = []
    used: set[str] = set()
    n_filtered = n_points = n_footprints = 0
    for rec in records:
        if predicates and not all(p(rec.properties) for p in predicates):
            n_filtered += 1
            continue
        where = f"{path.name} row {rec.row}"
        if rec.geometry is None:
            reason = f"{where}: {rec.problem}"
            if not options.skip_invalid:
                raise InvalidAOIError(f"{reason}; fix the row, or pass --skip-invalid to leave such rows out")
            skipped.append(reason)
            continue
        point = cast(Point, rec.geometry if rec.geometry.geom_type == "Point"
                     else rec.geometry.representative_point())
        if options.within is not None and not options.within.intersects(point):
            n_filtered += 1
            continue
        source_id = rec.properties.get(id_col) if id_col else None
        name = next((str(rec.properties[c]) for c in name_cols if rec.properties.get(c) is not None), "")
        name = _plain(name) or f"{path.stem} row {rec.row}"
        base = slug(str(source_id)) if options.id_column and source_id is not None else slug(name)
        if not base or not base[0].isalnum():
            base = slug(f"site-{source_id if source_id is not None else rec.row}")
        if len(base) > _ID_MAX:  # cut at a word boundary
            cut = base[:_ID_MAX + 1].rfind("-")
            base = base[:cut if cut > 20 else _ID_MAX]
        base = base.strip("-")
        sid, k = base, 1
        while sid in used:
            k += 1
            sid = f"{base}-{k}"
        try:
            if rec.geometry.geom_type == "Point":
                geom = _square(point.x, point.y, options.size_m, options.resolution_m)
                kind = "point"
            else:
                geom = _buffered(check_polygon(rec.geometry, where), options.buffer_m)
                kind = "footprint"
            gj = _rounded(geom)
            check_polygon(shape(gj), where)
            Site(sid, name, shape(gj)).grid(options.resolution_m)  # one cube of at most MAX_SITE_PX
        except InvalidAOIError as err:
            if not options.skip_invalid:
                raise InvalidAOIError(f"{err}; fix the row, or pass --skip-invalid to leave it out") from err
            skipped.append(str(err))
            continue
        used.add(sid)
        n_points += kind == "point"
        n_footprints += kind == "footprint"
        props: dict[str, Any] = {
            "site_id": sid,
            "name": name,
            "control": False,
            "source": path.name,
            "source_row": rec.row,
            "source_id": source_id,
            "source_geometry": kind,
            "lon": round(point.x, 7),
            "lat": round(point.y, 7),
        }
        props.update({"aoi_size_m": options.size_m} if kind == "point" else {"buffer_m": options.buffer_m})
        props.update(normalised_attributes(rec.properties))
        props["source_properties"] = rec.properties
        features.append({"type": "Feature", "properties": props, "geometry": gj})
    if not features:
        why = f"{n_filtered} filtered out by --where/--within" if n_filtered else f"{len(skipped)} skipped"
        raise ConfigError(f"no site left to write from {path} ({len(records)} row(s): {why}); loosen the filters")
    collection = {"type": "FeatureCollection", "features": features}
    return ImportResult(collection, len(records), n_points, n_footprints, n_filtered, tuple(skipped))


def read_within(path: str | Path) -> BaseGeometry:
    """The union of the (Multi)Polygons of a GeoJSON file in WGS84, for :attr:`ImportOptions.within`.

    Raises
    ------
    InputFileError
        When the file is missing.
    InvalidAOIError
        When it is not GeoJSON, has no polygon, or a polygon is invalid or not in lon/lat degrees.
    """
    from shapely.ops import unary_union

    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"--within {path} not found; give a GeoJSON file of WGS84 polygons")
    polys: list[BaseGeometry] = []
    for rec in read_records(path):
        if rec.geometry is None or rec.geometry.geom_type == "Point":
            raise InvalidAOIError(f"--within {path}: feature {rec.row} is not a Polygon or MultiPolygon "
                                  f"({rec.problem or 'a Point'}); give the area as polygons")
        polys.append(check_polygon(rec.geometry, f"--within {path}: feature {rec.row}"))
    return unary_union(polys)


def write_sites_file(result: ImportResult, path: str | Path) -> Path:
    """Write the sites FeatureCollection as UTF-8 GeoJSON, atomically (one feature per line)."""
    import json

    lines = [json.dumps(f, ensure_ascii=False, separators=(",", ":")) for f in result.collection["features"]]
    text = '{"type":"FeatureCollection","features":[\n' + ",\n".join(lines) + "\n]}\n"
    return write_text_atomic(path, text)
