"""``compoundwatch fetch|tile|detect|flag|publish|evaluate``: one pipeline stage at a time, without DVC.

Each command calls the ``run()`` of the matching :mod:`pipeline.stages` module with the paths of
``dvc.yaml`` (so the files are the ones ``dvc repro`` writes; DVC will simply see them as changed outputs).
Heavy libraries are imported inside the commands so ``--help`` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli._common import Layout, ParamsOpt, SitesArg, console, pick_sites, settings_for, site_progress
from pipeline.cli._project import project_lock
from pipeline.config import DEFAULT_PARAMS, Source

__all__ = ["register"]


def _exclusive() -> AbstractContextManager[None]:
    """The project's run lock when this is a DVC project (so a stage command never races a running
    ``compoundwatch run`` over the same files), else nothing to hold."""
    project = Path(".")
    return project_lock(project) if (project / ".dvc").is_dir() else nullcontext()


def _per_site(label: str, sites: Sequence[str], step: Callable[[str], str]) -> None:
    """Run ``step(site)`` for every site under a progress bar, then print each step's one-line summary."""
    lines: list[str] = []
    with _exclusive(), site_progress(label, len(sites)) as bar:
        for site_id in sites:
            bar.working(site_id)
            lines.append(step(site_id))
            bar(site_id)
    for line in lines:
        console.print(line)


def fetch(
    sites: SitesArg = None,
    params: ParamsOpt = DEFAULT_PARAMS,
    source: Annotated[
        Source | None,
        typer.Option(help="Override fetch.source for this run: synthetic, sentinelhub, stac or local."),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Only show what would be fetched: scenes, requests, processing units."),
    ] = False,
) -> None:
    """Fetch the scene cube and ground truth of each site.

    **Reads** sites_file and the fetch section of the parameters (source, start/end dates, bands,
    resolution_m in metres), the synthetic section (seed, revisit_days) and, for real imagery, the
    sentinelhub / stac / local section. Sentinel Hub and CDSE credentials come from SH_CLIENT_ID and
    SH_CLIENT_SECRET (or a sentinelhub config profile), never from params.yaml.

    **Writes** data/raw/SITE.zarr (Sentinel-2 L2A digital numbers, uint16, plus the SCL layer, on the site's
    UTM grid) and data/truth/SITE.geojson (truth polygons, WGS84; empty for control sites and real sources).
    Before downloading from Sentinel Hub it prints the number of requests and the estimated processing
    units; --dry-run prints only that.
    """
    from pipeline.fetch import make_fetcher, request_for
    from pipeline.sites import get_site
    from pipeline.stages import fetch as stage

    settings = settings_for(params)
    if source is not None:
        settings = settings.model_copy(update={"fetch": settings.fetch.model_copy(update={"source": source})})
    layout = Layout.load()
    chosen = pick_sites(settings, sites)
    fetcher = make_fetcher(settings)
    plan = getattr(fetcher, "plan", None)
    if plan is not None or dry_run:
        for site_id in chosen:
            request = request_for(get_site(settings.sites_file, site_id), settings)
            text = plan(request).summary() if plan is not None else (
                f"{settings.fetch.source.value}: no remote requests; "
                f"{request.grid.shape[0]}×{request.grid.shape[1]} px grid, EPSG:{request.grid.epsg}"
            )
            console.print(f"{site_id}: {text}")
    if dry_run:
        return

    def step(site_id: str) -> str:
        r = stage.run(site_id, layout.raw_cube(site_id), layout.truth_file(site_id), settings)
        return (f"{site_id}: {r.n_dates} dates, {r.shape[0]}×{r.shape[1]} px, {r.n_truth} truth polygon(s) "
                f"→ {layout.raw_cube(site_id)}")

    _per_site("fetch", chosen, step)


def tile(sites: SitesArg = None, params: ParamsOpt = DEFAULT_PARAMS) -> None:
    """Harmonise and mask each site's scene cube into tiles.

    **Reads** data/raw/SITE.zarr, the preprocess section (invalid_scl, harmonise) and tile.tile_size_px.

    **Writes** data/tiles/SITE.zarr: reflectance (float32, unitless 0-1, baseline-04.00 offset removed when
    preprocess.harmonise) and clear (bool: SCL class not in preprocess.invalid_scl and all bands present),
    chunked in square tiles of tile_size_px pixels.
    """
    from pipeline.stages import tile as stage

    settings = settings_for(params)
    layout = Layout.load()

    def step(site_id: str) -> str:
        r = stage.run(layout.raw_cube(site_id), layout.tile_cube(site_id), settings)
        return (f"{site_id}: {r.n_dates} dates, {r.n_tiles} tile(s), {r.clear_fraction:.0%} clear "
                f"→ {layout.tile_cube(site_id)}")

    _per_site("tile", pick_sites(settings, sites), step)


def detect(sites: SitesArg = None, params: ParamsOpt = DEFAULT_PARAMS) -> None:
    """Detect persistent change in each site's tiled cube.

    **Reads** data/tiles/SITE.zarr and the detect section (threshold / min_score in robust z units,
    persistence 0-1, reference_months, min_post_obs, max_ndvi_gain).

    **Writes** data/detect/SITE.zarr: per pixel change (bool), score (robust z), confidence (0-1),
    break_index / after_index (dates around the change) and clear_fraction (0-1).
    """
    from pipeline.stages import detect as stage

    settings = settings_for(params)
    layout = Layout.load()

    def step(site_id: str) -> str:
        r = stage.run(layout.tile_cube(site_id), layout.detect_cube(site_id), settings)
        return (f"{site_id}: {r.changed_px} changed px ({r.changed_m2:,.0f} m²), threshold {r.threshold:.2f} "
                f"→ {layout.detect_cube(site_id)}")

    _per_site("detect", pick_sites(settings, sites), step)


def flag(sites: SitesArg = None, params: ParamsOpt = DEFAULT_PARAMS) -> None:
    """Vectorise each site's detection into ranked flag polygons.

    **Reads** data/detect/SITE.zarr and the flag section (min_area_m2 in m², simplify_m in m).

    **Writes** data/flags/SITE.geojson: one polygon per change blob (WGS84), with area_m2 (measured on the
    UTM grid), appeared_after / appeared_before dates, confidence (0-1) and the scene ids around the change.
    """
    from pipeline.stages import flag as stage

    settings = settings_for(params)
    layout = Layout.load()

    def step(site_id: str) -> str:
        r = stage.run(site_id, layout.detect_cube(site_id), layout.flags_file(site_id), settings)
        return f"{site_id}: {r.n_flags} flag(s), {r.area_m2:,.0f} m² → {layout.flags_file(site_id)}"

    _per_site("flag", pick_sites(settings, sites), step)


def publish(params: ParamsOpt = DEFAULT_PARAMS) -> None:
    """Merge the flags of every site listed in sites (params.yaml) into one ranked layer.

    **Reads** data/flags/SITE.geojson for each site in sites.

    **Writes** data/out/: flags.geojson (all sites, sorted by confidence: the ranking) with .fgb and
    .parquet copies, site_summary.*, compoundwatch.pmtiles, chips/FLAG.png, the offline map page index.html,
    stac/catalog.json, and sites/SITE.geojson (RFC 7946 GeoJSON, WGS84 lon/lat; area_m2 in m²).
    """
    from pipeline.stages import publish as stage

    settings = settings_for(params)
    layout = Layout.load()
    with _exclusive(), site_progress("publish", len(settings.sites)) as bar:
        r = stage.run(layout.flags, layout.tiles, layout.out, settings, progress=bar)
    total = sum(r.n_flags.values())
    area = sum(r.area_m2.values())
    console.print(f"{total} flag(s), {area:,.0f} m² from {len(r.n_flags)} site(s) → {r.merged}")


def evaluate(params: ParamsOpt = DEFAULT_PARAMS) -> None:
    """Score flags and detections of every site listed in sites (params.yaml) against the truth.

    **Reads** data/flags, data/truth and data/detect, sites_file (control sites) and the evaluate section
    (iou_threshold 0-1, min_truth_area_m2 in m²).

    **Writes** metrics.json (object recall / precision, pixel F1, flags on control sites, per-site numbers)
    and data/eval/pr_curve.csv (columns threshold, precision, recall for confidence thresholds 0.00-0.95).
    """
    from pipeline.stages import evaluate as stage

    settings = settings_for(params)
    layout = Layout.load()
    with _exclusive(), site_progress("evaluate", len(settings.sites)) as bar:
        m = stage.run(layout.flags, layout.truth, layout.detect, layout.metrics, layout.pr_curve, settings,
                      progress=bar)
    console.print(
        f"object recall {m['object_recall']:.2f}, precision {m['object_precision']:.2f}, "
        f"pixel F1 {m['pixel_f1']:.2f}, {m['control_site_flags']} flag(s) on control sites → {layout.metrics}"
    )


def register(app: typer.Typer) -> None:
    """Add the stage commands to ``app``; ``evaluate`` is a group (:mod:`pipeline.cli.evaluate`)."""
    for func in (fetch, tile, detect, flag, publish):
        app.command(func.__name__, rich_help_panel="Single stages")(func)
