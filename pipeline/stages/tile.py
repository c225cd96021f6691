"""Stage ``tile``: scene cube → preprocessed, tiled reflectance cube.

``python -m pipeline.stages.tile RAW_CUBE TILE_OUT [--params params.yaml]``

Reads ``preprocess`` and ``tile`` from the parameters. Converts digital numbers to float32 reflectance
(unitless, 0-1; removing the baseline-04.00 offset when ``preprocess.harmonise``), builds the clear-sky mask
(SCL class not in ``preprocess.invalid_scl`` and every band has data) and writes both, chunked in
``tile.tile_size_px`` pixel tiles, to ``TILE_OUT`` (zarr): ``reflectance`` (time, band, y, x) float32 and
``clear`` (time, y, x) bool, on the scene cube's UTM grid.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import Settings, load_settings
from pipeline.grid import tiles
from pipeline.io import read_cube, write_cube
from pipeline.preprocess import preprocess_cube
from pipeline.stages import stage_main, stage_parser

__all__ = ["TileResult", "run", "main"]


@dataclass(frozen=True)
class TileResult:
    """What :func:`run` wrote: number of dates, tiles and the mean clear fraction (0-1)."""

    n_dates: int
    n_tiles: int
    clear_fraction: float


def run(raw_cube: str | Path, tile_out: str | Path, settings: Settings) -> TileResult:
    """Preprocess the scene cube at ``raw_cube`` and write the tiled cube to ``tile_out``."""
    cube = read_cube(raw_cube)
    out = preprocess_cube(cube, settings.preprocess)
    write_cube(out, tile_out, settings.tile.tile_size_px)
    n_tiles = len(tiles((out.sizes["y"], out.sizes["x"]), settings.tile.tile_size_px))
    frac = float(read_cube(tile_out)["clear"].mean().compute())
    return TileResult(int(out.sizes["time"]), n_tiles, frac)


def main(argv: Sequence[str] | None = None) -> int:
    parser = stage_parser("tile", "Harmonise and mask a scene cube; write tiled reflectance + clear mask.")
    parser.add_argument("raw_cube", type=Path, help="scene cube from the fetch stage (zarr)")
    parser.add_argument("tile_out", type=Path, help="tiled cube to write (zarr)")

    def _go(a: argparse.Namespace) -> None:
        r = run(a.raw_cube, a.tile_out, load_settings(a.params))
        print(f"tile {a.raw_cube}: {r.n_dates} dates, {r.n_tiles} tile(s), {r.clear_fraction:.0%} clear")

    return stage_main(_go, parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())
