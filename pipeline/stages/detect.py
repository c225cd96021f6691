"""Stage ``detect``: tiled reflectance cube → per-pixel change detection.

``python -m pipeline.stages.detect TILE_CUBE DETECT_OUT [--params params.yaml]``

Reads ``detect`` (and ``tile`` for chunking) from the parameters. Runs
:func:`pipeline.detect.detect_series` tile by tile (dask, one chunk per tile) and writes the detection dataset
(``change``, ``score`` in robust z units, ``confidence`` 0-1, ``break_index``/``after_index`` into ``time``,
``clear_fraction``, ``clear``; same UTM grid and CRS as the input) to ``DETECT_OUT`` (zarr).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import Settings, load_settings
from pipeline.detect import detect_series
from pipeline.io import read_cube, write_cube
from pipeline.scan.cluster import dask_client, dask_settings
from pipeline.stages import stage_main, stage_parser

__all__ = ["DetectResult", "run", "main"]


@dataclass(frozen=True)
class DetectResult:
    """What :func:`run` wrote: changed pixels, the score threshold used and the changed area in m²."""

    changed_px: int
    threshold: float
    changed_m2: float


def run(tile_cube: str | Path, detect_out: str | Path, settings: Settings) -> DetectResult:
    """Detect change in the cube at ``tile_cube`` and write the detection dataset to ``detect_out``."""
    cube = read_cube(tile_cube)  # lazy: detect_series works tile by tile on the y/x chunks
    with dask_client(dask_settings(settings)):  # local threads, or the cluster of dask.scheduler
        det = detect_series(cube["reflectance"], cube["clear"], settings.detect)
    if det.rio.crs is None and cube.rio.crs is not None:
        det = det.rio.write_crs(cube.rio.crs)
    det.attrs.update({k: v for k, v in cube.attrs.items() if k in ("site_id", "control", "source")})
    write_cube(det, detect_out, settings.tile.tile_size_px)
    changed = int(det["change"].sum())
    xres, yres = cube.rio.resolution()
    return DetectResult(changed, float(det.attrs.get("threshold", float("nan"))), changed * abs(xres * yres))


def main(argv: Sequence[str] | None = None) -> int:
    parser = stage_parser("detect", "Detect persistent change in a tiled reflectance cube (zarr).")
    parser.add_argument("tile_cube", type=Path, help="tiled cube from the tile stage (zarr)")
    parser.add_argument("detect_out", type=Path, help="detection dataset to write (zarr)")

    def _go(a: argparse.Namespace) -> None:
        r = run(a.tile_cube, a.detect_out, load_settings(a.params))
        area = f"{r.changed_px} changed px ({r.changed_m2:.0f} m²)"
        print(f"detect {a.tile_cube}: {area}, threshold {r.threshold:.2f}")

    return stage_main(_go, parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())
