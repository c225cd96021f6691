"""Wide-area screening: an AOI tile by tile (resumable, optionally on a dask cluster) → one ranked layer.

:func:`scan` cuts the AOI into the fixed UTM tiles of :mod:`pipeline.scan.tiling` (per zone for AOIs spanning
several zones), runs the site pipeline on every tile (fetch → preprocess → ``detect_series`` →
``vectorise``), clips each tile's flags to its core and keeps them in one small GeoParquet file per tile
under ``resume_dir``. A run interrupted at any tile (Ctrl-C, a crash, a lost worker) resumes where it
stopped: tiles with a result file are not computed again. When every tile is done, the pieces are merged
across tile and zone seams (:mod:`pipeline.scan.seams`) into one ranked WGS84 candidate layer (the same
idea for one pair of scenes on disk: :mod:`pipeline.scan.pair_files`).

The synthetic source renders every tile as its own landscape (keyed by the tile id), so on synthetic data a
compound never continues across a seam; real sources return one continuous scene and the seam merge
joins what tiles split.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
from shapely.geometry.base import BaseGeometry

from pipeline._files import atomic_path, write_text_atomic
from pipeline.config import Settings, params_hash
from pipeline.errors import InputFileError, InvalidAOIError
from pipeline.scan.cluster import dask_client, dask_settings
from pipeline.scan.seams import clip_to_core, merge_flags
from pipeline.scan.tiling import TileSpec, tiles_for_aoi
from pipeline.sites import check_polygon, check_site_id

__all__ = [
    "ScanEvent",
    "ScanProgress",
    "DEFAULT_RESUME_DIR",
    "load_aoi",
    "process_tile",
    "scan",
]

#: Where per-tile results are kept between runs (one sub-folder per AOI + parameters + tiling).
DEFAULT_RESUME_DIR = Path("data/scan")


@dataclass(frozen=True)
class ScanEvent:
    """A progress report. ``kind``: ``"site"`` (a site starts; ``total`` = its tiles), ``"tile"`` (a tile is
    done: ``done`` of ``total`` for this site, ``resumed`` when its result came from an earlier run) or
    ``"merge"`` (all tiles done, merging). ``n_flags``: flag pieces of the tile."""

    kind: str
    site_id: str
    done: int
    total: int
    tile: TileSpec | None = None
    n_flags: int = 0
    resumed: bool = False


#: Progress callback; raising from it stops the scan (finished tiles are kept for the next run).
ScanProgress = Callable[[ScanEvent], None] | None


# ------------------------------------------------------------------------------------------------ AOI
def load_aoi(aoi: str | Path | BaseGeometry | gpd.GeoDataFrame) -> list[tuple[str, BaseGeometry]]:
    """``[(site_id, WGS84 geometry), …]`` from a GeoJSON path, a GeoDataFrame or one shapely geometry.

    Each feature is one site, named by its ``site_id`` (or ``name``) property, else ``aoi`` / ``aoi-N``.
    """
    if isinstance(aoi, BaseGeometry):
        return [("aoi", aoi)]
    if isinstance(aoi, (str, Path)):
        path = Path(aoi)
        if not path.is_file():
            raise InputFileError(f"AOI file {path} not found; give a GeoJSON FeatureCollection in WGS84")
        try:
            gdf = gpd.read_file(path)
        except Exception as err:  # pyogrio raises several types for unreadable files
            raise InvalidAOIError(f"{path} is not a readable vector file ({err}); give a GeoJSON") from err
    else:
        gdf = aoi
    if gdf.empty:
        raise InvalidAOIError("the AOI has no features; draw at least one Polygon")
    gdf = gdf.to_crs(4326) if gdf.crs is not None else gdf.set_crs(4326)
    out: list[tuple[str, BaseGeometry]] = []
    seen: set[str] = set()
    for i, (_, row) in enumerate(gdf.iterrows()):
        sid = _feature_id(row, gdf.columns, i, len(gdf))
        check_site_id(sid, f"AOI feature {i + 1}")
        where = f"AOI feature {i + 1} ({sid})"
        if sid in seen:
            raise InvalidAOIError(f"AOI site id {sid!r} is used twice; give each feature its own site_id")
        seen.add(sid)
        if not isinstance(row.geometry, BaseGeometry):  # a null geometry (None, or NaN from pandas)
            raise InvalidAOIError(f"{where} has no geometry; give it a Polygon or remove it")
        out.append((sid, check_polygon(row.geometry, where)))
    return out


def _feature_id(row: Any, columns: Any, i: int, n: int) -> str:
    """The feature's ``site_id`` as given; else its ``name`` made into an id; else ``aoi`` / ``aoi-N``."""
    if "site_id" in columns and isinstance(row.get("site_id"), str) and row["site_id"].strip():
        return str(row["site_id"]).strip().lower().replace(" ", "-")
    if "name" in columns and isinstance(row.get("name"), str):
        slug = re.sub(r"[^a-z0-9-]+", "-", row["name"].strip().lower()).strip("-")[:63]
        if slug:
            return slug
    return "aoi" if n == 1 else f"aoi-{i + 1}"


# ----------------------------------------------------------------------------------------------- tiles
def process_tile(
    tile: TileSpec, settings: Settings, site_id: str, scenario: str = "arid", fetcher: Any = None
) -> gpd.GeoDataFrame:
    """Fetch, preprocess, detect and flag one tile; the flags clipped to its core (tile UTM CRS).

    Picklable inputs only, so it runs on dask.distributed workers as well as locally.
    """
    from pipeline.detect import detect_series
    from pipeline.fetch import FetchRequest, make_fetcher
    from pipeline.flag import vectorise
    from pipeline.preprocess import preprocess_cube

    fetcher = fetcher or make_fetcher(settings)
    req = FetchRequest(
        site_id=f"{site_id}-{tile.tile_id}",
        grid=tile.grid,
        start=settings.fetch.start,
        end=settings.fetch.end,
        bands=tuple(settings.fetch.bands),
        scenario=scenario,
    )
    cube = fetcher.fetch(req)
    scenes = preprocess_cube(cube, settings.preprocess)
    det = detect_series(scenes["reflectance"], scenes["clear"], settings.detect)
    if det.rio.crs is None:
        det = det.rio.write_crs(tile.epsg)
    flags = vectorise(det, site_id=site_id, settings=settings, tile=True)
    return clip_to_core(flags, tile)


def _run_key(sites: Sequence[tuple[str, BaseGeometry]], settings: Settings, extra: dict[str, Any]) -> str:
    h = hashlib.sha1()
    h.update(params_hash(settings).encode())
    for sid, geom in sites:
        h.update(sid.encode())
        h.update(geom.normalize().wkb)
    h.update(json.dumps(extra, sort_keys=True).encode())
    return h.hexdigest()[:12]


def _write_atomic(gdf: gpd.GeoDataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        gdf.to_parquet(tmp)


def _read_piece(path: Path) -> gpd.GeoDataFrame:
    return gpd.read_parquet(path)


def scan(
    aoi: str | Path | BaseGeometry | gpd.GeoDataFrame,
    settings: Settings,
    *,
    scheduler: str | None = None,
    progress: ScanProgress = None,
    resume_dir: str | Path = DEFAULT_RESUME_DIR,
    tile_px: int = 512,
    overlap_px: int = 16,
    scenario: str = "arid",
    fetcher: Any = None,
    processes: bool = True,
) -> gpd.GeoDataFrame:
    """Screen an AOI tile by tile and return the ranked candidate layer.

    Parameters
    ----------
    aoi
        WGS84 AOI: GeoJSON path, GeoDataFrame (one site per feature) or a shapely geometry.
    settings
        Run settings (fetch dates/bands/resolution, preprocess, detect, flag; ``settings.dask`` when present).
    scheduler
        Address of a running dask.distributed scheduler to run the tiles on (overrides ``dask.scheduler``).
        Without one, and without ``dask.n_workers``, tiles run one after another in this process.
    progress
        Called with a :class:`ScanEvent` per site start, per finished tile and before the merge.
    resume_dir
        Folder for the per-tile results (``<resume_dir>/<run key>/tiles/<tile_id>.parquet``); the run key
        hashes the AOI, the parameters and the tiling, so changed inputs never reuse stale tiles.
    tile_px, overlap_px
        Tile core edge and overlap in pixels of ``settings.fetch.resolution_m``.
    scenario
        Synthetic landscape of every tile (synthetic source only).
    fetcher
        A :class:`~pipeline.fetch.Fetcher` to use instead of ``make_fetcher(settings)`` (must be picklable
        to run on a cluster).
    processes
        Whether a LocalCluster started for ``dask.n_workers`` uses processes (True) or threads.

    Returns
    -------
    geopandas.GeoDataFrame
        EPSG:4326, columns :data:`pipeline.scan.seams.SCAN_COLUMNS` (the flag columns, ``n_tiles``, ``zones``,
        ``rank``), sorted by confidence (descending): the ranking.
    """
    sites = load_aoi(aoi)
    res = settings.fetch.resolution_m
    extra = {"tile_px": tile_px, "overlap_px": overlap_px, "scenario": scenario, "res": res,
             "fetcher": type(fetcher).__name__ if fetcher is not None else settings.fetch.source.value}
    run_dir = Path(resume_dir) / _run_key(sites, settings, extra)
    tiles_dir = run_dir / "tiles"
    tiles_dir.mkdir(parents=True, exist_ok=True)
    manifest = run_dir / "manifest.json"
    if not manifest.exists():
        write_text_atomic(manifest, json.dumps({"sites": [s for s, _ in sites], "params_hash": params_hash(settings),
                                        **extra}, indent=2) + "\n")
    plan = [(sid, tiles_for_aoi(geom, tile_px, overlap_px, res)) for sid, geom in sites]
    cfg = dask_settings(settings, scheduler)

    def result_path(sid: str, tile: TileSpec) -> Path:
        return tiles_dir / f"{sid}__{tile.tile_id}.parquet"

    with dask_client(cfg, processes=processes) as client:
        for sid, tiles in plan:
            if progress is not None:
                progress(ScanEvent("site", sid, 0, len(tiles)))
            done = 0
            todo = []
            for tile in tiles:
                if result_path(sid, tile).exists():
                    done += 1
                    if progress is not None:
                        progress(ScanEvent("tile", sid, done, len(tiles), tile, -1, resumed=True))
                else:
                    todo.append(tile)
            for tile, gdf in _run_tiles(client, todo, settings, sid, scenario, fetcher):
                _write_atomic(gdf, result_path(sid, tile))
                done += 1
                if progress is not None:
                    progress(ScanEvent("tile", sid, done, len(tiles), tile, len(gdf)))
    layers = []
    for sid, tiles in plan:
        if progress is not None:
            progress(ScanEvent("merge", sid, len(tiles), len(tiles)))
        pieces = [_read_piece(result_path(sid, t)) for t in sorted(tiles, key=lambda t: t.tile_id)]
        layers.append(merge_flags(pieces, site_id=sid, settings=settings))
    return _rank(layers)


def _run_tiles(
    client: Any, tiles: list[TileSpec], settings: Settings, site_id: str, scenario: str, fetcher: Any
) -> Iterator[tuple[TileSpec, gpd.GeoDataFrame]]:
    """Yield ``(tile, pieces)`` as tiles finish: in order locally, as completed on a cluster."""
    if not tiles:
        return
    if client is None:
        for tile in tiles:
            yield tile, process_tile(tile, settings, site_id, scenario, fetcher)
        return
    from distributed import as_completed

    futures = {
        client.submit(process_tile, t, settings, site_id, scenario, fetcher, pure=False,
                      key=f"scan-tile-{site_id}-{t.tile_id}-{os.getpid()}-{id(tiles)}"): t
        for t in tiles
    }
    try:
        for fut in as_completed(list(futures)):
            yield futures[fut], fut.result()
    finally:
        client.cancel([f for f in futures if not f.done()])


def _rank(layers: list[gpd.GeoDataFrame]) -> gpd.GeoDataFrame:
    layers = [g for g in layers if len(g)] or layers[:1]
    gdf = pd.concat(layers, ignore_index=True) if len(layers) > 1 else layers[0].copy()
    gdf = gpd.GeoDataFrame(gdf, geometry="geometry", crs=4326)
    gdf = gdf.sort_values(["confidence", "flag_id"], ascending=[False, True], kind="mergesort")
    gdf = gdf.reset_index(drop=True)
    gdf["rank"] = np.arange(1, len(gdf) + 1)
    return gdf
