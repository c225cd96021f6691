"""Compiled kernels of the block-wise detector and the fast binary closing, against scipy references."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from pipeline.detect._kernels import upsample2_kernel
from pipeline.flag import close_gaps


@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (4, 3), (37, 23)])
def test_upsample2_equals_ndimage_zoom(shape: tuple[int, int]) -> None:
    raw = np.random.default_rng(3).integers(1, 10000, shape).astype(np.uint16)
    out = np.empty((2 * shape[0], 2 * shape[1]), np.float32)
    upsample2_kernel(raw, out)
    ref = ndimage.zoom(raw.astype(np.float32), 2, order=1, mode="nearest", grid_mode=True)
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-3)


def test_upsample2_spreads_nodata_to_every_pixel_it_touches() -> None:
    raw = np.full((5, 5), 1000, np.uint16)
    raw[2, 2] = 0  # one no-data source pixel
    out = np.empty((10, 10), np.float32)
    upsample2_kernel(raw, out)
    zero = out == 0
    # its own 2x2 output pixels and the ring of output pixels whose bilinear stencil reaches it: 4x4
    assert zero.sum() == 16 and zero[3:7, 3:7].all()
    assert np.allclose(out[~zero], 1000)


def test_close_gaps_equals_ndimage_closing_with_padding() -> None:
    rng = np.random.default_rng(0)
    square = np.ones((3, 3), bool)
    for shape, p in [((1, 1), 0.5), ((1, 7), 0.5), ((3, 3), 0.6), ((40, 57), 0.3), ((120, 90), 0.05)]:
        for _ in range(10):
            m = rng.random(shape) < p
            ref = ndimage.binary_closing(np.pad(m, 1), structure=square)[1:-1, 1:-1] | m
            np.testing.assert_array_equal(close_gaps(m), ref)


def test_pair_magnitude_on_uint16_dn_equals_float_reflectance() -> None:
    from pipeline.detect.chunked import pair_magnitude

    bands = ["B02", "B03", "B04", "B08", "B11", "B12"]
    rng = np.random.default_rng(5)
    dn_b = rng.integers(1, 6000, (6, 20, 30)).astype(np.uint16)
    dn_a = rng.integers(1, 6000, (6, 20, 30)).astype(np.uint16)
    dn_a[2, 3, 4] = 0  # no data in one band of AFTER
    refl_b, refl_a = dn_b / np.float32(1e4), dn_a / np.float32(1e4)
    refl_a[dn_a == 0] = np.nan
    mag_f, valid_f, green_f = pair_magnitude(refl_b.astype(np.float32), refl_a.astype(np.float32), bands, 0.3)
    mag_u, valid_u, green_u = pair_magnitude(dn_b, dn_a, bands, 0.3, scale=1e-4, zero_is_nodata=True)
    np.testing.assert_array_equal(valid_u, valid_f)
    assert not valid_u[3, 4] and valid_u.sum() == 20 * 30 - 1
    np.testing.assert_array_equal(green_u, green_f)
    np.testing.assert_allclose(mag_u, mag_f, rtol=1e-5, atol=1e-6)


def test_trim_heap_uses_glibc_malloc_trim_where_available(monkeypatch: pytest.MonkeyPatch) -> None:
    import platform

    from pipeline.scan import _memory
    from pipeline.scan._memory import _malloc_trim, trim_heap

    glibc = platform.libc_ver()[0] == "glibc"
    assert (_malloc_trim() is not None) == glibc
    big = [np.ones(1 << 15) for _ in range(64)]  # 16 MiB of 256 KiB arrays, freed before the trim
    del big
    released = trim_heap()  # the real call: True when glibc handed pages back
    if not glibc:
        assert released is False
    # what trim_heap reports: malloc_trim's "memory was released" (1 / 0), False without glibc
    monkeypatch.setattr(_memory, "_malloc_trim", lambda: lambda pad: 1)
    assert trim_heap() is True
    monkeypatch.setattr(_memory, "_malloc_trim", lambda: lambda pad: 0)
    assert trim_heap() is False
    monkeypatch.setattr(_memory, "_malloc_trim", lambda: None)
    assert trim_heap() is False
