"""Everything the publish stage writes for a run, in one call: :func:`publish_all`.

Output folder layout (paths relative to ``out_dir``; the page and the layers link to each other by
these relative paths, so the folder can be copied or zipped as a whole)::

    index.html, maplibre-gl.js, maplibre-gl.css, maplibre-gl.LICENSE.txt   offline map page
    flags.geojson, flags.fgb, flags.parquet                                flags layer (identical features)
    site_summary.geojson, site_summary.fgb, site_summary.parquet           per-site summary layer
    compoundwatch.pmtiles                                                  vector tiles: layers flags, sites
    chips/<flag_id>.png                                                    before/after chip per flag
    imagery/<site>/{before,after}/{z}/{x}/{y}.png, imagery/<site>.js       site imagery, EPSG:3857 XYZ
    stac/catalog.json (+ items)                                            STAC catalog of all of the above

The published flags layer is the input ranked (confidence descending, then ``flag_id``) with two added
properties: ``rank`` (1 = most confident; FlatGeobuf's spatial index reorders features on disk, so the
ranking travels as a value) and ``chip`` (``chips/<flag_id>.png``).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import geopandas as gpd

from pipeline.config import Settings, params_hash
from pipeline.errors import InputFileError
from pipeline.io import read_cube
from pipeline.publish.chips import CHIPS_DIR, chip_href, render_chips
from pipeline.publish.imagery import IMAGERY_DIR, SiteImagery, write_site_imagery
from pipeline.publish.mappage import write_map_page
from pipeline.publish.pmtiles import write_pmtiles
from pipeline.publish.stac import write_stac
from pipeline.publish.summary import Period, latest_clear_date, site_summary
from pipeline.publish.vector import write_layer
from pipeline.sites import Site

__all__ = ["FLAGS_NAME", "SUMMARY_NAME", "PMTILES_NAME", "rank_flags", "publish_all"]

FLAGS_NAME = "flags"
SUMMARY_NAME = "site_summary"
PMTILES_NAME = "compoundwatch.pmtiles"


def rank_flags(flags: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """The flags sorted by confidence (descending) then ``flag_id``, with ``rank`` (1..n) and ``chip``."""
    out = flags.copy()
    keys = [c for c in ("confidence", "flag_id") if c in out.columns]
    if keys:
        out = out.sort_values(
            keys, ascending=[c != "confidence" for c in keys], kind="mergesort", na_position="last"
        )
    out = out.reset_index(drop=True)
    cols = [c for c in out.columns if c not in ("rank", "chip", out.geometry.name)]
    out["rank"] = range(1, len(out) + 1)
    out["chip"] = [chip_href(str(f)) for f in out["flag_id"]] if "flag_id" in out.columns else []
    out["rank"] = out["rank"].astype("int64")
    return out[[*cols, "rank", "chip", out.geometry.name]]


def publish_all(
    flags: gpd.GeoDataFrame,
    sites: Sequence[Site],
    tiles: Mapping[str, Path],
    out_dir: Path,
    settings: Settings,
    *,
    period: Period = "half-year",
    web_dir: Path | None = None,
    title: str = "compoundwatch: flagged construction",
    max_zoom: int = 14,
    with_imagery: bool = True,
) -> dict[str, Path]:
    """Write every published output of a run into ``out_dir``; returns ``{what: path}``.

    Parameters
    ----------
    flags
        All flags of the run (any CRS, e.g. :func:`pipeline.publish.geojson.merge_layers` output, EPSG:4326)
        with the :data:`pipeline.flag.FLAG_COLUMNS`.
    sites
        The run's sites (summary rows and page list in this order).
    tiles
        ``{site_id: path of data/tiles/<site>.zarr}``. Needed for every site that has flags (chips);
        for the others it gives the latest clear date.
    out_dir
        Output folder (created; ``chips/`` and ``stac/`` are replaced).
    settings
        Run settings (time range for the summary periods and STAC, params hash).
    period
        Summary period: ``"half-year"`` or ``"year"``.
    web_dir
        Folder with ``node_modules/maplibre-gl`` (default: the repository's ``web/``).
    title
        Map page title.
    max_zoom
        Highest PMTiles zoom.
    with_imagery
        Write each site's before/after imagery tiles (``imagery/``) for the map page
        (:mod:`pipeline.publish.imagery`).

    Returns
    -------
    dict
        Keys ``flags_geojson``, ``flags_fgb``, ``flags_parquet``, ``summary_geojson``, ``summary_fgb``,
        ``summary_parquet``, ``pmtiles``, ``map``, ``chips`` (the folder), ``stac`` (catalog.json) and, with
        imagery, ``imagery`` (the folder).

    Raises
    ------
    InputFileError
        When a site with flags has no tiles cube, or MapLibre is not installed (``npm ci --prefix web``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ranked = rank_flags(flags)
    site_ids = {s.site_id for s in sites}
    flag_sites = set(ranked["site_id"].astype(str)) if len(ranked) else set()
    unknown = sorted(flag_sites - site_ids)
    if unknown:
        raise InputFileError(
            f"flags belong to site(s) {', '.join(unknown)} that are not in the sites passed to publish; "
            "list them in `sites` (params.yaml) or drop their flag layers"
        )
    with_flags = sorted(flag_sites)
    lacking = [s for s in with_flags if s not in tiles or not Path(tiles[s]).exists()]
    if lacking:
        raise InputFileError(
            f"tiles cube(s) for {', '.join(lacking)} not found; chips need data/tiles/<site>.zarr "
            "(run the tile stage first)"
        )

    # chips + latest clear dates, one site cube at a time
    chips_dir = out_dir / CHIPS_DIR
    if chips_dir.exists():
        shutil.rmtree(chips_dir)
    chips_dir.mkdir(parents=True)
    imagery_dir = out_dir / IMAGERY_DIR
    if imagery_dir.exists():
        shutil.rmtree(imagery_dir)
    if with_imagery:
        imagery_dir.mkdir()
    chips: dict[str, Path] = {}
    imagery: list[SiteImagery] = []
    latest: dict[str, dt.date | None] = {}
    for site in sites:
        path = tiles.get(site.site_id)
        if path is None or not Path(path).exists():
            latest[site.site_id] = None
            continue
        cube = read_cube(path)
        latest[site.site_id] = latest_clear_date(cube)
        own = ranked[ranked["site_id"] == site.site_id] if len(ranked) else ranked
        if len(own):
            chips.update(render_chips(own, cube, chips_dir))
        if with_imagery:
            shown = write_site_imagery(site.site_id, cube, own, out_dir)
            if shown is not None:
                imagery.append(shown)

    written: dict[str, Path] = {}
    flag_files = write_layer(ranked, out_dir, FLAGS_NAME)
    written.update({f"flags_{k}": v for k, v in flag_files.items()})
    summary = site_summary(
        ranked, sites, start=settings.fetch.start, end=settings.fetch.end, latest_clear=latest, period=period
    )
    summary_files = write_layer(summary, out_dir, SUMMARY_NAME)
    written.update({f"summary_{k}": v for k, v in summary_files.items()})
    written["pmtiles"] = write_pmtiles(
        {"flags": ranked, "sites": summary}, out_dir / PMTILES_NAME, max_zoom=max_zoom
    )
    written["map"] = write_map_page(
        out_dir,
        _read_fc(flag_files["geojson"]),
        _read_fc(summary_files["geojson"]),
        title=title,
        web_dir=web_dir,
        params_hash=params_hash(settings),
        period=f"{settings.fetch.start.isoformat()} – {settings.fetch.end.isoformat()}",
        imagery=imagery,
    )
    written["chips"] = chips_dir
    if with_imagery:
        written["imagery"] = imagery_dir
    written["stac"] = write_stac(
        out_dir,
        flags=ranked,
        sites=sites,
        settings=settings,
        layers={"flags": flag_files, "site-summary": summary_files},
        pmtiles=written["pmtiles"],
        map_page=written["map"],
        chips=chips,
        tiles=dict(tiles),
    )
    return written


def _read_fc(path: Path) -> dict:
    """The FeatureCollection dict of a GeoJSON file as written (what every other format holds too)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
