"""Sites (areas of interest) read from a GeoJSON FeatureCollection in WGS84.

Each feature needs a ``site_id`` property (lowercase letters, digits and hyphens, unique) and a Polygon or
MultiPolygon geometry. Optional properties: ``name``, ``control`` (true where no construction is expected)
and ``scenario`` (landscape of the built-in synthetic scenes: arid, farmland, town).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from pipeline.errors import InputFileError, InvalidAOIError
from pipeline.grid import GridSpec, grid_for_geometry

__all__ = ["Site", "load_sites", "get_site"]

_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


@dataclass(frozen=True)
class Site:
    """One area of interest: id, display name, WGS84 polygon and flags for control/synthetic scenario."""

    site_id: str
    name: str
    geometry: BaseGeometry
    control: bool = False
    scenario: str = "arid"

    def grid(self, resolution: float = 10.0) -> GridSpec:
        """The site's UTM grid at ``resolution`` metres."""
        return grid_for_geometry(self.geometry, resolution)


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
        props = feat.get("properties") or {}
        sid = props.get("site_id")
        if not isinstance(sid, str) or not _ID.match(sid):
            raise InvalidAOIError(
                f"{path}: feature {i} needs a site_id of lowercase letters, digits and hyphens, got {sid!r}"
            )
        if sid in seen:
            raise InvalidAOIError(f"{path}: site_id {sid!r} is used twice; site ids must be unique")
        seen.add(sid)
        try:
            geom = shape(feat["geometry"])
        except Exception as err:  # shapely raises several types for malformed GeoJSON
            raise InvalidAOIError(f"{path}: site {sid!r} has an unreadable geometry ({err})") from err
        if geom.geom_type not in ("Polygon", "MultiPolygon") or geom.is_empty or not geom.is_valid:
            raise InvalidAOIError(f"{path}: site {sid!r} must be a valid, non-empty Polygon or MultiPolygon")
        minx, miny, maxx, maxy = geom.bounds
        if not (-180 <= minx <= maxx <= 180 and -80 <= miny <= maxy <= 84):
            raise InvalidAOIError(f"{path}: site {sid!r} is not in WGS84 lon/lat degrees (bounds {geom.bounds})")
        sites.append(
            Site(
                site_id=sid,
                name=str(props.get("name", sid)),
                geometry=geom,
                control=bool(props.get("control", False)),
                scenario=str(props.get("scenario", "arid")),
            )
        )
    return sites


def get_site(path: str | Path, site_id: str) -> Site:
    """The site with ``site_id`` from a sites file."""
    for s in load_sites(path):
        if s.site_id == site_id:
            return s
    raise InvalidAOIError(f"site {site_id!r} is not in {path}; known: {', '.join(s.site_id for s in load_sites(path))}")
