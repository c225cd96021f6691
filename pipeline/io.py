"""Zarr read/write helpers for the per-site cubes (scene cubes, tiles and detection outputs).

One store per site. Arrays are chunked whole along every non-spatial dimension (``time``, ``band``) and in
square ``tile_size`` × ``tile_size`` pixel blocks along ``y``/``x``, so a site is a handful of files. The
rioxarray CRS (the ``spatial_ref`` coordinate), the affine transform and per-date coordinates such as
``scene_id`` and ``boa_add_offset`` survive the round trip.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr

from pipeline.errors import InputFileError

__all__ = ["write_cube", "read_cube"]

_SPATIAL = ("y", "x")
_GRID_MAPPING = "spatial_ref"
_ZARR_FORMAT = 2  # v2 stores fixed-length strings (scene ids, band names) without "unstable dtype" warnings


def _chunks(ds: xr.Dataset, tile_size: int) -> dict[str, int]:
    return {str(dim): (min(tile_size, n) if dim in _SPATIAL else n) for dim, n in ds.sizes.items()}


def write_cube(ds: xr.Dataset, path: str | Path, tile_size: int = 256) -> Path:
    """Write ``ds`` to a zarr store at ``path``, atomically, replacing any existing store.

    Parameters
    ----------
    ds
        Dataset with ``y``/``x`` dimensions (metres of a projected CRS) and a rioxarray CRS.
    path
        Target store (conventionally ``*.zarr``). Written to ``<path>.tmp`` first, then renamed.
    tile_size
        Chunk edge in pixels along ``y`` and ``x``; other dimensions are stored as one chunk.

    Returns
    -------
    pathlib.Path
        The written store.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    if tmp.exists():
        shutil.rmtree(tmp)

    out = ds.copy()
    crs = ds.rio.crs
    if crs is not None and _GRID_MAPPING not in out.coords:
        out = out.rio.write_crs(crs)  # CRS found elsewhere (e.g. an attribute): store it as spatial_ref
    for name in out.variables:
        # chunks are set below; stale encodings from the source store would fight them
        for key in ("chunks", "preferred_chunks", "compressor", "compressors", "filters", "serializer"):
            out[name].encoding.pop(key, None)
        if crs is not None and name in out.data_vars and set(_SPATIAL) <= set(out[name].dims):
            out[name].attrs.pop("grid_mapping", None)
            out[name].encoding["grid_mapping"] = _GRID_MAPPING
    out = out.chunk(_chunks(out, tile_size))
    out.to_zarr(tmp, mode="w", zarr_format=_ZARR_FORMAT, consolidated=True)
    # swap by renames: at every moment either the old store or the new one is complete under a known name
    old = path.with_name(path.name + ".old")
    if old.exists():
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    if old.exists():
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    return path


def read_cube(path: str | Path) -> xr.Dataset:
    """Open a store written by :func:`write_cube` lazily (dask arrays), with its CRS restored.

    Raises
    ------
    InputFileError
        If ``path`` does not exist or is not a zarr store.
    """
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path} not found; run `dvc repro` or `compoundwatch fetch` first")
    try:
        ds = xr.open_zarr(path, consolidated=None)
    except Exception as err:  # zarr raises several types for damaged or foreign stores
        raise InputFileError(
            f"{path} is not a readable zarr store ({err}); delete it and rerun the stage that writes it"
        ) from err
    if _GRID_MAPPING in ds.data_vars:
        ds = ds.set_coords(_GRID_MAPPING)
    return ds
