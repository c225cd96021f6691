"""A tiny fake OSCD folder with the real layout (see ``../shared/data/oscd/README.md``), for harness tests.

Per city: ``images/<city>/imgs_1|imgs_2/<prefix>_<band>.tif`` (13 single-band uint16 GeoTIFFs, TOA ×10000,
EPSG:4326, no nodata; 10 m bands on the full grid, 20 m bands on a half, 60 m bands on a sixth, all with
the same top-left corner), ``images/<city>/dates.txt`` and ``train_labels/<city>/cm/<city>-cm.tif`` (uint8,
1 = no change, 2 = change, no georeferencing, on the imgs_1 10 m grid). Date 2 is textured soil like date 1
plus a planted bright roof block (the label), a small gain and sensor noise; ``other_grid`` cities get date 2
on another grid (shifted by half a pixel, 2 rows and columns fewer), as abudhabi and saclay_e in the real
data.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import rasterio
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning

if TYPE_CHECKING:
    import pytest

SIZE = 72  # 10 m pixels per side (a multiple of 6, so the 20 m and 60 m grids tile it exactly)
PX = 9e-5  # 10 m pixel size in degrees (as the real EPSG:4326 tiles, about 10 m)
BANDS = {  # band -> pixel size factor (1: 10 m, 2: 20 m, 6: 60 m)
    "B01": 6, "B02": 1, "B03": 1, "B04": 1, "B05": 2, "B06": 2, "B07": 2, "B08": 1, "B8A": 2, "B09": 6,
    "B10": 6, "B11": 2, "B12": 2,
}
SOIL = {"B01": 0.08, "B02": 0.09, "B03": 0.12, "B04": 0.16, "B05": 0.19, "B06": 0.2, "B07": 0.21,
        "B08": 0.22, "B8A": 0.23, "B09": 0.05, "B10": 0.01, "B11": 0.30, "B12": 0.26}
ROOF = {"B01": 0.30, "B02": 0.42, "B03": 0.44, "B04": 0.46, "B05": 0.47, "B06": 0.47, "B07": 0.48,
        "B08": 0.48, "B8A": 0.48, "B09": 0.2, "B10": 0.02, "B11": 0.50, "B12": 0.47}


@dataclass(frozen=True)
class FakeCity:
    """Where the planted block is (rows/cols of the imgs_1 10 m grid) and how date 2 is gridded."""

    name: str
    block: tuple[slice, slice]
    other_grid: bool = False
    seed: int = 0

    @property
    def n_change(self) -> int:
        return (self.block[0].stop - self.block[0].start) * (self.block[1].stop - self.block[1].start)


CITIES = (
    FakeCity("alpha", (slice(12, 30), slice(18, 36)), seed=1),
    FakeCity("bravo", (slice(36, 54), slice(30, 48)), other_grid=True, seed=2),
    FakeCity("charlie", (slice(24, 42), slice(42, 60)), seed=3),
)


def _write(path: Path, data: np.ndarray, transform: Affine | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {"driver": "GTiff", "width": data.shape[1], "height": data.shape[0], "count": 1,
               "dtype": data.dtype, "compress": "deflate"}
    if transform is not None:
        profile.update(crs="EPSG:4326", transform=transform)
    with warnings.catch_warnings():  # the label tif has no georeferencing, as in the real data
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data, 1)


def _field(city: FakeCity, date: int, band: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Reflectance of ``band`` at pixel centres ``x``, ``y`` (10 m pixels from the imgs_1 top-left corner):
    textured soil, the roof block on date 2."""
    rng = np.random.default_rng(city.seed * 100 + date * 20 + list(BANDS).index(band))
    tex = 1 + 0.08 * np.sin(x / 3.1 + city.seed) * np.cos(y / 4.3) + 0.05 * np.sin((x + 2 * y) / 7.0)
    refl = SOIL[band] * tex * (1.04 if date == 2 else 1.0)
    if date == 2:
        rows, cols = city.block
        inside = (y >= rows.start) & (y < rows.stop) & (x >= cols.start) & (x < cols.stop)
        refl = np.where(inside, ROOF[band], refl)
    return refl + rng.normal(0, 0.004, refl.shape)


def write_city(root: Path, city: FakeCity, lon0: float = 10.0, lat0: float = 45.0) -> None:
    """Write one fake city under ``root`` (images/ and train_labels/)."""
    img = root / "images" / city.name
    for date in (1, 2):
        shift = 0.5 * PX if (date == 2 and city.other_grid) else 0.0
        size = SIZE - 2 if (date == 2 and city.other_grid) else SIZE
        for band, k in BANDS.items():
            n = -(-size // k)
            px = PX * k
            centres = (shift + (np.arange(n) + 0.5) * px) / PX
            x, y = np.meshgrid(centres, centres)
            dn = np.clip(_field(city, date, band, x, y) * 10000, 1, 65535).astype(np.uint16)
            stamp = "20160101T000000" if date == 1 else "20180101T000000"
            name = f"S2A_OPER_MSI_L1C_TL_FAKE__{stamp}_A000000_T32TMR_{band}.tif"
            _write(img / f"imgs_{date}" / name, dn, Affine(px, 0, lon0 + shift, 0, -px, lat0 - shift))
    (img / "dates.txt").write_text("date_1: 20160101\ndate_2: 20180101\n")
    label = np.ones((SIZE, SIZE), np.uint8)
    label[city.block] = 2
    _write(root / "train_labels" / city.name / "cm" / f"{city.name}-cm.tif", label, None)


def write_holdout_decoy(root: Path, name: str = "beirut") -> None:
    """A folder named like a hold-out city whose files are not rasters: reading any of them would fail."""
    for rel in (f"images/{name}/imgs_1/x_B02.tif", f"images/{name}/imgs_2/x_B02.tif",
                f"train_labels/{name}/cm/{name}-cm.tif"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"not a raster")


def write_fake_oscd(root: Path, cities: tuple[FakeCity, ...] = CITIES, decoy: bool = True) -> Path:
    """A fake OSCD folder under ``root`` with ``cities`` (and a hold-out decoy); returns ``root``."""
    for i, city in enumerate(cities):
        write_city(root, city, lon0=10.0 + i, lat0=45.0)
    if decoy:
        write_holdout_decoy(root)
    (root / "README.md").write_text("fake OSCD for tests\n")
    return root


def spy_rasterio_open(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every path opened with ``rasterio.open`` (the list fills as the code under test reads)."""
    opened: list[str] = []
    real = rasterio.open

    def spy(path: object, *args: object, **kw: object) -> object:
        opened.append(str(path))
        return real(path, *args, **kw)

    monkeypatch.setattr(rasterio, "open", spy)
    return opened
