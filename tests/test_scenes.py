"""Tests for pipeline.fetch.scenes: reading multiband files and band folders, aligning, writing change rasters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
from affine import Affine

from pipeline.errors import BandError, CompoundwatchError, InputFileError, NotARasterError
from pipeline.fetch.scenes import align, band_files, canonical_band, read_scene, scene_date, write_change_raster

T10 = Affine(10.0, 0, 500000.0, 0, -10.0, 4000000.0)  # 10 m grid, UTM 31N
EPSG = 32631


def _dn(n_bands: int, size: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(500, 4000, (n_bands, size, size)).astype(np.uint16)


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("B02", "B02"), ("B2", "B02"), ("b02", "B02"), ("B02 (490 nm)", "B02"), ("Band 8", None),
        ("b8a_865nm", "B8A"), ("B8A", "B8A"), ("b8a (865 nm)", "B8A"), ("B11", "B11"), ("B12", "B12"),
        ("SCL", None), ("B13", None), ("", None), ("Blue", None),
    ],
)
def test_canonical_band(label: str, expected: str | None) -> None:
    assert canonical_band(label) == expected


def test_multiband_with_descriptions(tmp_path: Path, write_raster) -> None:
    dn = _dn(5)
    dn[1, 3, 4] = 0  # no data
    path = write_raster(
        tmp_path / "scene.tif", dn, EPSG, T10, descriptions=["B2", "b03", "B04 (665 nm)", "B8", "SCL"]
    )
    da = read_scene(path)
    assert da.dims == ("band", "y", "x")
    assert da.dtype == np.float32
    assert list(da["band"].values) == ["B02", "B03", "B04", "B08"]  # the SCL layer is not a band
    assert da.shape == (4, 64, 64)
    np.testing.assert_allclose(da.sel(band="B04").values, dn[2] / 10000, rtol=1e-6)
    assert np.isnan(da.sel(band="B03").values[3, 4])
    assert np.isfinite(da.values).sum() == 4 * 64 * 64 - 1
    assert da.rio.crs.to_epsg() == EPSG
    assert da.rio.transform().almost_equals(T10)
    assert float(da["x"][0]) == 500005.0 and float(da["y"][0]) == 3999995.0


def test_multiband_band_selection_order(tmp_path: Path, write_raster) -> None:
    path = write_raster(tmp_path / "s.tif", _dn(4), EPSG, T10, descriptions=["B02", "B03", "B04", "B08"])
    da = read_scene(path, bands=["B08", "b4", "B03", "B02"])
    assert list(da["band"].values) == ["B08", "B04", "B03", "B02"]
    with pytest.raises(BandError, match="B11"):
        read_scene(path, bands=["B02", "B03", "B04", "B08", "B11"])


@pytest.mark.parametrize("descriptions", [None, ["Band 1", "Band 2", "Band 3", "Band 4"]])
def test_multiband_without_descriptions_needs_bands(tmp_path: Path, write_raster, descriptions) -> None:
    dn = _dn(4)
    path = write_raster(tmp_path / "nodesc.tif", dn, EPSG, T10, descriptions=descriptions)
    da = read_scene(path, bands=["B08", "B04", "B03", "B02"])
    assert list(da["band"].values) == ["B08", "B04", "B03", "B02"]
    np.testing.assert_allclose(da.sel(band="B08").values, dn[0] / 10000, rtol=1e-6)
    with pytest.raises(BandError, match="without band descriptions"):
        read_scene(path)
    with pytest.raises(BandError, match="has 4 band"):
        read_scene(path, bands=["B02", "B03", "B04"])
    with pytest.raises(BandError, match="not a Sentinel-2 band"):
        read_scene(path, bands=["B02", "B03", "B04", "NIR"])


def test_float_reflectance_kept_and_nodata(tmp_path: Path, write_raster) -> None:
    refl = np.full((4, 16, 16), 0.25, np.float32)
    refl[0, 0, 0] = -9999.0
    path = write_raster(
        tmp_path / "refl.tif", refl, EPSG, T10, descriptions=["B02", "B03", "B04", "B08"], nodata=-9999.0
    )
    da = read_scene(path)
    assert np.isnan(da.values[0, 0, 0])
    assert np.nanmax(da.values) == pytest.approx(0.25)
    assert np.nanmin(da.values) == pytest.approx(0.25)


def test_boa_add_offset_tag_applied(tmp_path: Path, write_raster) -> None:
    dn = np.full((4, 8, 8), 2000, np.uint16)
    path = write_raster(
        tmp_path / "l2a.tif", dn, EPSG, T10, descriptions=["B02", "B03", "B04", "B08"],
        tags={"BOA_ADD_OFFSET": "-1000"},
    )
    da = read_scene(path)
    np.testing.assert_allclose(da.values, 0.1, rtol=1e-6)
    assert da.attrs["boa_add_offset"] == -1000


def test_folder_with_10m_and_20m_bands(tmp_path: Path, write_raster) -> None:
    folder = tmp_path / "S2B_MSIL1C_20210615T103629_T31TFJ"
    dn = _dn(4)
    for i, b in enumerate(["B02", "B03", "B04", "B08"]):
        write_raster(folder / f"T31TFJ_20210615T103629_{b}.tif", dn[i], EPSG, T10)
    # 20 m B11: a ramp along x (100 DN per 20 m pixel), half the rows/cols, same top-left corner
    ramp = (1000 + 100 * np.arange(32, dtype=np.float64))[None, :].repeat(32, axis=0).astype(np.uint16)
    write_raster(folder / "T31TFJ_20210615T103629_B11.tif", ramp, EPSG, T10 @ Affine.scale(2))
    (folder / "readme.txt").write_text("not a band")
    (folder / "T31TFJ_20210615T103629_TCI.tif").write_bytes(b"ignored: no band name")

    da = read_scene(folder)
    assert list(da["band"].values) == ["B02", "B03", "B04", "B08", "B11"]
    assert da.shape == (5, 64, 64)  # B11 up-sampled onto the 10 m grid
    assert da.rio.transform().almost_equals(T10)
    np.testing.assert_allclose(da.sel(band="B02").values, dn[0] / 10000, rtol=1e-6)
    # bilinear: a 10 m pixel centre at column j lies at 20 m pixel coordinate j/2 - 0.25
    j = np.arange(4, 60)
    expected = (1000 + 100 * (j / 2 - 0.25)) / 10000
    np.testing.assert_allclose(da.sel(band="B11").values[10, 4:60], expected, atol=2e-4)
    assert da.attrs["date"] == "2021-06-15"
    assert da.attrs["scene_id"] == folder.name

    sub = read_scene(folder, bands=["B02", "B03", "B04", "B08"])
    assert list(sub["band"].values) == ["B02", "B03", "B04", "B08"]
    with pytest.raises(BandError, match="B12"):
        read_scene(folder, bands=["B02", "B03", "B04", "B08", "B12"])


def test_folder_with_jp2_and_tiff_extensions(tmp_path: Path, write_raster) -> None:
    folder = tmp_path / "T31UDQ_20170829"
    dn = _dn(5, size=32)
    write_raster(folder / "x_B02.TIF", dn[0], EPSG, T10)
    write_raster(folder / "x_B03.tiff", dn[1], EPSG, T10)
    write_raster(folder / "x_B04.tif", dn[2], EPSG, T10)
    lossless = {"driver": "JP2OpenJPEG", "QUALITY": "100", "REVERSIBLE": "YES"}
    write_raster(folder / "x_B08.jp2", dn[3], EPSG, T10, **lossless)
    write_raster(folder / "x_B8A.jp2", dn[4, :16, :16], EPSG, T10 @ Affine.scale(2), **lossless)
    da = read_scene(folder)
    assert list(da["band"].values) == ["B02", "B03", "B04", "B08", "B8A"]
    assert da.shape == (5, 32, 32)
    np.testing.assert_allclose(da.sel(band="B08").values, dn[3] / 10000, rtol=1e-6)  # lossless JPEG 2000
    assert np.isfinite(da.sel(band="B8A").values).all()
    assert da.attrs["date"] == "2017-08-29"


def test_missing_path_raises_input_file_error(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="does not exist"):
        read_scene(tmp_path / "nope.tif")


def test_text_file_is_not_a_raster(tmp_path: Path) -> None:
    path = tmp_path / "notes.tif"
    path.write_text("hello, I am text\n")
    with pytest.raises(NotARasterError, match="is not a raster GDAL can read"):
        read_scene(path)


def test_raster_without_crs(tmp_path: Path, write_raster) -> None:
    path = write_raster(tmp_path / "plain.tif", _dn(4, size=8), None, Affine.identity(),
                        descriptions=["B02", "B03", "B04", "B08"])
    with pytest.raises(NotARasterError, match="no coordinate reference system"):
        read_scene(path)


def test_empty_folder_and_missing_bands(tmp_path: Path, write_raster) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BandError, match="no band files"):
        read_scene(empty)
    folder = tmp_path / "partial"
    for b in ("B02", "B03", "B04"):
        write_raster(folder / f"x_{b}.tif", _dn(1)[0], EPSG, T10)
    with pytest.raises(BandError) as err:
        read_scene(folder)
    msg = str(err.value)
    assert "B08" in msg and "found: B02, B03, B04" in msg
    assert isinstance(err.value, CompoundwatchError)


def test_duplicated_band_in_folder(tmp_path: Path, write_raster) -> None:
    folder = tmp_path / "dup"
    for b in ("B02", "B03", "B04", "B08"):
        write_raster(folder / f"a_{b}.tif", _dn(1)[0], EPSG, T10)
    write_raster(folder / "b_B2.tif", _dn(1)[0], EPSG, T10)
    with pytest.raises(BandError, match="two files for band B02"):
        read_scene(folder)


def test_folder_with_unreadable_band_file(tmp_path: Path, write_raster) -> None:
    folder = tmp_path / "broken"
    for b in ("B02", "B03", "B04"):
        write_raster(folder / f"a_{b}.tif", _dn(1)[0], EPSG, T10)
    (folder / "a_B08.tif").write_text("oops")
    with pytest.raises(NotARasterError, match="a_B08.tif is not a raster"):
        read_scene(folder)


def test_band_files_list_a_folder_without_reading_it(tmp_path: Path, write_raster) -> None:
    folder = tmp_path / "S2_20210615"
    for b in ("B08", "B02", "B04", "B03", "B11"):
        write_raster(folder / f"T31_{b}.tif", _dn(1)[0], EPSG, T10)
    (folder / "T31_B12.tif").write_text("not read: only listed")
    files = band_files(folder)
    assert list(files) == ["B02", "B03", "B04", "B08", "B11", "B12"]  # band order
    assert files["B08"] == folder / "T31_B08.tif"
    assert list(band_files(folder, ["B04", "b2", "B03", "B08"])) == ["B04", "B02", "B03", "B08"]
    assert scene_date(folder / "T31_B02.tif") == "2021-06-15" == scene_date(folder)  # from the folder name
    with pytest.raises(BandError, match="B99"):
        band_files(folder, required=("B02", "B99"))
    with pytest.raises(InputFileError, match="is not a folder"):
        band_files(folder / "T31_B02.tif")


def _scene(values: np.ndarray, transform: Affine, epsg: int) -> xr.DataArray:
    h, w = values.shape[1:]
    x = transform.c + transform.a * (np.arange(w) + 0.5)
    y = transform.f + transform.e * (np.arange(h) + 0.5)
    da = xr.DataArray(values.astype(np.float32), dims=("band", "y", "x"),
                      coords={"band": ["B02", "B03", "B04", "B08"][: values.shape[0]], "y": y, "x": x})
    return da.rio.write_crs(epsg).rio.write_transform(transform)


def test_align_onto_other_grid() -> None:
    before = _scene(np.zeros((2, 40, 40)), T10, EPSG)
    # AFTER: 20 m pixels, origin shifted by 100 m east, covering only part of BEFORE; a plane in x
    t_after = Affine(20.0, 0, 500100.0, 0, -20.0, 4000000.0)
    xa = t_after.c + 20 * (np.arange(30) + 0.5)
    plane = ((xa - 500000) / 10000)[None, None, :].repeat(30, axis=1).repeat(2, axis=0)
    after = _scene(plane, t_after, EPSG)
    out = align(after, before)
    assert out.shape == (2, 40, 40)
    assert out.rio.crs.to_epsg() == EPSG
    np.testing.assert_array_equal(out["x"].values, before["x"].values)
    np.testing.assert_array_equal(out["y"].values, before["y"].values)
    assert np.isnan(out.values[:, :, :10]).all()  # west of AFTER's footprint
    inner = out.values[0, 5:35, 12:39]
    xb = before["x"].values[12:39]
    np.testing.assert_allclose(inner, ((xb - 500000) / 10000)[None, :].repeat(30, axis=0), atol=1e-5)


def test_align_across_utm_zones() -> None:
    before = _scene(np.zeros((1, 32, 32)), Affine(10.0, 0, 736000.0, 0, -10.0, 4987000.0), 32631)
    after_in_32 = _scene(np.full((1, 60, 60), 0.3), Affine(10.0, 0, 263000.0, 0, -10.0, 4987300.0), 32632)
    out = align(after_in_32, before)
    assert out.rio.crs.to_epsg() == 32631 and out.shape == (1, 32, 32)
    assert np.isfinite(out.values).any()
    np.testing.assert_allclose(out.values[np.isfinite(out.values)], 0.3, rtol=1e-6)


def test_write_change_raster(tmp_path: Path) -> None:
    grid = _scene(np.zeros((1, 16, 24)), T10, EPSG).isel(band=0, drop=True)
    change = xr.zeros_like(grid, dtype=bool)
    change[2:5, 3:7] = True
    valid = xr.ones_like(grid, dtype=bool)
    valid[10:, :] = False
    valid[3, 3] = False
    out = write_change_raster(change, valid, tmp_path / "sub" / "change.tif")
    assert out == tmp_path / "sub" / "change.tif"
    with rasterio.open(out) as src:
        assert src.dtypes[0] == "uint8" and src.nodata == 255
        assert (src.width, src.height) == (24, 16)
        assert src.crs.to_epsg() == EPSG and src.transform.almost_equals(T10)
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert src.compression.value.upper() == "DEFLATE"
        arr = src.read(1)
    assert set(np.unique(arr)) == {0, 1, 255}
    assert (arr == 1).sum() == 12 - 1  # 3×4 change block minus the invalid pixel
    assert arr[3, 3] == 255 and (arr[10:] == 255).all()
    assert (arr == 0).sum() == 16 * 24 - 11 - (6 * 24 + 1)
