"""``compoundwatch scan AOI.geojson``: screen a whole area tile by tile into one ranked candidate layer.

Registered by :mod:`pipeline.cli` through :func:`register`. Heavy libraries are imported inside the
command so ``--help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.cli._common import ParamsOpt, check_out_path, console, err_console, progress_bars, settings_for
from pipeline.config import DEFAULT_PARAMS, Settings
from pipeline.errors import ConfigError

__all__ = ["scan", "register"]

DEFAULT_OUT = Path("data/out/scan.geojson")


def scan(
    aoi: Annotated[Path, typer.Argument(
        metavar="AOI.geojson", show_default=False,
        help="Area to screen: GeoJSON (WGS84) Polygon(s); each feature is one site (named by site_id/name).")],
    out: Annotated[Path, typer.Option(
        "--out", "-o", metavar="GEOJSON",
        help="Ranked candidate layer to write (RFC 7946 GeoJSON, WGS84).")] = DEFAULT_OUT,
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
    yes: Annotated[bool, typer.Option(
        "--yes", "-y", help="Start even when the estimate is over an hour of compute (without it such a "
        "scan stops after printing the estimate).")] = False,
) -> None:
    """Screen a whole area tile by tile and write one ranked layer of candidate flags.

    **Reads** AOI.geojson and the parameters: fetch (source, dates, bands, resolution_m), preprocess,
    detect, flag (min_area_m2 applies to the merged flags) and dask (scheduler, n_workers).

    **Writes** --out (flags merged across tile and UTM-zone seams: one polygon per compound with its
    area in m² and the evidence of its most confident part; ranked by confidence) and one small result
    file per tile under --resume-dir. Run the same command again after an interruption to resume.

    Before any work it prints its estimate (area, UTM zones, tiles, dates, scenes, Sentinel Hub processing
    units, hours); a scan estimated at more than an hour needs --yes. When stdout is not a terminal (cron,
    CI, a log file) progress comes as one plain line per tile.
    """
    from rich.progress import TaskID

    from pipeline.scan.aoi import ScanEvent, load_aoi
    from pipeline.scan.aoi import scan as run_scan
    from pipeline.scan.estimate import estimate_scan

    settings = settings_for(params)
    if out != DEFAULT_OUT:
        check_out_path(out, "--out", [("AOI", aoi)])
    elif out.is_dir():
        check_out_path(out, "--out")
    if tile_px < 1 or overlap_px < 0:
        raise ConfigError(f"--tile-px ({tile_px}) must be >= 1 and --overlap-px ({overlap_px}) >= 0")
    sites = load_aoi(aoi)
    n_sites = len(sites)
    est = estimate_scan(sites, settings, tile_px, overlap_px)
    if est.needs_confirmation and not yes:
        raise ConfigError(f"{aoi}: {est.summary()}; rerun with --yes to start anyway, or draw a smaller AOI")
    err_console.print(f"scan: {est.summary()}", markup=False, highlight=False)
    if not console.is_terminal:
        _scan_logged(aoi, out, settings, scheduler, resume_dir, tile_px, overlap_px, scenario)
        return
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
    _write(flags, out)


def _write(flags: Any, out: Path) -> None:
    from pipeline.publish.geojson import write_geojson

    write_geojson(flags, out)
    area = float(flags["area_m2"].sum()) if len(flags) else 0.0
    console.print(f"{len(flags)} candidate(s), {area:,.0f} m² → {out}", soft_wrap=True)


def _scan_logged(aoi: Path, out: Path, settings: Settings, scheduler: str | None, resume_dir: Path, tile_px: int,
                 overlap_px: int, scenario: str) -> None:
    """The scan with one plain, timestamped line per event (no terminal: cron, CI, a log file)."""
    import time

    from pipeline.scan.aoi import ScanEvent
    from pipeline.scan.aoi import scan as run_scan

    started = time.monotonic()

    def line(text: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        console.print(f"{stamp} scan [{time.monotonic() - started:7.1f} s] {text}", markup=False,
                      highlight=False, soft_wrap=True)

    def report(e: ScanEvent) -> None:
        if e.kind == "site":
            line(f"site {e.site_id}: {e.total} tile(s)")
        elif e.kind == "tile":
            what = "resumed" if e.resumed else f"{e.n_flags} piece(s)"
            line(f"site {e.site_id}: tile {e.done}/{e.total} {e.tile.tile_id if e.tile else ''} {what}")
        elif e.kind == "merge":
            line(f"site {e.site_id}: merging flags across tile seams")

    flags = run_scan(aoi, settings, scheduler=scheduler, progress=report, resume_dir=resume_dir,
                     tile_px=tile_px, overlap_px=overlap_px, scenario=scenario)
    _write(flags, out)


def register(app: typer.Typer) -> None:
    """Add ``scan`` to ``app``."""
    app.command("scan", rich_help_panel="Wide area")(scan)
