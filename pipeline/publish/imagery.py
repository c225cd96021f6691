"""Imagery under the flags: each site's before and after scene as EPSG:3857 XYZ PNG tiles.

For every site with a tiles cube, two acquisitions are picked on the site's clear fraction (share of the
site's pixels clear in the ``clear`` mask):

- **after**: the latest acquisition at least 90 % clear (else the clearest of the later half);
- **before**: the latest acquisition at least 90 % clear on or before the earliest ``appeared_after`` of
  the site's flags (a site without flags: the earliest one at least 90 % clear; else the clearest
  candidate).

Both are drawn in true colour (B04/B03/B02 reflectance) with the chips' robust stretch
(:func:`pipeline.publish.chips.stretch`: per band, the 2nd and 98th percentiles of the *clear* pixels of both
dates together map to 0 and 255, so brightness changes between the two are real and clouds clip to white),
then warped from the cube's UTM grid to Web Mercator (EPSG:3857) and cut into standard 256 px XYZ tiles
(``{z}/{x}/{y}``, y counted from the north, as OpenStreetMap). The highest zoom is the first whose pixel
(156 543.03 m × cos(latitude) / 2^z) is no larger than the cube's pixel (z 14 for 10 m at 43° N; nearest
neighbour there, so one Sentinel-2 pixel stays a visible square); the ``zoom_levels - 1`` levels below it are
averaged. Pixels outside the scene are transparent.

Written under ``<out_dir>/imagery/``::

    <key>/before/{z}/{x}/{y}.png, <key>/after/{z}/{x}/{y}.png   plain XYZ tiles (QGIS, GDAL, any XYZ client)
    <key>.js                                                    the same tiles as WebP, base64, for the page

where ``<key>`` is the site id when it is a plain id, else ``site-<sha1 of the id>``. The ``.js`` file
exists because the page is opened from ``file://``: Chromium neither fetches other files from such a page
nor lets WebGL read ``<img>`` tiles from it (a tainted-canvas ``SecurityError``), but it does run
``<script src>`` files from the same folder; the page loads a site's script when MapLibre first asks for
one of its tiles (see ``templates/app.js``).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import json
import math
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import xarray as xr
from affine import Affine
from PIL import Image
from pyproj import Transformer
from rasterio.warp import Resampling, reproject

from pipeline._files import write_bytes_atomic, write_text_atomic
from pipeline.flag import grid_transform
from pipeline.publish.chips import RGB_BANDS, stretch
from pipeline.publish.summary import as_date

__all__ = [
    "IMAGERY_DIR",
    "TILE_PX",
    "SceneRole",
    "SiteImagery",
    "imagery_key",
    "native_zoom",
    "pick_scenes",
    "tile_range",
    "write_site_imagery",
]

#: Folder of the imagery inside the output folder.
IMAGERY_DIR = "imagery"
#: Tile edge, pixels.
TILE_PX = 256
#: A date counts as clear for the site's imagery when at least this share of the site is clear.
CLEAR_SCENE_FRACTION = 0.9
#: Half the width of the EPSG:3857 square world, metres.
_HALF_WORLD_M = 20_037_508.342789244
#: Ground size of a z 0 pixel of 256 px tiles at the equator, metres.
_Z0_PIXEL_M = 2 * _HALF_WORLD_M / TILE_PX
#: WebP quality (0–100) of the tiles in the page's script: a sixth of the PNG's size, artefacts below the
#: 10 m pixel at the native zoom (the lossless PNG tiles stay the evidence).
PAGE_WEBP_QUALITY = 90
_PLAIN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class SceneRole(str, Enum):
    """Which of a site's two scenes: before the change or after it."""

    BEFORE = "before"
    AFTER = "after"


@dataclass(frozen=True)
class SiteImagery:
    """What :func:`write_site_imagery` wrote for one site.

    ``bounds``: lon/lat (EPSG:4326) west, south, east, north of the scene; ``dates``: ISO date of each scene;
    ``clear_fraction``: share (0–1) of the site clear on that date; ``tiles``: PNG tiles written (both
    scenes); ``png_bytes``: their size on disk; ``page_bytes``: the WebP copies' size (before base64);
    ``script``/``folder``: paths relative to the output folder.
    """

    site_id: str
    key: str
    bounds: tuple[float, float, float, float]
    minzoom: int
    maxzoom: int
    dates: Mapping[SceneRole, str]
    clear_fraction: Mapping[SceneRole, float]
    tiles: int
    png_bytes: int
    page_bytes: int
    script: str
    folder: str

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict for the map page (roles as their string values)."""
        return {
            "site_id": self.site_id,
            "key": self.key,
            "bounds": [round(v, 7) for v in self.bounds],
            "minzoom": self.minzoom,
            "maxzoom": self.maxzoom,
            "dates": {r.value: d for r, d in self.dates.items()},
            "clear_fraction": {r.value: round(f, 4) for r, f in self.clear_fraction.items()},
            "script": self.script,
        }


def imagery_key(site_id: str) -> str:
    """File-safe name of a site's imagery: the id itself when plain, else ``site-<12 hex of its sha1>``."""
    if _PLAIN_ID.match(site_id):
        return site_id
    return "site-" + hashlib.sha1(site_id.encode("utf-8")).hexdigest()[:12]


def native_zoom(resolution_m: float, lat: float) -> int:
    """Lowest XYZ zoom whose 256 px tile pixel at latitude ``lat`` (degrees) is ≤ ``resolution_m`` metres."""
    ground = _Z0_PIXEL_M * math.cos(math.radians(min(abs(lat), 85.0)))
    return max(0, math.ceil(math.log2(ground / resolution_m) - 1e-9))


def tile_range(bounds_3857: tuple[float, float, float, float], z: int) -> tuple[int, int, int, int]:
    """Tiles ``x0, y0, x1, y1`` (inclusive) at zoom ``z`` covering EPSG:3857 ``minx, miny, maxx, maxy``."""
    size = 2 * _HALF_WORLD_M / 2**z
    n = 2**z - 1
    minx, miny, maxx, maxy = bounds_3857

    def clamp(v: float) -> int:
        return min(max(int(math.floor(v)), 0), n)

    return (
        clamp((minx + _HALF_WORLD_M) / size),
        clamp((_HALF_WORLD_M - maxy) / size),
        clamp((maxx + _HALF_WORLD_M) / size - 1e-9),
        clamp((_HALF_WORLD_M - miny) / size - 1e-9),
    )


def _clear_fraction(cube: xr.Dataset) -> np.ndarray:
    return np.asarray(cube["clear"].mean(("y", "x")).values, dtype=float)


def _latest_clear(frac: np.ndarray, idx: np.ndarray) -> int:
    good = idx[frac[idx] >= CLEAR_SCENE_FRACTION]
    return int(good[-1]) if good.size else int(idx[::-1][np.argmax(frac[idx[::-1]])])


def pick_scenes(cube: xr.Dataset, flags: gpd.GeoDataFrame | None = None) -> dict[SceneRole, int]:
    """Time indices of the site's before and after scenes (rules in the module docstring).

    ``cube``: a tiles cube with ``clear`` (time, y, x); ``flags``: the site's flags (``appeared_after`` ISO
    dates) or None.
    """
    frac = _clear_fraction(cube)
    n = frac.size
    idx = np.arange(n)
    days = np.array([t.date() for t in pd.DatetimeIndex(cube["time"].values)])
    after = _latest_clear(frac, idx) if (frac >= CLEAR_SCENE_FRACTION).any() else _latest_clear(frac, idx[n // 2 :])
    starts = [as_date(v) for v in (flags["appeared_after"] if flags is not None and len(flags) else [])]
    known = [d for d in starts if d is not None]
    if known:
        pre = idx[days <= min(known)]
        before = _latest_clear(frac, pre if pre.size else idx[:1])
    else:
        good = idx[frac >= CLEAR_SCENE_FRACTION]
        before = int(good[0]) if good.size else int(np.argmax(frac[: max(1, n // 2)]))
    return {SceneRole.BEFORE: before, SceneRole.AFTER: after}


def _rgba(image: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``(4, y, x)`` uint8 RGBA of a stretched ``(y, x, 3)`` 0–1 image; alpha 0 where ``valid`` is False."""
    rgb = np.clip(np.round(image * 255), 0, 255).astype(np.uint8).transpose(2, 0, 1)
    return np.concatenate([rgb, np.where(valid, 255, 0).astype(np.uint8)[None]])


def _warp_level(
    rgba: np.ndarray, src_transform: Affine, src_crs: Any, z: int, rng: tuple[int, int, int, int], nearest: bool
) -> np.ndarray:
    """``rgba`` (4, y, x) warped onto the mosaic of tiles ``rng`` at zoom ``z`` (EPSG:3857), (4, h, w) uint8."""
    x0, y0, x1, y1 = rng
    size = 2 * _HALF_WORLD_M / 2**z
    res = size / TILE_PX
    dst_transform = Affine(res, 0.0, -_HALF_WORLD_M + x0 * size, 0.0, -res, _HALF_WORLD_M - y0 * size)
    dst = np.zeros((4, (y1 - y0 + 1) * TILE_PX, (x1 - x0 + 1) * TILE_PX), np.uint8)
    reproject(
        rgba,
        dst,
        src_transform=src_transform,
        src_crs=src_crs,
        dst_transform=dst_transform,
        dst_crs="EPSG:3857",
        resampling=Resampling.nearest if nearest else Resampling.average,
    )
    return dst


def _encode(tile: np.ndarray, fmt: str, **options: Any) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(tile.transpose(1, 2, 0))).save(buf, format=fmt, **options)  # RGBA
    return buf.getvalue()


def write_site_imagery(
    site_id: str,
    cube: xr.Dataset,
    flags: gpd.GeoDataFrame | None,
    out_dir: str | Path,
    *,
    zoom_levels: int = 5,
) -> SiteImagery | None:
    """Write a site's before/after tiles and page script into ``<out_dir>/imagery/``; see the module docstring.

    Parameters
    ----------
    site_id
        The site's id (names the files through :func:`imagery_key`).
    cube
        The site's tiles cube (:func:`pipeline.io.read_cube` of ``data/tiles/<site>.zarr``): ``reflectance``
        float32 (time, band, y, x), ``clear`` bool (time, y, x), a projected rioxarray CRS (metres).
        Only the two picked dates are read in full.
    flags
        The site's flags (``appeared_after``), or None.
    out_dir
        The output folder (``imagery/<key>`` and ``imagery/<key>.js`` are replaced).
    zoom_levels
        How many zoom levels to write, ending at the native zoom (:func:`native_zoom`).

    Returns
    -------
    SiteImagery or None
        None when the cube has no dates, no CRS or lacks one of B04, B03, B02 (the page then shows the
        plain basemap there).
    """
    if cube.sizes.get("time", 0) == 0 or cube.rio.crs is None or "reflectance" not in cube or "clear" not in cube:
        return None
    if any(b not in [str(v) for v in cube["band"].values] for b in RGB_BANDS):
        return None
    key = imagery_key(site_id)
    root = Path(out_dir) / IMAGERY_DIR
    folder = root / key
    if folder.exists():
        shutil.rmtree(folder)
    roles = pick_scenes(cube, flags)
    frac = _clear_fraction(cube)
    order = [SceneRole.BEFORE, SceneRole.AFTER]
    t_idx = [roles[r] for r in order]
    rgb = np.asarray(cube["reflectance"].isel(time=t_idx).sel(band=list(RGB_BANDS)).values, dtype=np.float64)
    clear = np.asarray(cube["clear"].isel(time=t_idx).values, dtype=bool)
    images = [rgb[i].transpose(1, 2, 0) for i in range(len(order))]
    stretched = stretch(images, masks=[clear[i] & np.isfinite(images[i]).all(-1) for i in range(len(order))])
    rgba = [_rgba(s, np.isfinite(im).all(-1)) for s, im in zip(stretched, images)]

    transform = grid_transform(cube)
    crs = cube.rio.crs
    h, w = cube.sizes["y"], cube.sizes["x"]
    xs = np.array([0, w, w, 0], float)
    ys = np.array([0, 0, h, h], float)
    gx, gy = transform.a * xs + transform.b * ys + transform.c, transform.d * xs + transform.e * ys + transform.f
    to_merc = Transformer.from_crs(crs, 3857, always_xy=True)
    to_wgs = Transformer.from_crs(crs, 4326, always_xy=True)
    mx, my = to_merc.transform(gx, gy)
    lon, lat = to_wgs.transform(gx, gy)
    bounds_3857 = (float(np.min(mx)), float(np.min(my)), float(np.max(mx)), float(np.max(my)))
    zmax = native_zoom(abs(transform.a), float(np.mean(lat)))
    zmin = max(0, zmax - zoom_levels + 1)

    scripts: dict[str, dict[str, str]] = {r.value: {} for r in order}
    n_tiles = n_bytes = n_page = 0
    for z in range(zmin, zmax + 1):
        rng = tile_range(bounds_3857, z)
        for role, src in zip(order, rgba):
            mosaic = _warp_level(src, transform, crs, z, rng, nearest=z == zmax)
            for ty in range(rng[1], rng[3] + 1):
                for tx in range(rng[0], rng[2] + 1):
                    r0, c0 = (ty - rng[1]) * TILE_PX, (tx - rng[0]) * TILE_PX
                    tile = mosaic[:, r0 : r0 + TILE_PX, c0 : c0 + TILE_PX]
                    if not tile[3].any():
                        continue
                    data = _encode(tile, "PNG")
                    path = folder / role.value / str(z) / str(tx) / f"{ty}.png"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    write_bytes_atomic(path, data)
                    page = _encode(tile, "WEBP", quality=PAGE_WEBP_QUALITY, method=4)
                    scripts[role.value][f"{z}/{tx}/{ty}"] = base64.b64encode(page).decode("ascii")
                    n_tiles += 1
                    n_bytes += len(data)
                    n_page += len(page)
    script = f"{IMAGERY_DIR}/{key}.js"
    write_text_atomic(
        Path(out_dir) / script,
        "(window.CW_IMAGERY = window.CW_IMAGERY || {})["
        + json.dumps(key)
        + "] = "
        + json.dumps(scripts, separators=(",", ":"))
        + ";\n",
    )
    days = [t.date() for t in pd.DatetimeIndex(cube["time"].values)]
    return SiteImagery(
        site_id=site_id,
        key=key,
        bounds=(float(np.min(lon)), float(np.min(lat)), float(np.max(lon)), float(np.max(lat))),
        minzoom=zmin,
        maxzoom=zmax,
        dates={r: _iso(days[roles[r]]) for r in order},
        clear_fraction={r: float(frac[roles[r]]) for r in order},
        tiles=n_tiles,
        png_bytes=n_bytes,
        page_bytes=n_page,
        script=script,
        folder=f"{IMAGERY_DIR}/{key}",
    )


def _iso(d: dt.date) -> str:
    return d.isoformat()
