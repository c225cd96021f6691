"""Stage ``publish``: the per-site flag layers → the published map layers of the run.

``python -m pipeline.stages.publish FLAGS_DIR TILES_DIR OUT_DIR [--params params.yaml]``

Reads ``sites`` from the parameters, ``FLAGS_DIR/<site>.geojson`` and (for the before/after chips)
``TILES_DIR/<site>.zarr`` for each of them. Writes into ``OUT_DIR`` everything
:func:`pipeline.publish.bundle.publish_all` lists (``flags.geojson`` ranked by confidence, FlatGeobuf and
GeoParquet copies, the site summary, PMTiles, chips, the offline ``index.html`` map page, a STAC catalog) and
``OUT_DIR/sites/<site>.geojson`` (RFC 7946 GeoJSON, WGS84 lon/lat; ``area_m2`` was measured on each site's
UTM grid).
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.config import Settings, load_settings
from pipeline.errors import ConfigError, InputFileError
from pipeline.publish.bundle import publish_all
from pipeline.publish.geojson import merge_layers, read_geojson, write_geojson
from pipeline.sites import load_sites
from pipeline.stages import Progress, site_path, stage_main, stage_parser

__all__ = ["MERGED_NAME", "SITES_DIR", "PublishResult", "site_file", "run", "main"]

#: File names inside ``OUT_DIR``.
MERGED_NAME = "flags.geojson"
SITES_DIR = "sites"


def site_file(folder: str | Path, site_id: str) -> Path:
    """``<folder>/<site_id>.geojson``: one site's GeoJSON layer in a stage's folder."""
    return site_path(folder, site_id, ".geojson")


@dataclass(frozen=True)
class PublishResult:
    """What :func:`run` wrote: the merged layer, flags per site and total flagged area (m²) per site."""

    merged: Path
    n_flags: dict[str, int] = field(default_factory=dict)
    area_m2: dict[str, float] = field(default_factory=dict)


def run(
    flags_dir: str | Path,
    tiles_dir: str | Path,
    out_dir: str | Path,
    settings: Settings,
    progress: Progress = None,
) -> PublishResult:
    """Publish the flag layers of ``settings.sites`` from ``flags_dir`` (chips from ``tiles_dir``) into ``out_dir``."""
    if not settings.sites:
        raise ConfigError("sites: no sites listed in the parameters; add site ids to `sites` in params.yaml")
    paths = [site_file(flags_dir, s) for s in settings.sites]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise InputFileError(
            f"flag layer(s) {', '.join(missing)} not found; run `dvc repro` or `compoundwatch flag` first"
        )
    out_dir = Path(out_dir)
    sites_out = out_dir / SITES_DIR
    if sites_out.exists():  # drop layers of sites no longer listed
        shutil.rmtree(sites_out)
    n_flags: dict[str, int] = {}
    area: dict[str, float] = {}
    for site_id, path in zip(settings.sites, paths):
        layer = read_geojson(path)
        write_geojson(layer, site_file(sites_out, site_id))
        n_flags[site_id] = len(layer)
        area[site_id] = float(layer["area_m2"].sum()) if len(layer) and "area_m2" in layer else 0.0
        if progress is not None:
            progress(site_id)
    sites = [s for s in load_sites(settings.sites_file) if s.site_id in settings.sites]
    tiles = {s: site_path(tiles_dir, s, ".zarr") for s in settings.sites}
    written = publish_all(merge_layers(paths), sites, tiles, out_dir, settings)
    return PublishResult(written["flags_geojson"], n_flags, area)


def main(argv: Sequence[str] | None = None) -> int:
    parser = stage_parser("publish", "Merge per-site flag layers into one ranked GeoJSON layer (+ per site).")
    parser.add_argument("flags_dir", type=Path, help="folder with the <site>.geojson flag layers")
    parser.add_argument("tiles_dir", type=Path, help="folder with the <site>.zarr tiled cubes (for chips)")
    parser.add_argument("out_dir", type=Path, help="folder for the published layers, map page and chips")

    def _go(a: argparse.Namespace) -> None:
        r = run(a.flags_dir, a.tiles_dir, a.out_dir, load_settings(a.params))
        print(f"publish: {sum(r.n_flags.values())} flag(s) from {len(r.n_flags)} site(s) -> {r.merged}")

    return stage_main(_go, parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())
