"""Stage ``flag``: detection dataset → ranked flag polygons of one site (GeoJSON, WGS84).

``python -m pipeline.stages.flag SITE DETECT_CUBE FLAGS_OUT [--params params.yaml]``

Reads ``flag`` from the parameters (and, through the ``params_hash`` property every flag carries, the
``fetch``, ``synthetic``, ``preprocess`` and ``detect`` sections). Vectorises the change blobs of
``DETECT_CUBE`` on its UTM grid (areas in m²), reprojects them to WGS84 and writes ``FLAGS_OUT``
(RFC 7946 GeoJSON, sorted by confidence = the ranking).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import Settings, load_settings
from pipeline.flag import to_wgs84, vectorise
from pipeline.io import read_cube
from pipeline.publish.geojson import write_geojson
from pipeline.stages import stage_main, stage_parser

__all__ = ["FlagResult", "run", "main"]


@dataclass(frozen=True)
class FlagResult:
    """What :func:`run` wrote: the number of flags and their total area (m², UTM)."""

    site_id: str
    n_flags: int
    area_m2: float


def run(site_id: str, detect_cube: str | Path, flags_out: str | Path, settings: Settings) -> FlagResult:
    """Vectorise the detection at ``detect_cube`` into the flags of ``site_id`` at ``flags_out``."""
    detection = read_cube(detect_cube)
    flags = vectorise(detection, site_id=site_id, settings=settings)
    write_geojson(to_wgs84(flags), flags_out)
    return FlagResult(site_id, len(flags), float(flags["area_m2"].sum()) if len(flags) else 0.0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = stage_parser("flag", "Vectorise one site's detection into ranked flags (GeoJSON, WGS84).")
    parser.add_argument("site", help="site id (written to every flag and part of its flag_id)")
    parser.add_argument("detect_cube", type=Path, help="detection dataset from the detect stage (zarr)")
    parser.add_argument("flags_out", type=Path, help="flags to write (GeoJSON, WGS84)")

    def _go(a: argparse.Namespace) -> None:
        r = run(a.site, a.detect_cube, a.flags_out, load_settings(a.params))
        print(f"flag {r.site_id}: {r.n_flags} flag(s), {r.area_m2:.0f} m²")

    return stage_main(_go, parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())
