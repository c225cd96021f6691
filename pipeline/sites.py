"""Sites (areas of interest) read from a GeoJSON FeatureCollection in WGS84.

Each feature needs a ``site_id`` property (lowercase letters, digits and hyphens, unique) and a Polygon or
MultiPolygon geometry. Optional properties: ``name``, ``control`` (true where no construction is expected)
and ``scenario`` (landscape of the built-in synthetic scenes: arid, farmland, town). Every other property
(e.g. a watchlist's ``tier``, ``buildings_<year>``, ``source_properties``: ``compoundwatch sites import``)
is kept, unchanged, in :attr:`Site.attributes`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from pipeline.config import SITE_ID_PATTERN
from pipeline.errors import InputFileError, InvalidAOIError
from pipeline.grid import GridSpec, grid_for_geometry

__all__ = ["Site", "load_sites", "get_site", "check_site_id", "check_name", "check_polygon", "SITE_ID_RULE",
           "MAX_SITE_PX"]

_ID = SITE_ID_PATTERN
#: What a site id may hold (it names files and folders, and appears in web pages): said in error messages.
SITE_ID_RULE = "lowercase letters, digits and hyphens (1-63 characters, starting with a letter or digit)"
# markup and control characters (names are shown in the map page, popups, STAC and GeoJSON properties)
_UNSAFE_NAME = re.compile(r"[<>\x00-\x1f\x7f-\x9f\u2028\u2029]")
#: Widest site in degrees of longitude: a site is processed on the one UTM grid of its centre.
MAX_SITE_WIDTH_DEG = 6.0
#: Largest site grid in pixels: a site is fetched and held as one cube (dates × bands × pixels) in memory;
#: 4 Mpx is 20 km × 20 km at 10 m (the built-in sites are under 0.2 Mpx). Wider areas: ``compoundwatch scan``.
MAX_SITE_PX = 4_000_000
_OWN_KEYS = frozenset({"site_id", "name", "control", "scenario"})


def check_site_id(sid: object, where: str) -> str:
    """``sid`` if it is a safe site id, else :class:`InvalidAOIError` naming ``where``."""
    if not isinstance(sid, str) or not _ID.match(sid):
        raise InvalidAOIError(f"{where} needs a site_id of {SITE_ID_RULE}, got {sid!r}")
    return sid


def check_name(name: str, where: str) -> str:
    """``name`` if it is plain text (no markup, no control characters), else :class:`InvalidAOIError`."""
    if _UNSAFE_NAME.search(name) or len(name) > 200:
        raise InvalidAOIError(
            f"{where} has a name with markup or control characters (or over 200 characters): {name[:60]!r}; "
            "names are shown in web pages and files, give plain text"
        )
    return name


def check_polygon(geom: BaseGeometry, where: str) -> BaseGeometry:
    """A WGS84 Polygon/MultiPolygon that is valid, in range and not wrapped across the antimeridian."""
    from shapely.validation import explain_validity

    if geom.geom_type not in ("Polygon", "MultiPolygon") or geom.is_empty:
        raise InvalidAOIError(
            f"{where} must be a valid, non-empty Polygon or MultiPolygon, got a {geom.geom_type}"
            f"{' (empty)' if geom.is_empty else ''}"
        )
    minx, miny, maxx, maxy = geom.bounds
    if not (-180 <= minx <= maxx <= 180 and -80 <= miny <= maxy <= 84):
        raise InvalidAOIError(
            f"{where} is not in WGS84 lon/lat degrees: bounds {tuple(round(b, 4) for b in geom.bounds)} are "
            "outside lon -180..180, lat -80..84; reproject it to EPSG:4326 (x = longitude)"
        )
    parts = list(getattr(geom, "geoms", [geom]))  # a MultiPolygon already split at 180° is fine
    wrapped = [p for p in parts if p.bounds[2] - p.bounds[0] > 180]
    if wrapped:
        lo, hi = wrapped[0].bounds[0], wrapped[0].bounds[2]
        raise InvalidAOIError(
            f"{where} crosses the antimeridian (its longitudes run from {lo:g} to {hi:g}); split it at 180° "
            "into one polygon on each side"
        )
    if not geom.is_valid:
        raise InvalidAOIError(
            f"{where} is not a valid polygon ({explain_validity(geom)}): its outline self-intersects or "
            "overlaps itself; fix the outline (QGIS: Vector → Geometry Tools → Fix Geometries) and retry"
        )
    return geom


@dataclass(frozen=True)
class Site:
    """One area of interest: id, display name, WGS84 polygon and flags for control/synthetic scenario;
    ``attributes``: the sites file's other properties (a watchlist's source attributes), as read."""

    site_id: str
    name: str
    geometry: BaseGeometry
    control: bool = False
    scenario: str = "arid"
    attributes: dict[str, Any] = field(default_factory=dict, hash=False, compare=False, repr=False)

    def grid(self, resolution: float = 10.0) -> GridSpec:
        """The site's UTM grid at ``resolution`` metres; :class:`InvalidAOIError` when it is larger than
        :data:`MAX_SITE_PX` (it could not be held in memory: screen such areas with ``compoundwatch scan``)."""
        grid = grid_for_geometry(self.geometry, resolution)
        rows, cols = grid.shape
        if rows * cols > MAX_SITE_PX:
            raise InvalidAOIError(
                f"site {self.site_id!r} is {rows * resolution / 1000:,.0f} km × {cols * resolution / 1000:,.0f} km "
                f"({rows * cols / 1e6:,.0f} Mpx at {resolution:g} m); a site is fetched and held as one cube of at "
                f"most {MAX_SITE_PX / 1e6:g} Mpx: split it into smaller sites, or screen the area with "
                "compoundwatch scan"
            )
        return grid


def load_sites(path: str | Path) -> list[Site]:
    """Parse and validate a sites GeoJSON file."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"sites file {path} not found; point sites_file in params.yaml at a GeoJSON file")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InvalidAOIError(f"{path} is not valid JSON ({err}); it must be a GeoJSON FeatureCollection") from err
    feats = doc.get("features") if isinstance(doc, dict) else None
    if not isinstance(feats, list) or not feats:
        raise InvalidAOIError(f"{path} must be a GeoJSON FeatureCollection with at least one feature")
    sites: list[Site] = []
    seen: set[str] = set()
    for i, feat in enumerate(feats):
        props = (feat.get("properties") if isinstance(feat, dict) else None) or {}
        sid = check_site_id(props.get("site_id"), f"{path}: feature {i}")
        if sid in seen:
            raise InvalidAOIError(f"{path}: site_id {sid!r} is used twice; site ids must be unique")
        seen.add(sid)
        try:
            geom = shape(feat["geometry"])
        except Exception as err:  # shapely raises several types for malformed GeoJSON
            raise InvalidAOIError(f"{path}: site {sid!r} has an unreadable geometry ({err})") from err
        check_polygon(geom, f"{path}: site {sid!r}")
        minx, _, maxx, _ = geom.bounds
        if maxx - minx > 180:
            raise InvalidAOIError(
                f"{path}: site {sid!r} lies on both sides of the antimeridian; make one site for each side "
                "(a site is processed on one UTM grid)"
            )
        if maxx - minx > MAX_SITE_WIDTH_DEG:
            n_zones = min(int((maxx + 180) // 6), 59) - int((minx + 180) // 6) + 1
            raise InvalidAOIError(
                f"{path}: site {sid!r} spans {n_zones} UTM zones ({maxx - minx:.1f}° of longitude); a site is "
                "processed on one UTM grid: split it into sites of at most 6°, or screen it with compoundwatch scan"
            )
        name = check_name(str(props.get("name", sid)), f"{path}: site {sid!r}")
        sites.append(
            Site(
                site_id=sid,
                name=name,
                geometry=geom,
                control=bool(props.get("control", False)),
                scenario=str(props.get("scenario", "arid")),
                attributes={k: v for k, v in props.items() if k not in _OWN_KEYS},
            )
        )
    return sites


def get_site(path: str | Path, site_id: str) -> Site:
    """The site with ``site_id`` from a sites file."""
    for s in load_sites(path):
        if s.site_id == site_id:
            return s
    raise InvalidAOIError(f"site {site_id!r} is not in {path}; known: {', '.join(s.site_id for s in load_sites(path))}")
