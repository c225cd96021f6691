"""Local fetcher: tiny GeoTIFFs written to tmp_path, and the real Dabancheng scenes in ../shared/data."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from pipeline.config import LocalSettings
from pipeline.errors import InputFileError
from pipeline.fetch import FetchRequest
from pipeline.fetch.local import LocalFetcher
from pipeline.grid import GridSpec
from pipeline.sites import get_site

REPO = Path(__file__).resolve().parents[1]
DABANCHENG = REPO.parent / "shared" / "data" / "xinjiang_dabancheng"
EPSG = 32645
GRID = GridSpec(EPSG, (10.0, 0.0, 600000.0, 0.0, -10.0, 4800000.0), (20, 24))
T10 = Affine(10, 0, 599900, 0, -10, 4800100)  # 10 px margin around GRID, pixel-aligned


def req(bands=("B02", "B04", "B08")) -> FetchRequest:
    return FetchRequest("local-test", GRID, dt.date(2021, 1, 1), dt.date(2022, 12, 31), tuple(bands))


@pytest.fixture
def folder(tmp_path: Path, write_raster) -> Path:
    shape = (40, 44)
    ones = np.ones(shape, np.uint16)
    # 1) multiband L2A file, bands by description, baseline 04.00 offset in the tags
    write_raster(tmp_path / "S2B_MSIL2A_20220610T050659_N0400.tif",
                 np.stack([ones * 2100, ones * 2400, ones * 3200]), EPSG, T10,
                 descriptions=["B02", "B04", "B08"], tags={"BOA_ADD_OFFSET": "-1000"})
    # 2) RGB file without descriptions (band_order B04,B03,B02), date with dashes in the name
    write_raster(tmp_path / "rgb_2021-05-03.tif", np.stack([ones * 900, ones * 800, ones * 700]), EPSG, T10)
    # 3) band folder with an all-cloud SCL -> skipped
    d = tmp_path / "S2A_20210801"
    for b in ("B02", "B04", "B08"):
        write_raster(d / f"T45_{b}.tif", ones * 1500, EPSG, T10)
    write_raster(d / "T45_SCL.tif", np.full((20, 22), 9, np.uint8), EPSG, Affine(20, 0, 599900, 0, -20, 4800100))
    # 4) a scene far away from the grid -> skipped
    write_raster(tmp_path / "far_20210901.tif", np.stack([ones] * 3), EPSG, Affine(10, 0, 700000, 0, -10, 4900000),
                 descriptions=["B02", "B04", "B08"])
    return tmp_path


def test_local_folder_to_cube(folder: Path) -> None:
    s = LocalSettings(path=folder, pattern=("*.tif", "S2A_*"), band_order=("B04", "B03", "B02"))
    ds = LocalFetcher(s).fetch(req())
    assert [str(t)[:10] for t in ds.time.values] == ["2021-05-03", "2022-06-10"]
    assert sorted(ds.attrs["skipped"]) == [
        "2021-08-01 S2A_20210801: no clear pixel over the AOI",
        "2021-09-01 far_20210901: scene does not cover the AOI",
    ]
    assert ds.sizes == {"time": 2, "band": 3, "y": 20, "x": 24}
    assert ds["reflectance"].dtype == np.uint16 and ds["scl"].dtype == np.uint8
    assert ds.rio.crs.to_epsg() == EPSG and tuple(ds.rio.transform())[:6] == GRID.transform
    r = ds["reflectance"]
    # RGB file: B02 is its 3rd band, B04 its 1st; no B08 -> 0 (no data)
    assert int(r.sel(band="B02").values[0, 5, 5]) == 700 and int(r.sel(band="B04").values[0, 5, 5]) == 900
    assert (r.sel(band="B08").values[0] == 0).all()
    # L2A file: BOA_ADD_OFFSET already removed by read_scene -> harmonised DNs, offset coordinate 0
    assert int(r.sel(band="B02").values[1, 5, 5]) == 1100 and int(r.sel(band="B08").values[1, 0, 0]) == 2200
    assert list(ds.boa_add_offset.values) == [0, 0]
    assert (ds["scl"].values == 7).all()  # SCL-like: clear where data


def test_local_dn_scale_for_8bit_exports(tmp_path: Path, write_raster) -> None:
    write_raster(tmp_path / "x_20210505.tif", np.full((3, 40, 44), 51, np.uint8), EPSG, T10,
                 descriptions=["B02", "B03", "B04"])
    s = LocalSettings(path=tmp_path, pattern="*.tif", dn_scale=10000 / 255)
    ds = LocalFetcher(s).fetch(req(("B02", "B03", "B04")))
    assert int(ds["reflectance"].values[0, 0, 3, 3]) == 2000  # 51/255 = reflectance 0.2


def test_local_missing_folder_is_explained(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="not a folder"):
        LocalFetcher(LocalSettings(path=tmp_path / "nope")).fetch(req())
    with pytest.raises(InputFileError, match="no scenes match"):
        LocalFetcher(LocalSettings(path=tmp_path, pattern="*.jp2")).fetch(req())


@pytest.mark.shared_data
@pytest.mark.skipif(not DABANCHENG.is_dir(), reason=f"shared data {DABANCHENG} is absent")
def test_local_dabancheng_facility_1() -> None:
    site = get_site(REPO / "configs" / "dabancheng_sites.geojson", "dabancheng-1")
    s = LocalSettings(
        path=DABANCHENG, pattern=("s2_l1c_truecolor_georef/S2_L1C_truecolor_*.tif", "s2_l2a_*"),
        band_order=("B04", "B03", "B02"), dn_scale=10000 / 255,
    )
    request = FetchRequest(site.site_id, site.grid(10.0), dt.date(2017, 1, 1), dt.date(2020, 12, 31),
                           ("B02", "B03", "B04", "B08"))
    ds = LocalFetcher(s).fetch(request)
    days = [str(t)[:10] for t in ds.time.values]
    assert len(days) == 13 and days[0] == "2017-03-02" and days[-2] == "2018-10-11" and days[-1] == "2020-06-02"
    assert ds.rio.crs.to_epsg() == 32645 and ds.sizes["y"] == site.grid().shape[0]
    rgb = ds["reflectance"].sel(band=["B02", "B03", "B04"]).values
    assert (rgb > 0).mean() > 0.99  # every scene covers the site
    b08 = ds["reflectance"].sel(band="B08").values
    assert (b08[:-1] == 0).all() and (b08[-1] > 0).mean() > 0.99  # NIR exists only in 2020
    # the compound was built between 2017-06-10 and 2018-10-11: the ASPI point changed more than the median pixel
    from pyproj import Transformer

    x, y = Transformer.from_crs(4326, 32645, always_xy=True).transform(88.289936, 43.383850)
    diff = np.abs(rgb[days.index("2018-10-11")].astype(float) - rgb[days.index("2017-06-10")]).sum(axis=0)
    iy = int(np.argmin(np.abs(ds.y.values - y)))
    ix = int(np.argmin(np.abs(ds.x.values - x)))
    assert diff[iy - 2 : iy + 3, ix - 2 : ix + 3].mean() > np.median(diff)
