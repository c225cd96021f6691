"""STAC fetcher: the real pystac-client + odc-stac (GDAL /vsicurl) against a loopback STAC API serving
small COGs (tests/fakes/stac_api.py). No internet."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import rasterio
from affine import Affine
from fakes.stac_api import FakeStacApi

from pipeline.config import StacSettings
from pipeline.errors import FetchError
from pipeline.fetch import FetchRequest
from pipeline.fetch.stac import StacFetcher
from pipeline.grid import GridSpec, to_crs

EPSG = 32645
GRID = GridSpec(EPSG, (10.0, 0.0, 500100.0, 0.0, -10.0, 4799900.0), (24, 32))
# the COGs cover a larger, pixel-aligned area: 10 px more on each side
SRC_LEFT, SRC_TOP, SRC_SHAPE = 500000.0, 4800000.0, (44, 52)
ASSETS = {"B02": "blue", "B04": "red", "B08": "nir"}
NUM = {"B02": 2, "B04": 4, "B08": 8}


def source_dn(band: str, day: dt.date) -> np.ndarray:
    rows = np.arange(SRC_SHAPE[0]) % 5
    cols = np.arange(SRC_SHAPE[1]) % 3
    return (1000 + 37 * NUM[band] + day.day + rows[:, None] + 10 * cols[None, :]).astype(np.uint16)


def write_cog(path: Path, arr: np.ndarray, res: float) -> None:
    with rasterio.open(path, "w", driver="COG", width=arr.shape[1], height=arr.shape[0], count=1,
                       dtype=arr.dtype.name, crs=f"EPSG:{EPSG}", nodata=0,
                       transform=Affine(res, 0, SRC_LEFT, 0, -res, SRC_TOP)) as dst:
        dst.write(arr, 1)


def make_items(root: Path) -> list[dict]:
    from shapely.geometry import box, mapping

    left, top = SRC_LEFT, SRC_TOP
    foot = to_crs(box(left, top - 10 * SRC_SHAPE[0], left + 10 * SRC_SHAPE[1], top), EPSG, 4326)
    specs = [  # date, cloud %, cloudy SCL, extra properties
        (dt.date(2021, 11, 5), 4.0, False, {"s2:processing_baseline": "03.01"}),
        (dt.date(2022, 1, 20), 30.0, True, {"s2:processing_baseline": "03.01"}),
        (dt.date(2022, 2, 9), 8.0, False, {"s2:processing_baseline": "04.00"}),
        (dt.date(2022, 2, 14), 90.0, False, {"s2:processing_baseline": "04.00"}),
        (dt.date(2022, 3, 3), 6.0, False, {"s2:processing_baseline": "04.00", "earthsearch:boa_offset_applied": True}),
    ]
    items = []
    for day, cc, cloudy, props in specs:
        sid = f"S2A_45TVK_{day:%Y%m%d}_0_L2A"
        assets = {}
        for band, key in ASSETS.items():
            write_cog(root / f"{sid}_{key}.tif", source_dn(band, day), 10.0)
            assets[key] = {"href": f"/data/{sid}_{key}.tif",
                           "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                           "roles": ["data"]}
        scl = np.full((SRC_SHAPE[0] // 2, SRC_SHAPE[1] // 2), 9 if cloudy else 5, np.uint8)
        write_cog(root / f"{sid}_scl.tif", scl, 20.0)
        assets["scl"] = {"href": f"/data/{sid}_scl.tif", "type": "image/tiff", "roles": ["data"]}
        when = dt.datetime.combine(day, dt.time(5, 10))
        items.append({"id": sid, "bbox": list(foot.bounds), "geometry": mapping(foot),
                      "properties": {"datetime": when.isoformat() + "Z", "eo:cloud_cover": cc, "proj:epsg": EPSG,
                                     **props},
                      "assets": assets})
    return items


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    root = tmp_path_factory.mktemp("cogs")
    with FakeStacApi("sentinel-2-l2a", make_items(root), root, page_size=2) as server:
        yield server


def req(bands=("B02", "B04", "B08")) -> FetchRequest:
    return FetchRequest("stac-test", GRID, dt.date(2021, 10, 1), dt.date(2022, 3, 31), tuple(bands))


def settings(api: FakeStacApi, **kw) -> StacSettings:
    return StacSettings(url=api.url, collection="sentinel-2-l2a", max_cloud_cover=50, backoff=0.0, **kw)


def test_stac_happy_path_lazy_cube(api: FakeStacApi) -> None:
    n0 = len(api.requests_to("/search"))
    ds = StacFetcher(settings(api)).fetch(req())
    assert len(api.requests_to("/search")) - n0 >= 2  # 4 matching items, pages of 2
    assert isinstance(ds["reflectance"].data, da.Array)  # lazy until written
    assert [str(t)[:10] for t in ds.time.values] == ["2021-11-05", "2022-02-09", "2022-03-03"]
    assert ds.attrs["skipped"] == ["2022-01-20 S2A_45TVK_20220120_0_L2A: no clear pixel over the AOI"]
    assert ds.sizes == {"time": 3, "band": 3, "y": 24, "x": 32}
    assert ds["reflectance"].dtype == np.uint16 and ds["scl"].dtype == np.uint8
    assert ds.rio.crs.to_epsg() == EPSG and tuple(ds.rio.transform())[:6] == GRID.transform
    assert list(ds.boa_add_offset.values) == [0, -1000, 0]  # 03.01, 04.00, 04.00 already applied
    assert list(ds.scene_id.values)[1] == "S2A_45TVK_20220209_0_L2A"
    refl = ds["reflectance"].values
    for t, day in enumerate((dt.date(2021, 11, 5), dt.date(2022, 2, 9), dt.date(2022, 3, 3))):
        for b, band in enumerate(("B02", "B04", "B08")):
            np.testing.assert_array_equal(refl[t, b], source_dn(band, day)[10:34, 10:42])
    assert (ds["scl"].values == 5).all()


def test_stac_retries_rate_limit_then_succeeds(api: FakeStacApi) -> None:
    api.fail_next = [(429, {"Retry-After": "1"}), (503, {})]
    n0 = len(api.requests_to("/search"))
    ds = StacFetcher(settings(api, max_retries=3)).fetch(req())
    hits = api.requests_to("/search")[n0:]
    assert ds.sizes["time"] == 3
    assert hits[1]["t"] - hits[0]["t"] >= 0.95  # Retry-After: 1 s honoured although backoff is 0


def test_stac_persistent_500_is_one_clear_error(api: FakeStacApi) -> None:
    api.fail_next = [(500, {})] * 10
    try:
        with pytest.raises(FetchError, match=r"STAC API .* HTTP 500 on all 3 attempt"):
            StacFetcher(settings(api, max_retries=2)).fetch(req())
    finally:
        api.fail_next = []


def test_stac_unknown_band_asset_is_explained(api: FakeStacApi) -> None:
    with pytest.raises(FetchError, match="no asset for band B11"):
        StacFetcher(settings(api)).fetch(req(bands=("B02", "B11")))
