"""``compoundwatch compare BEFORE AFTER --out flags.geojson``: change flags between two scenes on disk.

The command function is registered by :mod:`pipeline.cli` (``app.command("compare")(compare)``); it only
wires :mod:`pipeline.scenes` (reading, aligning, the change raster), :func:`pipeline.detect.detect_pair`,
:func:`pipeline.flag.vectorise` and :func:`pipeline.publish.geojson.write_geojson` together.

AFTER is reprojected onto BEFORE's finest grid (bilinear); the change raster is written on that grid. The
flags are vectorised on a UTM grid: when BEFORE is in a geographic CRS (e.g. EPSG:4326 tiles), the
detection is reprojected (nearest neighbour, GDAL's suggested square pixel size) to the UTM zone of its
centre first, so ``area_m2`` is in square metres. Scene dates come from well-known TIFF tags or a
``YYYYMMDD`` / ``YYYY-MM-DD`` in the file/folder names; unknown dates give ``null``
``appeared_after``/``appeared_before``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import geopandas as gpd
import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
import typer
import xarray as xr
from rasterio.warp import Resampling, transform as warp_transform
from rich.console import Console
from rich.markup import escape

from pipeline.config import DEFAULT_PARAMS, FlagSettings, Settings, load_settings
from pipeline.detect import detect_pair
from pipeline.detect.pair import CVA_MIN_BANDS
from pipeline.errors import CompoundwatchError, ConfigError
from pipeline.flag import to_wgs84, vectorise
from pipeline.grid import utm_epsg
from pipeline.publish.geojson import write_geojson
from pipeline.scenes import align, pixel_size_m, read_scene, write_change_raster

__all__ = ["compare", "compare_scenes", "pair_detection", "COMPARE_SITE_ID"]

#: ``site_id`` written to (and hashed into the ids of) the flags of ``compare``.
COMPARE_SITE_ID = "compare"

_HELP = (
    "Flag new construction between two Sentinel-2 scenes: [bold]BEFORE[/] and [bold]AFTER[/].\n\n"
    "Each scene is given in one of two forms:\n\n"
    "[bold]1.[/] one [bold]multiband GeoTIFF[/] whose bands are named by their band descriptions "
    "([cyan]B02[/], [cyan]B2[/], [cyan]B02 (490 nm)[/] ...); without descriptions, name the bands in "
    "file order with [cyan]--bands[/];\n\n"
    "[bold]2.[/] a [bold]folder of single-band files[/] named [cyan]*_B02.tif[/], [cyan]*_B8A.jp2[/] ... "
    "(.tif/.tiff/.jp2), each at its own 10/20/60 m resolution; coarser bands are bilinearly up-sampled to "
    "the finest one.\n\n"
    "Digital numbers are divided by 10000 (after adding BOA_ADD_OFFSET when the file carries it); "
    "0 = no data. At least B02, B03, B04 are needed (a true-colour pair: radiometric normalisation + CVA); "
    "with B08 the learned chain runs; B11/B12 are used when both scenes have them.\n\n"
    "AFTER is reprojected onto BEFORE's finest grid, so [cyan]--change-raster[/] (uint8 COG: 1 change, "
    "0 no change, 255 no data) lines up with BEFORE. Flags are written as RFC 7946 GeoJSON (WGS84), ranked "
    "by confidence.\n\n"
    "[dim]Example: compoundwatch compare imgs_1/ imgs_2/ --out flags.geojson --change-raster change.tif[/]"
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


def _date(scene: xr.DataArray) -> np.datetime64:
    """The scene's acquisition date (``attrs["date"]``), NaT when unknown."""
    return np.datetime64(scene.attrs.get("date") or "NaT", "ns")


def pair_detection(pair: xr.Dataset, before: xr.DataArray, after: xr.DataArray) -> xr.Dataset:
    """A two-date DETECTION dataset (see CONTRACTS) from :func:`pipeline.detect.detect_pair` output.

    ``time`` = [BEFORE date, AFTER date] (NaT where unknown), ``scene_id`` = the scenes' names,
    ``break_index`` = 1 and ``after_index`` = 0 where changed (-1 elsewhere), ``clear`` = ``valid`` for
    both dates, ``clear_fraction`` = ``valid`` as 0/1. On ``pair``'s grid, CRS taken from ``before``.
    """
    change = pair["change"].astype(bool)
    valid = pair["valid"].astype(bool)
    det = xr.Dataset(
        {
            "change": change,
            "score": pair["score"].astype(np.float32),
            "confidence": pair["confidence"].astype(np.float32),
            "break_index": xr.where(change, 1, -1).astype(np.int16),
            "after_index": xr.where(change, 0, -1).astype(np.int16),
            "clear_fraction": valid.astype(np.float32),
            "clear": xr.concat([valid, valid], dim="time").transpose("time", "y", "x"),
        },
        coords={
            "time": np.array([_date(before), _date(after)], dtype="datetime64[ns]"),
            "scene_id": ("time", [str(before.attrs.get("scene_id", "before")),
                                  str(after.attrs.get("scene_id", "after"))]),
        },
        attrs=dict(pair.attrs),
    )
    return det.rio.write_crs(before.rio.crs).rio.write_transform(before.rio.transform())


def _to_utm(det: xr.Dataset) -> xr.Dataset:
    """Reproject a detection dataset on a geographic grid to the UTM zone of its centre (nearest)."""
    left, bottom, right, top = det.rio.bounds()
    lon, lat = warp_transform(det.rio.crs, "EPSG:4326", [(left + right) / 2], [(bottom + top) / 2])
    dst = f"EPSG:{utm_epsg(lon[0], lat[0])}"
    nodata = {"change": 255, "clear": 255, "score": np.nan, "confidence": np.nan, "clear_fraction": np.nan,
              "break_index": -1, "after_index": -1}
    out: dict[str, xr.DataArray] = {}
    ref: xr.DataArray | None = None
    for name, nd in nodata.items():
        var = det[name]
        if var.dtype == bool:
            var = var.astype(np.uint8)
        var = var.rio.write_crs(det.rio.crs).rio.write_nodata(nd, encoded=False)
        if ref is None:
            var = var.rio.reproject(dst, resampling=Resampling.nearest)
            ref = var
        else:
            var = var.rio.reproject_match(ref, resampling=Resampling.nearest)
            var = var.assign_coords(x=ref["x"], y=ref["y"])
        out[name] = var
    fixed = {
        "change": out["change"] == 1,
        "clear": out["clear"] == 1,
        "score": out["score"].fillna(0).astype(np.float32),
        "confidence": out["confidence"].fillna(0).astype(np.float32),
        "clear_fraction": out["clear_fraction"].fillna(0).astype(np.float32),
        "break_index": out["break_index"].astype(np.int16),
        "after_index": out["after_index"].astype(np.int16),
    }
    assert ref is not None
    res = xr.Dataset(
        {k: v.drop_vars("spatial_ref", errors="ignore") for k, v in fixed.items()}, attrs=det.attrs
    )
    res = res.assign_coords(scene_id=("time", det["scene_id"].values))
    res = res.transpose("time", "y", "x")
    for v in res.data_vars.values():
        v.attrs.pop("_FillValue", None)
        v.encoding.pop("_FillValue", None)
    return res.rio.write_crs(dst).rio.write_transform(ref.rio.transform())


def compare_scenes(
    scene_b: xr.DataArray, scene_a: xr.DataArray, settings: Settings
) -> tuple[xr.Dataset, xr.DataArray, gpd.GeoDataFrame]:
    """The chain of ``compoundwatch compare`` on two scenes read with :func:`pipeline.scenes.read_scene`.

    AFTER is aligned onto BEFORE's grid, :func:`pipeline.detect.detect_pair` runs, and the detection is
    vectorised on a UTM grid (reprojected first when BEFORE is geographic). Returns ``(pair, aligned,
    flags)``: the :func:`~pipeline.detect.detect_pair` dataset on BEFORE's grid, AFTER on that grid, and the
    flags in their UTM CRS, ranked by confidence (``site_id`` :data:`COMPARE_SITE_ID`).
    """
    aligned = align(scene_a, scene_b)
    pair = detect_pair(scene_b, aligned, settings.detect, pixel_m=pixel_size_m(scene_b))
    det = pair_detection(pair, scene_b, aligned)
    if det.rio.crs.is_geographic:
        det = _to_utm(det)
    flags = vectorise(det, site_id=COMPARE_SITE_ID, settings=settings)
    return pair, aligned, flags


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
_Params = Annotated[Path | None, typer.Option(
    "--params", metavar="YAML", show_default=False,
    help="Parameters file. Default: params.yaml if present, else the built-in defaults.")]


def _message(err: Exception) -> str:
    """One-line text of an expected error (OS errors: reason and file)."""
    if isinstance(err, OSError) and not isinstance(err, CompoundwatchError) and err.strerror:
        return f"{err.strerror}: {err.filename}" if err.filename else err.strerror
    return str(err)


def compare(
    before: _Before,
    after: _After,
    out: _Out,
    change_raster: _ChangeRaster = None,
    bands: _Bands = None,
    min_area_m2: _MinArea = None,
    params: _Params = None,
) -> None:
    """Run ``compoundwatch compare`` (the ``--help`` text is :data:`_HELP`, set as this docstring below)."""
    err_console = Console(stderr=True, soft_wrap=True)
    try:
        settings = _settings(params, min_area_m2)
        names = _split_bands(bands)
        scene_b = read_scene(before, names, required=CVA_MIN_BANDS)
        scene_a = read_scene(after, names, required=CVA_MIN_BANDS)
        pair, _, flags = compare_scenes(scene_b, scene_a, settings)
        if change_raster is not None:
            write_change_raster(
                pair["change"].rio.write_crs(scene_b.rio.crs).rio.write_transform(scene_b.rio.transform()),
                pair["valid"], change_raster,
            )
        write_geojson(to_wgs84(flags), out)
    except (CompoundwatchError, OSError) as err:
        err_console.print(f"[bold red]error:[/] compare: {escape(_message(err))}", highlight=False)
        raise typer.Exit(code=1) from None
    area = float(flags["area_m2"].sum()) if len(flags) else 0.0
    changed = int(pair["change"].sum())
    valid_px = int(pair["valid"].sum())
    pct = 100.0 * changed / valid_px if valid_px else 0.0
    where = f"[cyan]{escape(str(out))}[/]"
    if change_raster is not None:
        where += f", change raster [cyan]{escape(str(change_raster))}[/]"
    Console(soft_wrap=True).print(
        f"[bold green]{len(flags)}[/] flag(s), {area:,.0f} m² "
        f"({pct:.2f} % of valid pixels changed) → {where}",
        highlight=False,
    )


compare.__doc__ = _HELP  # typer shows the command function's docstring as --help
