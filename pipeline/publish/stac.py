"""A STAC catalog (pystac) describing one run's published outputs and where they came from.

Layout, under ``<out_dir>/stac/`` (self-contained: every link and asset href is relative, so the folder
can be moved or served as it is)::

    catalog.json                    the run: pipeline version, params hash, sites, time range
    flags/flags.json                Item: the flags layer (GeoJSON, FlatGeobuf, GeoParquet assets)
    site-summary/site-summary.json  Item: the per-site summary layer (same three formats)
    map/map.json                    Item: PMTiles archive (both layers) and the offline map page
    site-<id>/site-<id>.json        Item per site: its polygon, its tiles cube (the raster the flags and
                                    chips come from) and the before/after chip of each of its flags

Provenance is in every Item's properties: ``processing:software`` (compoundwatch version),
``processing:lineage`` (what produced the asset), ``compoundwatch:params_hash`` (the hash each flag also
carries), and for site Items the Sentinel-2 scene ids the flags rest on (``compoundwatch:scenes``).
Items span ``fetch.start`` .. ``fetch.end`` (``start_datetime`` / ``end_datetime``).
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import geopandas as gpd
import pystac
import shapely
from shapely.geometry import box, mapping
from shapely.geometry.base import BaseGeometry

import pipeline
from pipeline.config import Settings, params_hash
from pipeline.sites import Site

__all__ = ["STAC_DIR", "MEDIA_TYPES", "write_stac"]

#: Folder of the catalog inside the output folder.
STAC_DIR = "stac"
#: Media types by file suffix.
MEDIA_TYPES: dict[str, str] = {
    ".geojson": "application/geo+json",
    ".fgb": "application/vnd.flatgeobuf",
    ".parquet": "application/vnd.apache.parquet",
    ".pmtiles": "application/vnd.pmtiles",
    ".html": "text/html",
    ".png": "image/png",
    ".zarr": "application/vnd+zarr",
}
_PROCESSING = "https://stac-extensions.github.io/processing/v1.2.0/schema.json"


def _utc(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)


def _asset(path: Path, title: str, roles: Sequence[str], description: str | None = None) -> pystac.Asset:
    return pystac.Asset(
        href=str(path.resolve()),
        title=title,
        description=description,
        media_type=MEDIA_TYPES.get(path.suffix),
        roles=list(roles),
    )


def _item(
    item_id: str,
    geom: BaseGeometry,
    settings: Settings,
    lineage: str,
    extra: Mapping[str, object] | None = None,
) -> pystac.Item:
    props: dict[str, object] = {
        "processing:software": {"compoundwatch": pipeline.__version__},
        "processing:lineage": lineage,
        "compoundwatch:params_hash": params_hash(settings),
        "constellation": "sentinel-2",
    }
    props.update(extra or {})
    return pystac.Item(
        id=item_id,
        geometry=mapping(geom),
        bbox=list(geom.bounds),
        datetime=None,
        start_datetime=_utc(settings.fetch.start),
        end_datetime=_utc(settings.fetch.end),
        properties=props,
        stac_extensions=[_PROCESSING],
    )


def _footprint(geoms: Sequence[BaseGeometry]) -> BaseGeometry:
    geoms = [g for g in geoms if g is not None and not g.is_empty]
    if not geoms:
        return box(-180, -90, 180, 90)
    return box(*shapely.union_all(geoms).bounds)


def write_stac(
    out_dir: str | Path,
    *,
    flags: gpd.GeoDataFrame,
    sites: Sequence[Site],
    settings: Settings,
    layers: Mapping[str, Mapping[str, Path]],
    pmtiles: Path | None = None,
    map_page: Path | None = None,
    chips: Mapping[str, Path] | None = None,
    tiles: Mapping[str, Path] | None = None,
) -> Path:
    """Write the catalog to ``<out_dir>/stac/`` (replacing an old one); returns ``catalog.json``.

    Parameters
    ----------
    out_dir
        The output folder all asset paths live in or next to.
    flags
        The published flags layer (any CRS): ``flag_id``, ``site_id``, ``pre_scenes``, ``post_scenes``.
    sites
        The sites of the run.
    settings
        Run settings: time range and params hash.
    layers
        ``{"flags": {"geojson": path, "fgb": path, "parquet": path}, "site-summary": {...}}``.
    pmtiles, map_page
        The PMTiles archive and ``index.html``.
    chips
        ``{flag_id: png path}``.
    tiles
        ``{site_id: tiles cube path}`` (``data/tiles/<site>.zarr``); referenced by relative href.
    """
    out_dir = Path(out_dir)
    stac_dir = out_dir / STAC_DIR
    # the catalog is built in a hidden sibling folder (same depth: relative hrefs stay right; no dot-suffix,
    # which pystac would take for a file name) and swapped in by renames, so a killed run leaves the previous
    # catalog or the new one, never half of one
    build = out_dir / f".{STAC_DIR}-building"
    for stale in (build, out_dir / f".{STAC_DIR}-old"):
        if stale.exists():
            shutil.rmtree(stale)
    chips = dict(chips or {})
    tiles = dict(tiles or {})
    wgs = flags.to_crs(4326) if len(flags) and flags.crs is not None else flags
    site_geoms = [s.geometry for s in sites]
    all_fp = _footprint([*site_geoms, *list(wgs.geometry)])
    phash = params_hash(settings)

    catalog = pystac.Catalog(
        id="compoundwatch-run",
        title="compoundwatch run outputs",
        description=(
            f"Flags of new construction found by compoundwatch {pipeline.__version__} in Sentinel-2 L2A imagery "
            f"{settings.fetch.start}..{settings.fetch.end} ({settings.fetch.source.value} source) at "
            f"{len(sites)} site(s); parameters hash {phash}."
        ),
    )
    describe = {
        "flags": (
            "Flags: one polygon per change blob, ranked by confidence",
            "flag stage: vectorised change "
            "blobs of the detect stage (persistent change-vector analysis of the tiles cubes)",
        ),
        "site-summary": (
            "Per-site summary: area added per period, flags, latest clear imagery, construction ongoing",
            "publish stage: aggregated from the flags and the tiles cubes",
        ),
    }
    for name, files in layers.items():
        title, lineage = describe.get(name, (name, "publish stage"))
        geoms = site_geoms if name == "site-summary" else list(wgs.geometry)
        item = _item(
            name,
            _footprint(geoms) if geoms else all_fp,
            settings,
            lineage,
            {"title": title, "compoundwatch:n_features": len(sites) if name == "site-summary" else len(wgs)},
        )
        for fmt, path in files.items():
            item.add_asset(fmt, _asset(Path(path), f"{title} ({fmt})", ["data"]))
        catalog.add_item(item)

    if pmtiles is not None or map_page is not None:
        item = _item(
            "map",
            all_fp,
            settings,
            "publish stage: vector tiles and map page from the published layers",
            {"title": "Vector tiles (flags + sites) and offline map page"},
        )
        if pmtiles is not None:
            item.add_asset(
                "pmtiles",
                _asset(Path(pmtiles), "PMTiles v3 vector tiles: layers flags, sites", ["data", "tiles"]),
            )
        if map_page is not None:
            item.add_asset(
                "map", _asset(Path(map_page), "Offline map page (open in a browser)", ["overview"])
            )
        catalog.add_item(item)

    for site in sites:
        own = wgs[wgs["site_id"] == site.site_id] if len(wgs) else wgs
        scenes: set[str] = set()
        for col in ("pre_scenes", "post_scenes"):
            if col in own:
                for v in own[col].dropna():
                    scenes.update(s for s in str(v).split(",") if s)
        item = _item(
            f"site-{site.site_id}",
            site.geometry,
            settings,
            "tile stage: harmonised Sentinel-2 L2A reflectance and clear-sky mask on the site's UTM grid; "
            "chips cut from it by the publish stage",
            {
                "title": site.name,
                "compoundwatch:site_id": site.site_id,
                "compoundwatch:control": site.control,
                "compoundwatch:n_flags": int(len(own)),
                "compoundwatch:scenes": sorted(scenes),
            },
        )
        if site.site_id in tiles:
            item.add_asset(
                "tiles",
                _asset(
                    Path(tiles[site.site_id]),
                    "Tiles cube: reflectance (time, band, y, x) float32 + clear (time, y, x) bool, zarr",
                    ["data", "source"],
                ),
            )
        for fid in own["flag_id"] if len(own) else []:
            if fid in chips:
                item.add_asset(
                    f"chip-{fid}",
                    _asset(Path(chips[fid]), f"Before/after chip of flag {fid}", ["overview", "visual"]),
                )
        catalog.add_item(item)

    catalog.normalize_hrefs(str(build.resolve()))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    old = out_dir / f".{STAC_DIR}-old"
    if stac_dir.exists():
        stac_dir.rename(old)
    build.rename(stac_dir)
    if old.exists():
        shutil.rmtree(old)
    return stac_dir / "catalog.json"
