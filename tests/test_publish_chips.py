"""Before/after evidence chips: one non-empty PNG per flag, from the right dates, with a robust stretch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _publish_data import SITE_ID, tiny_run
from affine import Affine
from PIL import Image
from shapely.geometry import box

from pipeline.errors import BandError, InputFileError
from pipeline.io import read_cube
from pipeline.publish.chips import _pick, chip_href, chip_window, render_chips, stretch


def test_chip_for_every_flag_is_a_non_empty_image(tmp_path: Path) -> None:
    run = tiny_run(tmp_path)
    cube = read_cube(run.tiles[SITE_ID])  # the zarr store, as the publish stage reads it
    chips = render_chips(run.flags, cube, tmp_path / "chips")
    assert set(chips) == set(run.flags["flag_id"])
    for fid, path in chips.items():
        assert path == tmp_path / "chips" / f"{fid}.png"
        assert path.stat().st_size > 5_000
        with Image.open(path) as im:
            assert im.format == "PNG"
            assert im.size == (720, 420)
            rgb = np.asarray(im.convert("RGB"), dtype=float)
        assert rgb.std() > 20  # not blank
        # the polygon outline colour (#ffea00) is drawn
        yellow = (rgb[..., 0] > 230) & (rgb[..., 1] > 200) & (rgb[..., 2] < 60)
        assert yellow.sum() > 50
    assert chip_href("cw-0123456789ab") == "chips/cw-0123456789ab.png"


def test_chips_are_deterministic(tmp_path: Path) -> None:
    run = tiny_run(tmp_path, write_tiles=False)
    one = render_chips(run.flags.iloc[:1], run.cube, tmp_path / "a")
    two = render_chips(run.flags.iloc[:1], run.cube, tmp_path / "b")
    (a,), (b,) = one.values(), two.values()
    assert a.read_bytes() == b.read_bytes()


def test_chip_window_surrounds_the_polygon_and_stays_on_the_grid() -> None:
    t = Affine(10.0, 0, 1000.0, 0, -10.0, 2000.0)
    geom = box(1100.0, 1800.0, 1200.0, 1900.0)  # cols 10-20, rows 10-20
    w = chip_window(geom, t, (64, 64), margin_px=8, min_size_px=32)
    r0, r1 = w.rows
    c0, c1 = w.cols
    assert r0 <= 10 - 5 and r1 >= 20 + 5 and c0 <= 5 and c1 >= 25  # margin = half the 10 px size
    assert r1 - r0 == c1 - c0 == 32
    edge = chip_window(box(1000.0, 1980.0, 1020.0, 2000.0), t, (64, 64))  # top-left corner
    assert edge.rows[0] == 0 and edge.cols[0] == 0 and edge.rows[1] == 32
    small = chip_window(geom, t, (16, 16))
    assert small.rows == (0, 16) and small.cols == (0, 16)


def test_stretch_maps_percentiles_and_nan() -> None:
    a = np.linspace(0, 1, 101, dtype=float)[:, None, None].repeat(3, axis=2)  # (101, 1, 3)
    b = a.copy()
    b[0, 0, :] = np.nan
    sa, sb = stretch([a, b])
    # 2nd / 98th percentile over both images -> 0 / 1
    assert sa[2, 0, 0] == pytest.approx(0.0, abs=0.02)
    assert sa[98, 0, 0] == pytest.approx(1.0, abs=0.02)
    assert sa[0, 0, 0] == 0.0 and sa[100, 0, 0] == 1.0  # clipped
    assert sb[0, 0, 0] == 0.5  # no data -> mid-grey
    flat = stretch([np.full((2, 2, 3), 0.3)])[0]
    assert np.all(flat == 0.5)


def test_dates_prefer_clear_windows() -> None:
    frac = np.array([1.0, 0.95, 0.4, 1.0, 0.5, 0.92])
    # latest >= 90 % clear before (indices 0..2) is 1; earliest after (3..5) is 3
    assert _pick(frac, np.arange(0, 3), latest=True) == 1
    assert _pick(frac, np.arange(3, 6), latest=False) == 3
    # none clear enough: the clearest
    assert _pick(np.array([0.2, 0.6, 0.5]), np.arange(3), latest=True) == 1


def test_missing_rgb_band_is_a_band_error(tmp_path: Path) -> None:
    run = tiny_run(tmp_path, write_tiles=False)
    with pytest.raises(BandError, match="B02"):
        render_chips(run.flags, run.cube.sel(band=["B03", "B04", "B08"]), tmp_path / "chips")


def test_flag_outside_the_cube_is_an_input_error(tmp_path: Path) -> None:
    run = tiny_run(tmp_path, write_tiles=False)
    far = run.flags.iloc[:1].copy()
    far["geometry"] = far.geometry.translate(xoff=10_000.0)
    with pytest.raises(InputFileError, match="outside"):
        render_chips(far, run.cube, tmp_path / "chips")
