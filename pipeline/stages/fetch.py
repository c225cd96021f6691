"""Stage ``fetch``: one site's scene cube and its ground truth.

``python -m pipeline.stages.fetch SITE RAW_OUT TRUTH_OUT [--params params.yaml]``

Reads ``sites_file``, ``fetch`` and ``synthetic`` from the parameters. Writes the scene cube (see
:mod:`pipeline.fetch`: uint16 L2A digital numbers, SCL, UTM grid of ``fetch.resolution_m`` metres) to
``RAW_OUT`` (zarr) and the truth polygons (WGS84 GeoJSON; an empty FeatureCollection for control sites and
for real sources, which have no truth) to ``TRUTH_OUT``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import Settings, load_settings
from pipeline.fetch import make_fetcher, request_for, truth_for
from pipeline.io import write_cube
from pipeline.publish.geojson import write_geojson
from pipeline.sites import get_site
from pipeline.stages import stage_main, stage_parser

__all__ = ["FetchResult", "run", "main"]


@dataclass(frozen=True)
class FetchResult:
    """What :func:`run` wrote: dates in the cube, grid shape (rows, cols) and truth polygon count."""

    site_id: str
    n_dates: int
    shape: tuple[int, int]
    n_truth: int


def run(site_id: str, raw_out: str | Path, truth_out: str | Path, settings: Settings) -> FetchResult:
    """Fetch ``site_id`` (from ``settings.sites_file``) and write its cube and truth."""
    site = get_site(settings.sites_file, site_id)
    fetcher = make_fetcher(settings)
    request = request_for(site, settings)
    cube = fetcher.fetch(request)
    cube.attrs.update(site_id=site.site_id, control=int(site.control))
    write_cube(cube, raw_out)  # default chunks: fetch does not depend on tile.* settings

    truth = truth_for(fetcher, request, control=site.control)
    write_geojson(truth, truth_out)
    return FetchResult(site.site_id, int(cube.sizes["time"]), request.grid.shape, len(truth))


def main(argv: Sequence[str] | None = None) -> int:
    parser = stage_parser("fetch", "Fetch one site's scene cube (zarr) and ground truth (GeoJSON, WGS84).")
    parser.add_argument("site", help="site id from sites_file")
    parser.add_argument("raw_out", type=Path, help="scene cube to write (zarr store)")
    parser.add_argument("truth_out", type=Path, help="truth polygons to write (GeoJSON, WGS84)")

    def _go(a: argparse.Namespace) -> None:
        r = run(a.site, a.raw_out, a.truth_out, load_settings(a.params))
        rows, cols = r.shape
        print(f"fetch {r.site_id}: {r.n_dates} dates, {rows}x{cols} px, {r.n_truth} truth polygons")

    return stage_main(_go, parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())
