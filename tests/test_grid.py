"""Pure grid maths: UTM zones, snapped site grids, tiles; and the core imports no I/O library."""

from __future__ import annotations

import subprocess
import sys

import pytest
from shapely.geometry import box

from pipeline.grid import grid_for_geometry, tiles, utm_epsg


def test_utm_zone_codes():
    assert utm_epsg(88.3, 43.36) == 32645
    assert utm_epsg(2.35, 48.85) == 32631
    assert utm_epsg(-70.6, -33.4) == 32719
    with pytest.raises(ValueError):
        utm_epsg(10.0, 85.0)


def test_site_grid_is_snapped_and_covers_the_site():
    site = box(88.30, 43.36, 88.337, 43.387)
    g = grid_for_geometry(site, 10.0)
    assert g.epsg == 32645
    left, bottom, right, top = g.bounds
    assert all(v % 10 == 0 for v in (left, bottom, right, top))
    assert g.shape == (round((top - bottom) / 10), round((right - left) / 10))
    assert g.pixel_area == 100.0
    y, x = g.coords()
    assert x[0] == left + 5 and y[0] == top - 5 and len(x) == g.shape[1]


def test_tiles_cover_the_grid_once():
    ts = tiles((300, 520), 256)
    assert len(ts) == 2 * 3
    assert sum((r.stop - r.start) * (c.stop - c.start) for r, c in ts) == 300 * 520


_IO = ("rasterio", "rioxarray", "sentinelhub", "zarr", "pystac_client", "odc", "geopandas", "pyogrio")


def _loaded_after_import(modules: str, watch: tuple[str, ...]) -> list[str]:
    """Which of ``watch`` a fresh interpreter has loaded after ``import <modules>``."""
    code = f"import sys, {modules}; print(','.join(sorted(m for m in {watch!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    return [m for m in out.split(",") if m]


def test_core_imports_no_io_library():
    # the pure core: grid maths, tiling, errors, settings, scores: no raster/network library, no xarray/dask
    core = "pipeline.grid, pipeline.errors, pipeline.config, pipeline.scan.tiling, pipeline.evaluate.metrics"
    assert _loaded_after_import(core, (*_IO, "xarray", "dask")) == []


def test_detectors_import_no_io_library():
    # detectors take and return DataArrays (xarray, dask allowed) and never open files
    assert _loaded_after_import("pipeline.detect, pipeline.detect.chunked", _IO) == []
    assert _loaded_after_import("pipeline.detect", ("xarray",)) == ["xarray"]  # the check itself can fail
