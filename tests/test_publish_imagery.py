"""Site imagery tiles (pipeline.publish.imagery): zoom and tile maths, scene choice, and the tiles written.

Expected values come from the OpenStreetMap slippy-map formulas and from the tiny run's planted blocks
(bright roofs from a known date on textured soil), not from the code under test.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from _publish_data import BLOCKS, ROOF, SOIL, dates_of, tiny_run
from PIL import Image
from pyproj import Transformer

from pipeline.publish.chips import stretch
from pipeline.publish.imagery import (
    IMAGERY_DIR,
    SceneRole,
    imagery_key,
    native_zoom,
    pick_scenes,
    tile_range,
    write_site_imagery,
)

HALF = 20_037_508.342789244


def _osm_tile(lon: float, lat: float, z: int) -> tuple[int, int]:
    """The OSM wiki's lon/lat → tile formula."""
    n = 2**z
    x = int((lon + 180.0) / 360.0 * n)
    r = math.radians(lat)
    y = int((1.0 - math.asinh(math.tan(r)) / math.pi) / 2.0 * n)
    return x, y


@pytest.mark.parametrize(("res", "lat"), [(10.0, 43.37), (10.0, 0.0), (10.0, 60.0), (20.0, 43.0), (0.5, 10.0)])
def test_native_zoom_is_the_first_zoom_as_fine_as_the_pixel(res: float, lat: float) -> None:
    z = native_zoom(res, lat)
    ground = 156_543.033928 * math.cos(math.radians(lat))
    assert ground / 2**z <= res < ground / 2 ** (z - 1)


def test_native_zoom_values() -> None:
    assert native_zoom(10.0, 43.37) == 14  # 6.94 m at z 14, 13.9 m at z 13
    assert native_zoom(10.0, 60.0) == 13  # 9.55 m at z 13


@pytest.mark.parametrize(("lon", "lat", "z"), [(88.31, 43.37, 14), (-73.99, 40.73, 11), (151.2, -33.87, 9)])
def test_tile_range_matches_the_osm_formula(lon: float, lat: float, z: int) -> None:
    to_merc = Transformer.from_crs(4326, 3857, always_xy=True)
    x, y = to_merc.transform(lon, lat)
    x2, y2 = to_merc.transform(lon + 0.05, lat - 0.05)
    rng = tile_range((x, y2, x2, y), z)
    assert rng[:2] == _osm_tile(lon, lat, z)
    assert rng[2:] == _osm_tile(lon + 0.05, lat - 0.05, z)
    assert tile_range((-HALF, -HALF, HALF, HALF), 2) == (0, 0, 3, 3)


def test_imagery_key_is_the_id_or_a_hash() -> None:
    assert imagery_key("arid-compound") == "arid-compound"
    k = imagery_key("../<b>site</b>")
    assert re.fullmatch(r"site-[0-9a-f]{12}", k)
    assert imagery_key("../<b>site</b>") == k != imagery_key("../<b>site</b>2")


def test_stretch_masks_take_the_percentiles_from_the_masked_pixels() -> None:
    img = np.full((10, 10, 3), 0.2)
    img[:5, :, :] = np.linspace(0.1, 0.3, 50).reshape(5, 10, 1)
    img[5:, :, :] = 0.9  # "cloud"
    mask = np.zeros((10, 10), bool)
    mask[:5] = True
    (out,) = stretch([img], masks=[mask])
    assert out[5:].min() == 1.0  # the cloud clips to white
    assert out[:5].min() == 0.0 and out[:5].max() == 1.0  # the clear pixels span the full range
    (plain,) = stretch([img])
    assert plain[5:].min() == 1.0 and plain[:5].max() < 0.5  # without the mask, the cloud sets the top


def test_pick_scenes_before_the_first_change_and_the_latest_clear(tmp_path: Path) -> None:
    run = tiny_run(tmp_path, write_tiles=False)
    dates = dates_of(run)
    roles = pick_scenes(run.cube, run.flags)
    # earliest appeared_after of the three flags is 2021-02-14 (block 3 appears at date index 2)
    assert dates[roles[SceneRole.BEFORE]] == "2021-02-14"
    assert dates[roles[SceneRole.AFTER]] == dates[-1]
    no_flags = pick_scenes(run.cube, None)
    assert no_flags == {SceneRole.BEFORE: 0, SceneRole.AFTER: len(dates) - 1}
    cloudy = run.cube.copy()
    clear = cloudy["clear"].values.copy()
    clear[-1] = False  # the last date is overcast: the after scene is the one before it
    clear[0, :40] = False  # the first is 62 % clear: without flags, the first ≥ 90 % clear date is next
    cloudy["clear"] = (("time", "y", "x"), clear)
    picked = pick_scenes(cloudy, None)
    assert picked == {SceneRole.BEFORE: 1, SceneRole.AFTER: len(dates) - 2}


def _pixel(lon: float, lat: float, z: int) -> tuple[int, int, int, int]:
    """Tile x, y and pixel column, row of a lon/lat point at zoom z (256 px tiles)."""
    x, y = Transformer.from_crs(4326, 3857, always_xy=True).transform(lon, lat)
    size = 2 * HALF / 2**z
    fx, fy = (x + HALF) / size, (HALF - y) / size
    return int(fx), int(fy), int((fx % 1) * 256), int((fy % 1) * 256)


def test_write_site_imagery_tiles_show_the_planted_roof(tmp_path: Path) -> None:
    run = tiny_run(tmp_path)
    out = tmp_path / "out"
    im = write_site_imagery("test-site", run.cube, run.flags, out)
    assert im is not None
    assert (im.minzoom, im.maxzoom) == (10, 14)
    assert im.dates == {SceneRole.BEFORE: "2021-02-14", SceneRole.AFTER: "2021-12-11"}
    assert im.clear_fraction == {SceneRole.BEFORE: 1.0, SceneRole.AFTER: 1.0}
    files = sorted((out / IMAGERY_DIR / "test-site").rglob("*.png"))
    assert len(files) == im.tiles and sum(f.stat().st_size for f in files) == im.png_bytes
    # 640 m × 640 m: one tile per scene at z 10-12, 1-2 × 1-2 at z 13-14
    assert {f.relative_to(out / IMAGERY_DIR / "test-site").parts[0] for f in files} == {"before", "after"}
    assert 10 <= im.tiles <= 2 * (3 + 4 + 4)

    # the page script holds the same tiles (as WebP) under z/x/y keys
    text = (out / im.script).read_text()
    m = re.fullmatch(r'\(window\.CW_IMAGERY = window\.CW_IMAGERY \|\| \{\}\)\["test-site"\] = (.*);\n', text, re.S)
    assert m is not None
    script = json.loads(m[1])
    root = out / IMAGERY_DIR / "test-site"
    on_disk: dict[str, set[str]] = {"before": set(), "after": set()}
    for f in files:
        role, *zxy = f.relative_to(root).with_suffix("").parts
        on_disk[role].add("/".join(zxy))
    assert {r: set(v) for r, v in script.items()} == on_disk
    webp = base64.b64decode(next(iter(script["after"].values())))
    assert webp[:4] == b"RIFF" and webp[8:12] == b"WEBP"

    # block 0 (rows 8-20, cols 8-20): soil before, roof after, at the native zoom
    tr = run.cube.rio.transform()
    to_wgs = Transformer.from_crs(run.cube.rio.crs, 4326, always_xy=True)
    blk = BLOCKS[0]
    cx, cy = tr @ ((blk.cols[0] + blk.cols[1]) / 2, (blk.rows[0] + blk.rows[1]) / 2)
    tx, ty, px, py = _pixel(*to_wgs.transform(cx, cy), 14)
    before = np.asarray(Image.open(out / IMAGERY_DIR / "test-site" / "before" / "14" / str(tx) / f"{ty}.png"))
    after = np.asarray(Image.open(out / IMAGERY_DIR / "test-site" / "after" / "14" / str(tx) / f"{ty}.png"))
    assert before.shape == after.shape == (256, 256, 4)
    assert before[py, px, 3] == after[py, px, 3] == 255
    # the roof is brighter than the soil in every band (ROOF > SOIL), and saturates the shared stretch
    assert all(ROOF[b] > SOIL[b] for b in ("B02", "B03", "B04"))
    assert (after[py, px, :3].astype(int) - before[py, px, :3].astype(int) > 100).all()
    assert after[py, px, :3].min() >= 250
    # outside the scene the tiles are transparent: a point 2 km west of the grid at z 14
    wx, wy = tr @ (-200, 32)
    ox, oy, opx, opy = _pixel(*to_wgs.transform(wx, wy), 14)
    outside = out / IMAGERY_DIR / "test-site" / "after" / "14" / str(ox) / f"{oy}.png"
    assert not outside.exists() or np.asarray(Image.open(outside))[opy, opx, 3] == 0
    # the site's edge tile has both opaque and transparent pixels
    alphas = [np.asarray(Image.open(f))[..., 3] for f in files if "/14/" in str(f)]
    assert any((a == 0).any() and (a == 255).any() for a in alphas)


def test_write_site_imagery_skips_cubes_without_true_colour(tmp_path: Path) -> None:
    run = tiny_run(tmp_path, write_tiles=False)
    no_blue = run.cube.sel(band=["B03", "B04", "B08"])
    assert write_site_imagery("test-site", no_blue, run.flags, tmp_path / "out") is None
    assert write_site_imagery("test-site", run.cube.isel(time=[]), None, tmp_path / "out") is None
    assert not (tmp_path / "out" / IMAGERY_DIR).exists()


def test_png_tiles_are_rgba_256(tmp_path: Path) -> None:
    run = tiny_run(tmp_path, write_tiles=False)
    im = write_site_imagery("a site/with odd id", run.cube, None, tmp_path / "out")
    assert im is not None and im.key.startswith("site-") and im.script == f"imagery/{im.key}.js"
    for f in (tmp_path / "out" / im.folder).rglob("*.png"):
        with Image.open(io.BytesIO(f.read_bytes())) as tile:
            assert tile.size == (256, 256) and tile.mode == "RGBA"
