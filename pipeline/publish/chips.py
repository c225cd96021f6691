"""Before/after evidence chips: one true-colour PNG per flag, cut from the site's tiles cube.

Each chip shows two panels on the cube's UTM grid (no resampling: one image pixel = one cube pixel,
drawn with nearest-neighbour):

- **before**: the latest acquisition on or before the flag's ``appeared_after`` whose chip window is at
  least 90 % clear (else the clearest such date);
- **after**: the earliest acquisition on or after ``appeared_before`` that is at least 90 % clear (else the
  clearest such date);

as B04/B03/B02 reflectance with one *robust stretch* shared by both panels (per band, the 2nd and 98th
percentiles of the finite values of both windows map to 0 and 1), so brightness changes are real. The flag
polygon is outlined, each panel has a scale bar in metres, and the caption gives the flag id, dates,
pixel size (m) and window size (m). Pixels with no data (NaN) are drawn mid-grey.

The window is the flag's bounding box plus a margin of half its size (at least ``margin_px``), grown to
at least ``min_size_px`` square and clipped to the grid. Rendering uses matplotlib's Agg canvas directly
(no pyplot state), so it is safe in worker processes and needs no display.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from shapely.geometry import Polygon, box
from shapely.geometry.base import BaseGeometry

from pipeline._files import atomic_path
from pipeline.errors import BandError, InputFileError
from pipeline.flag import grid_transform
from pipeline.publish.summary import as_date

__all__ = ["CHIPS_DIR", "RGB_BANDS", "ChipWindow", "chip_href", "chip_window", "stretch", "render_chips"]

#: Folder of the chips inside the output folder; feature properties link to ``chips/<flag_id>.png``.
CHIPS_DIR = "chips"
#: True-colour bands (red, green, blue).
RGB_BANDS: tuple[str, str, str] = ("B04", "B03", "B02")
#: A date is "clear" for a chip when at least this fraction of its window is clear.
CLEAR_CHIP_FRACTION = 0.9


_SAFE_FLAG_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


def chip_href(flag_id: str) -> str:
    """Relative path (from the output folder) of a flag's chip: ``chips/<flag_id>.png``.

    The flag id names a file, so it must be a plain id (``cw-47ec03ed8afd``): an id read from an edited
    flags file such as ``../../x`` raises :class:`~pipeline.errors.InputFileError` instead of naming a path
    outside the chips folder.
    """
    if not _SAFE_FLAG_ID.match(flag_id):
        raise InputFileError(f"flag id {flag_id!r} is not a plain id (letters, digits, '-', '_'); it cannot name a "
                             "chip file; regenerate the flags with compoundwatch flag")
    return f"{CHIPS_DIR}/{flag_id}.png"


@dataclass(frozen=True)
class ChipWindow:
    """Pixel window ``rows[0]:rows[1]``, ``cols[0]:cols[1]`` of the cube grid."""

    rows: tuple[int, int]
    cols: tuple[int, int]


def chip_window(
    geom: BaseGeometry,
    transform: object,
    shape: tuple[int, int],
    *,
    margin_px: int = 8,
    min_size_px: int = 32,
) -> ChipWindow:
    """Pixel window around ``geom`` (grid CRS) on a grid of ``shape`` (rows, cols) with affine ``transform``."""
    inv = ~transform  # type: ignore[operator]
    minx, miny, maxx, maxy = geom.bounds
    c0, r0 = inv @ (minx, maxy)
    c1, r1 = inv @ (maxx, miny)
    r0, r1 = sorted((r0, r1))
    c0, c1 = sorted((c0, c1))
    h, w = r1 - r0, c1 - c0
    margin = max(float(margin_px), 0.5 * max(h, w))
    size = max(float(min_size_px), max(h, w) + 2 * margin)
    rc, cc = (r0 + r1) / 2, (c0 + c1) / 2
    nrows, ncols = shape

    def _span(centre: float, n: int) -> tuple[int, int]:
        lo = int(math.floor(centre - size / 2))
        hi = int(math.ceil(centre + size / 2))
        if hi - lo > n:
            return 0, n
        if lo < 0:
            lo, hi = 0, hi - lo
        if hi > n:
            lo, hi = lo - (hi - n), n
        return max(lo, 0), min(hi, n)

    return ChipWindow(_span(rc, nrows), _span(cc, ncols))


def stretch(
    images: Sequence[np.ndarray],
    low: float = 2.0,
    high: float = 98.0,
    *,
    masks: Sequence[np.ndarray] | None = None,
) -> list[np.ndarray]:
    """Robust stretch of ``(y, x, 3)`` images to 0–1 with per-band percentiles over all of them together.

    ``masks`` (one ``(y, x)`` bool array per image, e.g. the clear mask) limits the pixels the percentiles
    are taken from (clouds then clip to white instead of darkening the scene); every pixel is stretched.
    When no pixel is selected the percentiles come from all of them. NaN (no data) becomes 0.5
    (mid-grey). A band with no spread maps to 0.5.
    """
    stack = np.concatenate([im.reshape(-1, im.shape[-1]) for im in images], axis=0)
    if masks is not None:
        keep = np.concatenate([np.asarray(m, bool).reshape(-1) for m in masks])
        if keep.any():
            stack = stack[keep]
    out = []
    lo = np.full(stack.shape[1], 0.0)
    hi = np.full(stack.shape[1], 1.0)
    for b in range(stack.shape[1]):
        v = stack[:, b]
        v = v[np.isfinite(v)]
        if v.size:
            lo[b], hi[b] = np.percentile(v, [low, high])
    for im in images:
        span = np.where(hi - lo > 1e-9, hi - lo, np.nan)
        s = (im - lo) / span
        s = np.where(np.isfinite(s), np.clip(s, 0.0, 1.0), 0.5)
        out.append(s.astype(np.float32))
    return out


def _grid_box(transform: object, shape: tuple[int, int]) -> BaseGeometry:
    """Footprint of a grid of ``shape`` (rows, cols) with affine ``transform`` (grid CRS)."""
    x0, y0 = transform @ (0, 0)  # type: ignore[operator]
    x1, y1 = transform @ (shape[1], shape[0])  # type: ignore[operator]
    return box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def _nice_length(max_m: float) -> float:
    """Largest 1/2/5 × 10^k metres not above ``max_m``."""
    if max_m <= 0:
        return 0.0
    k = 10 ** math.floor(math.log10(max_m))
    for f in (5, 2, 1):
        if f * k <= max_m:
            return float(f * k)
    return float(k)


def _pick(frac: np.ndarray, candidates: np.ndarray, latest: bool) -> int:
    """Index among ``candidates`` (time indices, ascending) of the latest/earliest ≥ 90 %-clear date."""
    good = candidates[frac[candidates] >= CLEAR_CHIP_FRACTION]
    if good.size:
        return int(good[-1] if latest else good[0])
    order = candidates[::-1] if latest else candidates
    return int(order[np.argmax(frac[order])])


def _outline(ax: Axes, geom: BaseGeometry, x0: float, y0: float) -> None:
    polys = [geom] if isinstance(geom, Polygon) else list(getattr(geom, "geoms", []))
    for p in polys:
        if not isinstance(p, Polygon):
            continue
        for ring in (p.exterior, *p.interiors):
            xy = np.asarray(ring.coords)
            ax.plot(xy[:, 0] - x0, xy[:, 1] - y0, color="#ffea00", lw=1.6, solid_joinstyle="miter")


def _scale_bar(ax: Axes, width_m: float, height_m: float) -> None:
    length = _nice_length(width_m / 3)
    if length <= 0:
        return
    x, y = 0.06 * width_m, 0.07 * height_m
    ax.plot([x, x + length], [y, y], color="black", lw=5, solid_capstyle="butt")
    ax.plot([x, x + length], [y, y], color="white", lw=3, solid_capstyle="butt")
    label = f"{length / 1000:g} km" if length >= 1000 else f"{length:g} m"
    ax.text(
        x + length / 2,
        y + 0.035 * height_m,
        label,
        color="white",
        ha="center",
        va="bottom",
        fontsize=8,
        fontweight="bold",
        bbox={"facecolor": "black", "alpha": 0.55, "pad": 1.5, "edgecolor": "none"},
    )


def render_chips(
    flags: gpd.GeoDataFrame,
    cube: xr.Dataset,
    out_dir: str | Path,
    *,
    margin_px: int = 8,
    min_size_px: int = 32,
    dpi: int = 100,
) -> dict[str, Path]:
    """Write ``<out_dir>/<flag_id>.png`` for every flag of one site; returns ``{flag_id: path}``.

    Parameters
    ----------
    flags
        The site's flags (any CRS; reprojected to the cube's UTM CRS) with ``flag_id``, ``appeared_after``
        and ``appeared_before`` (ISO dates); ``confidence`` and ``area_m2`` go into the caption if present.
    cube
        The site's tiles cube (:func:`pipeline.io.read_cube` of ``data/tiles/<site>.zarr``):
        ``reflectance`` float32 (time, band, y, x) with B04/B03/B02 in the ``band`` coord, ``clear`` bool
        (time, y, x), a rioxarray CRS. Only the chip windows are read.
    out_dir
        Folder of the PNG files (created).

    Raises
    ------
    BandError
        When the cube lacks one of B04, B03, B02.
    InputFileError
        When the cube has no CRS or no dates.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not len(flags):
        return {}
    if "reflectance" not in cube or "clear" not in cube:
        raise InputFileError(
            "tiles cube lacks 'reflectance' or 'clear'; pass data/tiles/<site>.zarr from the tile stage"
        )
    bands = [str(b) for b in cube["band"].values]
    missing = [b for b in RGB_BANDS if b not in bands]
    if missing:
        raise BandError(
            f"tiles cube has bands {bands} but chips need {', '.join(missing)}; add them to fetch.bands"
        )
    crs = cube.rio.crs
    if crs is None:
        raise InputFileError("tiles cube has no CRS; rewrite it with pipeline.io.write_cube")
    if cube.sizes.get("time", 0) == 0:
        raise InputFileError("tiles cube has no acquisition dates; chips need imagery")
    transform = grid_transform(cube)
    res_x, res_y = abs(transform.a), abs(transform.e)
    shape = (cube.sizes["y"], cube.sizes["x"])
    times = pd.DatetimeIndex(cube["time"].values)
    days = np.array([t.date() for t in times])
    refl = cube["reflectance"].transpose("time", "band", "y", "x")
    clear = cube["clear"].transpose("time", "y", "x")
    utm = flags.to_crs(crs) if flags.crs is not None else flags

    written: dict[str, Path] = {}
    for _, row in utm.iterrows():
        fid = str(row["flag_id"])
        geom = row.geometry
        if geom is None or geom.is_empty:
            continue
        win = chip_window(geom, transform, shape, margin_px=margin_px, min_size_px=min_size_px)
        if not geom.intersects(_grid_box(transform, shape)):
            raise InputFileError(
                f"flag {fid} lies outside the tiles cube's grid; pass the cube of the flag's own site"
            )
        ys, xs = slice(*win.rows), slice(*win.cols)
        frac = np.asarray(clear.isel(y=ys, x=xs).mean(("y", "x")).values, dtype=float)
        a_after, a_before = as_date(row.get("appeared_after")), as_date(row.get("appeared_before"))
        idx = np.arange(len(days))
        pre = idx[days <= a_after] if a_after else idx[:0]
        post = idx[days >= a_before] if a_before else idx[:0]
        if pre.size == 0:
            pre = idx[: max(1, len(idx) // 2)]
        if post.size == 0:
            post = idx[len(idx) // 2 :] if len(idx) > 1 else idx
        t0, t1 = _pick(frac, pre, latest=True), _pick(frac, post, latest=False)
        rgb = refl.isel(time=[t0, t1], y=ys, x=xs).sel(band=list(RGB_BANDS))
        arr = np.asarray(rgb.values, dtype=np.float64)  # (2, 3, h, w)
        before, after = stretch([arr[0].transpose(1, 2, 0), arr[1].transpose(1, 2, 0)])

        x0 = transform.c + win.cols[0] * transform.a
        y_top = transform.f + win.rows[0] * transform.e
        h, w = before.shape[:2]
        width_m, height_m = w * res_x, h * res_y
        y0 = y_top - height_m
        fig = Figure(figsize=(7.2, 4.2), dpi=dpi)
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, 2)
        for ax, img, label, t in ((axes[0], before, "Before", t0), (axes[1], after, "After", t1)):
            ax.imshow(img, extent=(0, width_m, 0, height_m), interpolation="nearest", origin="upper")
            _outline(ax, geom, x0, y0)
            _scale_bar(ax, width_m, height_m)
            ax.set_xlim(0, width_m)
            ax.set_ylim(0, height_m)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{label}: {days[t].isoformat()}  ({frac[t]:.0%} clear)", fontsize=10)
        conf = row.get("confidence")
        area = row.get("area_m2")
        extra = []
        if conf is not None and not pd.isna(conf):
            extra.append(f"confidence {float(conf):.2f}")
        if area is not None and not pd.isna(area):
            extra.append(f"{float(area):,.0f} m²")
        caption = (
            f"{fid} · {' · '.join(extra) + ' · ' if extra else ''}"
            f"change between {a_after or '?'} and {a_before or '?'}\n"
            f"Sentinel-2 true colour (B04/B03/B02), 2–98 % stretch · pixel {res_x:g} m × {res_y:g} m · "
            f"window {width_m:,.0f} m × {height_m:,.0f} m · EPSG:{crs.to_epsg()}"
        )
        fig.text(0.5, 0.02, caption, ha="center", va="bottom", fontsize=8)
        fig.subplots_adjust(left=0.02, right=0.98, top=0.92, bottom=0.14, wspace=0.04)
        path = out_dir / Path(chip_href(fid)).name
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, metadata={"Software": None})
        written[fid] = path
    return written
