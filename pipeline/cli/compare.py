"""``compoundwatch compare BEFORE AFTER --out flags.geojson``: change flags between two scenes on disk.

Argument parsing and output only: the chain is :mod:`pipeline.compare` (:func:`~pipeline.compare.compare_scenes`,
or :func:`~pipeline.compare.compare_band_folders` with ``--blockwise``); scenes are read by
:mod:`pipeline.fetch.scenes` and flags written by :func:`pipeline.publish.geojson.write_geojson`. Errors reach
the one handler of :mod:`pipeline.cli`. Registered by :mod:`pipeline.cli` through :func:`register`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from pipeline.cli._common import check_out_path, console, progress_bars
from pipeline.config import DEFAULT_PARAMS, FlagSettings, Settings, load_settings
from pipeline.errors import ConfigError, SceneMismatchError

__all__ = ["compare", "register"]

_HELP = (
    "Flag new construction between two Sentinel-2 scenes: **BEFORE** and **AFTER**.\n\n"
    "Each scene is given in one of two forms:\n\n"
    "**1.** one **multiband GeoTIFF** whose bands are named by their band descriptions "
    "(`B02`, `B2`, `B02 (490 nm)` ...); without descriptions, name the bands in file order with `--bands`;\n\n"
    "**2.** a **folder of single-band files** named `*_B02.tif`, `*_B8A.jp2` ... "
    "(.tif/.tiff/.jp2), each at its own 10/20/60 m resolution; coarser bands are bilinearly up-sampled to "
    "the finest one.\n\n"
    "Digital numbers are divided by 10000 (after adding BOA_ADD_OFFSET when the file carries it); "
    "0 = no data. At least B02, B03, B04 are needed. The best learned chain for the bands runs: the spatial "
    "model (a small U-Net that sees texture and structure; true-colour exports at any pixel size are "
    "brought to its 10 m and back) or, where it scored higher across cities, the pixel classifier.\n\n"
    "AFTER is reprojected onto BEFORE's finest grid, so `--change-raster` (uint8 COG: 1 change, "
    "0 no change, 255 no data) lines up with BEFORE. Flags are written as RFC 7946 GeoJSON (WGS84), ranked "
    "by confidence.\n\n"
    "**Whole granules** (`--blockwise`, taken by itself for band folders above 25 Mpx): two folders of "
    "band files in one UTM CRS (B02, B03, B04 at least) are screened block by block with the spatial model "
    "that scored best for their bands (or CVA + Otsu with `detect.pair_method: cva`), memory flat with the area "
    "(no `--change-raster`; BOA_ADD_OFFSET is not applied).\n\n"
    "Example: compoundwatch compare imgs_1/ imgs_2/ --out flags.geojson --change-raster change.tif"
)


def _split_bands(bands: list[str] | None) -> list[str] | None:
    """``["B02,B03", "B04"]`` → ``["B02", "B03", "B04"]``; ``None``/empty → ``None``."""
    if not bands:
        return None
    out = [b.strip() for item in bands for b in item.split(",") if b.strip()]
    return out or None


def _settings(params: Path | None, min_area_m2: float | None) -> Settings:
    if params is not None:
        settings = load_settings(params)
    elif DEFAULT_PARAMS.is_file():
        settings = load_settings(DEFAULT_PARAMS)
    else:
        settings = Settings()
    if min_area_m2 is not None:
        if min_area_m2 < 0:
            raise ConfigError(f"--min-area-m2 must be >= 0 square metres, got {min_area_m2}")
        flag = FlagSettings(**{**settings.flag.model_dump(), "min_area_m2": min_area_m2})
        settings = settings.model_copy(update={"flag": flag})
    return settings


_Before = Annotated[Path, typer.Argument(
    metavar="BEFORE", show_default=False,
    help="BEFORE scene: multiband GeoTIFF or folder of *_Bxx band files.")]
_After = Annotated[Path, typer.Argument(
    metavar="AFTER", show_default=False,
    help="AFTER scene, same forms; reprojected onto BEFORE's grid.")]
_Out = Annotated[Path, typer.Option(
    "--out", "-o", metavar="GEOJSON", show_default=False,
    help="Flags to write: GeoJSON (RFC 7946, WGS84).")]
_ChangeRaster = Annotated[Path | None, typer.Option(
    "--change-raster", metavar="TIF", show_default=False,
    help="Also write the change map: uint8 COG on BEFORE's grid (1 change, 0 no change, 255 no data).")]
_Bands = Annotated[list[str] | None, typer.Option(
    "--bands", metavar="BANDS", show_default=False,
    help="Band names, comma-separated or repeated (e.g. B02,B03,B04,B08). For files without band "
    "descriptions: the bands in file order; otherwise: the bands to use.")]
_MinArea = Annotated[float | None, typer.Option(
    "--min-area-m2", metavar="M2", show_default=False,
    help="Drop flags smaller than this (m²). Default: flag.min_area_m2 from the params "
    f"({FlagSettings().min_area_m2:g} unless changed).")]
_Blockwise = Annotated[bool, typer.Option(
    "--blockwise",
    help="Screen two folders of band files (e.g. whole granules, one UTM CRS) block by block with the "
    "spatial model (CVA + Otsu with detect.pair_method cva), memory flat with the area.")]
_Params = Annotated[Path | None, typer.Option(
    "--params", metavar="YAML", show_default=False,
    help="Parameters file. Default: params.yaml if present, else the built-in defaults.")]


def compare(
    before: _Before,
    after: _After,
    out: _Out,
    change_raster: _ChangeRaster = None,
    bands: _Bands = None,
    min_area_m2: _MinArea = None,
    params: _Params = None,
    blockwise: _Blockwise = False,
) -> None:
    """Run ``compoundwatch compare`` (the ``--help`` text is :data:`_HELP`, set as this docstring below)."""
    from pipeline.compare import IN_MEMORY_MAX_PX, compare_band_folders, compare_scenes, too_large_for_memory
    from pipeline.detect.pair import CVA_MIN_BANDS
    from pipeline.fetch.scenes import check_pair, read_scene, scene_date, write_change_raster
    from pipeline.flag import to_wgs84
    from pipeline.publish.geojson import write_geojson

    settings = _settings(params, min_area_m2)
    names = _split_bands(bands)
    check_out_path(out, "--out", [("BEFORE", before), ("AFTER", after)])
    if change_raster is not None:
        check_out_path(change_raster, "--change-raster", [("BEFORE", before), ("AFTER", after), ("--out", out)])
    where = f"[cyan]{escape(str(out))}[/]"
    large = None if blockwise else too_large_for_memory(before, after)
    if large is not None:
        if change_raster is not None:
            raise ConfigError(
                f"the scenes are {large / 1e6:.1f} Mpx, more than compare holds in memory "
                f"({IN_MEMORY_MAX_PX / 1e6:.0f} Mpx), so they are screened block by block, which writes no "
                "change raster; drop --change-raster or crop the scenes"
            )
        console.print(f"{large / 1e6:.1f} Mpx: more than compare holds in memory ({IN_MEMORY_MAX_PX / 1e6:.0f} Mpx); "
                      "screening the band folders block by block (as --blockwise)", soft_wrap=True)
        blockwise = True
    if blockwise:
        if change_raster is not None:
            raise ConfigError("--change-raster is not written with --blockwise (the scan keeps no full-size raster); "
                              "drop one of them")
        d_b, d_a = scene_date(before) or "", scene_date(after) or ""
        if d_b and d_a and d_b > d_a:
            raise SceneMismatchError(f"BEFORE ({before}, {d_b}) is later than AFTER ({after}, {d_a}); swap them: "
                                     "compoundwatch compare EARLIER LATER")
        with progress_bars("block") as bars:
            task = bars.add_task("blocks", total=None, block="")

            def report(done: int, total: int) -> None:
                bars.update(task, completed=done, total=total, block=f"{done}/{total}")

            flags = compare_band_folders(before, after, settings, names, progress=report)
        write_geojson(flags, out)
        extra = ""
    else:
        scene_b = read_scene(before, names, required=CVA_MIN_BANDS)
        scene_a = read_scene(after, names, required=CVA_MIN_BANDS)
        check_pair(scene_b, scene_a)
        pair, _, flags = compare_scenes(scene_b, scene_a, settings)
        if change_raster is not None:
            write_change_raster(
                pair["change"].rio.write_crs(scene_b.rio.crs).rio.write_transform(scene_b.rio.transform()),
                pair["valid"], change_raster,
            )
            where += f", change raster [cyan]{escape(str(change_raster))}[/]"
        write_geojson(to_wgs84(flags), out)
        changed, valid_px = int(pair["change"].sum()), int(pair["valid"].sum())
        extra = f" ({100.0 * changed / valid_px if valid_px else 0.0:.2f} % of valid pixels changed)"
    area = float(flags["area_m2"].sum()) if len(flags) else 0.0
    console.print(f"[bold green]{len(flags)}[/] flag(s), {area:,.0f} m²{extra} → {where}", soft_wrap=True)


compare.__doc__ = _HELP  # typer shows the command function's docstring as --help


def register(app: typer.Typer) -> None:
    """Add ``compare`` to ``app``."""
    app.command("compare", rich_help_panel="Two scenes",
                short_help="Flag new construction between two scenes on disk (BEFORE and AFTER).")(compare)
