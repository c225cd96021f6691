"""Shared test fixtures: tiny georeferenced rasters written to ``tmp_path`` (no network, no shared data)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer
from shapely.geometry import Polygon, box

# Surface reflectance (0-1) of bare soil and a bright new roof for the bands the fixtures write.
SOIL = {"B02": 0.09, "B03": 0.12, "B04": 0.16, "B08": 0.22, "B11": 0.30, "B12": 0.26}
ROOF = {"B02": 0.42, "B03": 0.44, "B04": 0.46, "B08": 0.48, "B11": 0.50, "B12": 0.47}


def write_tif(
    path: Path,
    data: np.ndarray,
    crs: int | str,
    transform: Affine,
    descriptions: Sequence[str | None] | None = None,
    tags: dict[str, str] | None = None,
    nodata: float | None = None,
    driver: str = "GTiff",
    **creation: object,
) -> Path:
    """Write ``data`` (bands, rows, cols) or (rows, cols) as a GeoTIFF (or ``driver``); its dtype is kept."""
    arr = data[None] if data.ndim == 2 else data
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path, "w", driver=driver, width=arr.shape[2], height=arr.shape[1], count=arr.shape[0],
        dtype=arr.dtype, crs=crs, transform=transform, nodata=nodata, **creation,
    ) as dst:
        dst.write(arr)
        for i, d in enumerate(descriptions or [], start=1):
            if d is not None:
                dst.set_band_description(i, d)
        if tags:
            dst.update_tags(**tags)
    return path


@pytest.fixture
def write_raster() -> Callable[..., Path]:
    """The :func:`write_tif` helper, as a fixture."""
    return write_tif


@dataclass(frozen=True)
class ScenePair:
    """Paths of a generated BEFORE/AFTER pair and where the planted change is (BEFORE's CRS and pixels)."""

    before: Path
    after: Path
    before_epsg: int
    before_transform: Affine
    before_shape: tuple[int, int]
    block_rows: slice
    block_cols: slice
    block: Polygon  # planted block, BEFORE's CRS


def _landscape(
    x: np.ndarray, y: np.ndarray, band: str, block: Polygon | None, rng: np.random.Generator
) -> np.ndarray:
    """Textured soil (smooth, 60-250 m wavelengths) with an optional bright block; world coords in metres."""
    tex = 1 + 0.10 * np.sin(x / 37.0) * np.cos(y / 23.0) + 0.06 * np.sin((x + 2 * y) / 61.0)
    refl = SOIL[band] * tex
    if block is not None:
        x0, y0, x1, y1 = block.bounds
        inside = (x >= x0) & (x < x1) & (y >= y0) & (y < y1)
        refl = np.where(inside, ROOF[band] * (1 + 0.02 * np.sin(x / 13.0)), refl)
    return refl + rng.normal(0, 0.002, refl.shape)


def _render(
    bands: Sequence[str], epsg: int, transform: Affine, shape: tuple[int, int], world_epsg: int,
    block: Polygon | None, seed: int,
) -> np.ndarray:
    """DN (uint16) of the landscape sampled at the pixel centres of a grid, per band."""
    rng = np.random.default_rng(seed)
    cols, rows = np.meshgrid(np.arange(shape[1]) + 0.5, np.arange(shape[0]) + 0.5)
    x, y = transform @ (cols, rows)
    if epsg != world_epsg:
        x, y = Transformer.from_crs(epsg, world_epsg, always_xy=True).transform(x, y)
    dn = [np.clip(np.round(_landscape(x, y, b, block, rng) * 10000), 1, 65535) for b in bands]
    return np.stack(dn).astype(np.uint16)


@pytest.fixture
def tiny_scene_pair(tmp_path: Path) -> Callable[..., ScenePair]:
    """:func:`scene_pair_factory` writing under ``tmp_path``."""
    return scene_pair_factory(tmp_path)


def scene_pair_factory(tmp_path: Path) -> Callable[..., ScenePair]:
    """Factory for a BEFORE (multiband GeoTIFF, band descriptions) / AFTER (band folder or GeoTIFF) pair.

    The landscape is defined in BEFORE's CRS and sampled on each scene's own grid; AFTER has a bright
    ``block_px`` × ``block_px`` block (in BEFORE pixels) planted at ``block_at`` (row, col). AFTER's grid is
    in ``after_epsg`` (default: the next UTM zone, the pair sits next to the 6° E zone border), covering
    BEFORE with a margin, at ``after_res`` metres; in folder form B11/B12 are written at 2 × ``after_res``.
    """

    def make(
        size: int = 64,
        before_epsg: int = 32631,
        after_epsg: int = 32632,
        after_res: float = 10.0,
        after_form: str = "folder",
        block_at: tuple[int, int] = (22, 22),
        block_px: int = 20,
        bands: Sequence[str] = ("B02", "B03", "B04", "B08", "B11", "B12"),
        seed: int = 0,
    ) -> ScenePair:
        # BEFORE: 10 m grid whose west half touches lon 6 E (zone 31 / 32 border) at lat 45 N
        x0, y0 = Transformer.from_crs(4326, before_epsg, always_xy=True).transform(5.995, 45.0)
        bt = Affine(10.0, 0, round(x0, -1), 0, -10.0, round(y0, -1))
        r0, c0 = block_at
        bx0, by1 = bt @ (c0, r0)
        bx1, by0 = bt @ (c0 + block_px, r0 + block_px)
        block = box(bx0, by0, bx1, by1)
        before = write_tif(
            tmp_path / "before" / "S2_20200610_scene.tif",
            _render(bands, before_epsg, bt, (size, size), before_epsg, None, seed),
            before_epsg, bt, descriptions=list(bands),
        )
        # AFTER: a grid in after_epsg covering BEFORE's footprint plus 3 pixels
        left, top = bt @ (0, 0)
        right, bottom = bt @ (size, size)
        tr = Transformer.from_crs(before_epsg, after_epsg, always_xy=True)
        ex, ey = tr.transform([left, right, left, right], [top, top, bottom, bottom])
        res = after_res
        ax0, ay1 = np.floor(min(ex) / res) * res - 3 * res, np.ceil(max(ey) / res) * res + 3 * res
        ax1, ay0 = np.ceil(max(ex) / res) * res + 3 * res, np.floor(min(ey) / res) * res - 3 * res
        at = Affine(res, 0, ax0, 0, -res, ay1)
        shape = (int(round((ay1 - ay0) / res)), int(round((ax1 - ax0) / res)))
        if after_form == "folder":
            folder = tmp_path / "after_T32_20210615"
            for i, b in enumerate(bands):
                coarse = b in ("B11", "B12")
                t = at @ Affine.scale(2) if coarse else at
                sh = ((shape[0] + 1) // 2, (shape[1] + 1) // 2) if coarse else shape
                dn = _render([b], after_epsg, t, sh, before_epsg, block, seed + 1 + i)
                write_tif(folder / f"T32TLR_20210615_{b}.tif", dn, after_epsg, t)
            after = folder
        else:
            dn = _render(bands, after_epsg, at, shape, before_epsg, block, seed + 1)
            after = write_tif(
                tmp_path / "after" / "S2_20210615_scene.tif", dn, after_epsg, at, descriptions=list(bands)
            )
        return ScenePair(
            before=before, after=after, before_epsg=before_epsg, before_transform=bt,
            before_shape=(size, size), block_rows=slice(r0, r0 + block_px),
            block_cols=slice(c0, c0 + block_px), block=block,
        )

    return make


# -- the real case-study data (../shared/data), computed once per test session ---------------------------
# tests/test_evaluate_cases.py and tests/test_cli_evaluate.py both need the Dabancheng run (~6-10 s on 2 cores);
# these fixtures run it once. They skip with a reason when the shared folder is absent.

@pytest.fixture(scope="session")
def dabancheng_result() -> dict:
    """``evaluate_dabancheng(DABANCHENG_ROOT, pairs=False)``: the AOI run scored (treat as read-only)."""
    from pipeline.evaluate.cases import DABANCHENG_ROOT, evaluate_dabancheng

    if not DABANCHENG_ROOT.is_dir():
        pytest.skip(f"shared Dabancheng scenes not found at {DABANCHENG_ROOT}")
    return evaluate_dabancheng(DABANCHENG_ROOT, pairs=False)


@pytest.fixture(scope="session")
def dabancheng_pairs_result() -> list:
    """``dabancheng_pairs(DABANCHENG_ROOT)``: the data README's two compare pairs scored (read-only)."""
    from pipeline.evaluate.cases import DABANCHENG_ROOT, dabancheng_pairs

    if not DABANCHENG_ROOT.is_dir():
        pytest.skip(f"shared Dabancheng scenes not found at {DABANCHENG_ROOT}")
    return dabancheng_pairs(DABANCHENG_ROOT)
