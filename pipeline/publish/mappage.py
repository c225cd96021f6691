"""The offline map page: ``index.html`` plus MapLibre GL JS copied next to it.

The page works from disk (``file://``) with no network: MapLibre's UMD build (``maplibre-gl.js`` and
``maplibre-gl.css``, from the npm registry at build time via ``npm ci --prefix web``, never a CDN) is
copied into the output folder, and the layers are embedded in the page as JSON (browsers do not let a
``file://`` page fetch other files). The page shows flags outlined and coloured by confidence class
(polygons from zoom 9, points below zoom 11), site outlines (and rings below zoom 10), a popup with every
property and the before/after chip, a filter by ``appeared_before``, a legend, and a table of the flags
(sortable by rank, area and date; a click zooms to the flag; links open the flag's location in Copernicus
Browser, EO Browser and OpenStreetMap, built from its coordinates: links only, the page requests nothing
from the network). Under the flags: each site's before/after imagery (:mod:`pipeline.publish.imagery`,
EPSG:3857 XYZ tiles that the page reads from ``imagery/<key>.js`` scripts) with a before/after switch and an
opacity slider, over a plain offline basemap (Natural Earth 1:110m countries, public domain, simplified to
0.2°, in ``templates/basemap.geojson``; land, sea and borders, no labels) for places without imagery. See
``templates/app.js``.

Escaping: the data goes into a ``<script type="application/json">`` block with ``<``, ``>``, ``&``,
U+2028 and U+2029 written as JSON ``\\uXXXX`` escapes, so no value can close the block or open a tag; the
page reads it with ``JSON.parse`` and puts text on the page only through ``textContent``. The title is
HTML-escaped. A site called ``<script>alert(1)</script>`` therefore shows as that text.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
from shapely.geometry import shape as shp_shape

import pipeline
from pipeline._files import write_text_atomic
from pipeline.errors import InputFileError
from pipeline.publish.imagery import SiteImagery

__all__ = [
    "CONFIDENCE_CLASSES",
    "MAPLIBRE_FILES",
    "TABLE_KEYS",
    "flag_table",
    "viewer_links",
    "default_web_dir",
    "maplibre_dist",
    "install_web_assets",
    "safe_json_for_html",
    "write_map_page",
]

_TEMPLATES = Path(__file__).with_name("templates")
#: The offline basemap (Natural Earth 1:110m countries, EPSG:4326) in the templates folder.
BASEMAP_FILE = "basemap.geojson"
#: Files of MapLibre's dist folder copied next to the page (the licence under a clearer name).
MAPLIBRE_FILES: dict[str, str] = {
    "maplibre-gl.js": "maplibre-gl.js",
    "maplibre-gl.css": "maplibre-gl.css",
    "LICENSE.txt": "maplibre-gl.LICENSE.txt",
}
#: Confidence classes of the map and legend, highest first: (lower bound, colour, label).
CONFIDENCE_CLASSES: tuple[tuple[float, str, str], ...] = (
    (0.8, "#b30000", "≥ 0.80 (high)"),
    (0.6, "#e34a33", "0.60 – 0.80"),
    (0.0, "#fdbb84", "< 0.60"),
)


def default_web_dir() -> Path:
    """The repository's ``web/`` folder (``package.json`` with MapLibre), or ``$COMPOUNDWATCH_WEB_DIR``."""
    env = os.environ.get("COMPOUNDWATCH_WEB_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "web"


def maplibre_dist(web_dir: str | Path | None = None) -> Path:
    """``<web_dir>/node_modules/maplibre-gl/dist`` with the files the page needs.

    Raises
    ------
    InputFileError
        When MapLibre is not installed there; the message says to run ``npm ci --prefix web``.
    """
    web = Path(web_dir) if web_dir is not None else default_web_dir()
    dist = web / "node_modules" / "maplibre-gl" / "dist"
    missing = [n for n in MAPLIBRE_FILES if not (dist / n).is_file()]
    if missing:
        raise InputFileError(
            f"MapLibre GL JS is not installed in {web}/node_modules (missing {', '.join(missing)}); "
            f"run `npm ci --prefix {web}` (make web) before publishing the map page"
        )
    return dist


def install_web_assets(web_dir: str | Path | None = None, *, timeout_s: float = 300) -> Path:
    """Run ``npm ci`` in ``web_dir`` when MapLibre is missing there; returns :func:`maplibre_dist`.

    Raises
    ------
    InputFileError
        When npm is not installed or ``npm ci`` fails (its last output lines are in the message).
    """
    web = Path(web_dir) if web_dir is not None else default_web_dir()
    try:
        return maplibre_dist(web)
    except InputFileError:
        pass
    npm = shutil.which("npm")
    if npm is None:
        raise InputFileError("npm is not installed; install Node.js/npm (apt-get install npm) to build web/")
    proc = subprocess.run(
        [npm, "ci", "--prefix", str(web), "--no-audit", "--no-fund"],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
        raise InputFileError(f"`npm ci --prefix {web}` failed (exit {proc.returncode}):\n{tail}")
    return maplibre_dist(web)


def safe_json_for_html(value: Any) -> str:
    """JSON text safe inside a ``<script type="application/json">`` element.

    ``<``, ``>`` and ``&`` become ``\\u003c``, ``\\u003e`` and ``\\u0026`` and the JavaScript line
    separators U+2028 / U+2029 ``\\u2028`` / ``\\u2029``: still the same JSON value for ``JSON.parse``.
    """
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _points(fc: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """One point per feature (representative point: always inside the polygon) with properties ``keys``."""
    feats = []
    for f in fc.get("features", []):
        g = f.get("geometry")
        if not g:
            continue
        p = shp_shape(g).representative_point()
        props = f.get("properties") or {}
        feats.append(
            {
                "type": "Feature",
                "properties": {k: props.get(k) for k in keys},
                "geometry": {"type": "Point", "coordinates": [round(p.x, 7), round(p.y, 7)]},
            }
        )
    return {"type": "FeatureCollection", "features": feats}


#: Flag properties copied into the page's table rows (besides ``links``, ``lon``/``lat`` and ``bbox``).
TABLE_KEYS: tuple[str, ...] = (
    "flag_id", "rank", "site_id", "area_m2", "appeared_after", "appeared_before", "confidence",
)


def viewer_links(lon: float, lat: float, zoom: int = 16) -> dict[str, str]:
    """URLs that open a WGS84 point (degrees) in common viewers: ``copernicus``, ``eo_browser``, ``osm``.

    Built from the coordinates only (6 decimals, about 0.1 m); the page shows them as links and never
    requests them itself.
    """
    la, lo = f"{lat:.6f}", f"{lon:.6f}"
    return {
        "copernicus": f"https://browser.dataspace.copernicus.eu/?zoom={zoom}&lat={la}&lng={lo}",
        "eo_browser": f"https://apps.sentinel-hub.com/eo-browser/?zoom={zoom}&lat={la}&lng={lo}",
        "osm": f"https://www.openstreetmap.org/?mlat={la}&mlon={lo}#map={zoom + 1}/{la}/{lo}",
    }


def flag_table(fc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per flag of a FeatureCollection (EPSG:4326), in its order, for the page's table.

    Each row holds the :data:`TABLE_KEYS` properties (None when absent), ``lon``/``lat`` of a point inside
    the flag (degrees, 7 decimals), its ``bbox`` (west, south, east, north) and :func:`viewer_links` of that
    point. Features without geometry get no row.
    """
    rows = []
    for f in fc.get("features", []):
        g = f.get("geometry")
        if not g:
            continue
        geom = shp_shape(g)
        p = geom.representative_point()
        props = f.get("properties") or {}
        row = {k: props.get(k) for k in TABLE_KEYS}
        row.update(
            lon=round(p.x, 7),
            lat=round(p.y, 7),
            bbox=[round(v, 7) for v in geom.bounds],
            links=viewer_links(p.x, p.y),
        )
        rows.append(row)
    return rows


def _fill(template: str, values: Mapping[str, str]) -> str:
    """Replace ``{{NAME}}`` tokens in one pass (replacement text is never scanned for tokens)."""

    def sub(m: re.Match[str]) -> str:
        if m.group(1) not in values:
            raise KeyError(f"template token {m.group(0)} has no value")
        return values[m.group(1)]

    return re.sub(r"\{\{([A-Z_]+)\}\}", sub, template)


def write_map_page(
    out_dir: str | Path,
    flags: Mapping[str, Any] | gpd.GeoDataFrame,
    sites: Mapping[str, Any] | gpd.GeoDataFrame,
    *,
    title: str = "compoundwatch: flagged construction",
    web_dir: str | Path | None = None,
    params_hash: str | None = None,
    period: str | None = None,
    imagery: Sequence[SiteImagery] = (),
) -> Path:
    """Write ``<out_dir>/index.html`` and copy MapLibre next to it; returns the page's path.

    Parameters
    ----------
    out_dir
        The output folder (the chips' ``chips/<flag_id>.png`` paths are relative to it).
    flags, sites
        The flags layer and the site summary layer: RFC 7946 FeatureCollections (dicts, EPSG:4326) or
        GeoDataFrames (converted with :func:`pipeline.publish.geojson.to_feature_collection`).
    title
        Page title (any text; escaped).
    web_dir
        Folder with ``node_modules/maplibre-gl`` (default :func:`default_web_dir`).
    params_hash, period
        Shown under the title (run provenance and imagery period, e.g. ``2020-06-01 – 2023-06-30``).
    imagery
        The sites' before/after tiles already written into ``out_dir`` by
        :func:`pipeline.publish.imagery.write_site_imagery` (sites left out show the basemap).

    Raises
    ------
    InputFileError
        When MapLibre is not installed (run ``npm ci --prefix web``).
    """
    from pipeline.publish.geojson import to_feature_collection

    out_dir = Path(out_dir)
    dist = maplibre_dist(web_dir)
    flags_fc = to_feature_collection(flags) if isinstance(flags, gpd.GeoDataFrame) else dict(flags)
    sites_fc = to_feature_collection(sites) if isinstance(sites, gpd.GeoDataFrame) else dict(sites)
    data = {
        "title": title,
        "pipeline_version": pipeline.__version__,
        "params_hash": params_hash,
        "period": period,
        "confidence_classes": [{"min": lo, "color": c, "label": lab} for lo, c, lab in CONFIDENCE_CLASSES],
        "flags": flags_fc,
        "flag_points": _points(flags_fc, ("flag_id", "confidence", "appeared_before")),
        "sites": sites_fc,
        "site_points": _points(sites_fc, ("site_id",)),
        "flag_table": flag_table(flags_fc),
        "imagery": [im.to_json() for im in imagery],
        "basemap": json.loads((_TEMPLATES / BASEMAP_FILE).read_text(encoding="utf-8")),
    }
    app_js = (_TEMPLATES / "app.js").read_text(encoding="utf-8")
    app_css = (_TEMPLATES / "app.css").read_text(encoding="utf-8")
    for name, text in (("app.js", app_js), ("app.css", app_css)):
        if re.search(r"</(script|style)", text, re.IGNORECASE):
            raise InputFileError(f"template {name} contains a closing </script> or </style> tag")
    page = _fill(
        (_TEMPLATES / "index.html").read_text(encoding="utf-8"),
        {
            "TITLE": html.escape(title),
            "GENERATOR": html.escape(f"compoundwatch {pipeline.__version__}"),
            "APP_CSS": app_css,
            "APP_JS": app_js,
            "DATA_JSON": safe_json_for_html(data),
        },
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    for src, dst in MAPLIBRE_FILES.items():
        shutil.copyfile(dist / src, out_dir / dst)
    return write_text_atomic(out_dir / "index.html", page)
