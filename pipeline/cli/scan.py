"""``compoundwatch scan AOI.geojson``: screen a whole area tile by tile into one ranked candidate layer.

Registered by :mod:`pipeline.cli` through :func:`register`. Heavy libraries are imported inside the
command so ``--help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli._common import ParamsOpt, console, progress_bars, settings_for
from pipeline.config import DEFAULT_PARAMS

__all__ = ["scan", "register"]


def scan(
    aoi: Annotated[Path, typer.Argument(
        metavar="AOI.geojson", show_default=False,
        help="Area to screen: GeoJSON (WGS84) Polygon(s); each feature is one site (named by site_id/name).")],
    out: Annotated[Path, typer.Option(
        "--out", "-o", metavar="GEOJSON",
        help="Ranked candidate layer to write (RFC 7946 GeoJSON, WGS84).")] = Path("data/out/scan.geojson"),
    scheduler: Annotated[str | None, typer.Option(
        "--scheduler", metavar="ADDRESS",
        help="Run the tiles on a running dask.distributed cluster, e.g. tcp://10.0.0.5:8786 "
        "(default: dask.scheduler in the params, else this machine).")] = None,
    params: ParamsOpt = DEFAULT_PARAMS,
    tile_px: Annotated[int, typer.Option(help="Tile core edge in pixels (fixed UTM grid per zone).")] = 512,
    overlap_px: Annotated[int, typer.Option(help="Pixels each tile reads beyond its core.")] = 16,
    resume_dir: Annotated[Path, typer.Option(
        help="Per-tile results, so an interrupted scan resumes where it stopped.")] = Path("data/scan"),
    scenario: Annotated[str, typer.Option(
        help="Synthetic landscape of every tile (fetch.source synthetic only).")] = "arid",
) -> None:
    """Screen a whole area tile by tile and write one ranked layer of candidate flags.

    **Reads** AOI.geojson and the parameters: fetch (source, dates, bands, resolution_m), preprocess,
    detect, flag (min_area_m2 applies to the merged flags) and dask (scheduler, n_workers).

    **Writes** --out (flags merged across tile and UTM-zone seams: one polygon per compound with its
    area in m² and the evidence of its most confident part; ranked by confidence) and one small result
    file per tile under --resume-dir. Run the same command again after an interruption to resume.
    """
    from rich.progress import TaskID

    from pipeline.publish.geojson import write_geojson
    from pipeline.scan.aoi import ScanEvent, load_aoi
    from pipeline.scan.aoi import scan as run_scan

    settings = settings_for(params)
    n_sites = len(load_aoi(aoi))
    with progress_bars("info") as bars:
        sites_task = None
        tile_tasks: dict[str, TaskID] = {}

        def report(e: ScanEvent) -> None:
            nonlocal sites_task
            if e.kind == "site":
                if sites_task is None:
                    sites_task = bars.add_task("sites", total=n_sites, info="")
                bars.update(sites_task, info=e.site_id)
                tile_tasks[e.site_id] = bars.add_task(f"tiles {e.site_id}", total=e.total, info="")
            elif e.kind == "tile":
                info = "resumed" if e.resumed else f"{e.tile.tile_id if e.tile else ''}: {e.n_flags} piece(s)"
                bars.update(tile_tasks[e.site_id], completed=e.done, info=info)
            elif e.kind == "merge":
                bars.update(tile_tasks[e.site_id], info="merging seams")
                if sites_task is not None:
                    bars.advance(sites_task)

        flags = run_scan(aoi, settings, scheduler=scheduler, progress=report, resume_dir=resume_dir,
                         tile_px=tile_px, overlap_px=overlap_px, scenario=scenario)
    write_geojson(flags, out)
    area = float(flags["area_m2"].sum()) if len(flags) else 0.0
    console.print(f"{len(flags)} candidate(s), {area:,.0f} m² → {out}")


def register(app: typer.Typer) -> None:
    """Add ``scan`` to ``app``."""
    app.command("scan", rich_help_panel="Wide area")(scan)
