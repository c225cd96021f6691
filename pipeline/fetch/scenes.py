"""Read and write single Sentinel-2 scenes on disk (the I/O edge of ``compoundwatch compare``).

A *scene* is given either as

(a) one multiband GeoTIFF whose bands are named by their band descriptions (``B02``, ``b2``,
    ``B02 (490 nm)`` ... are all read as ``B02``), or, when the file has no descriptions, by the ``bands``
    argument (names in file order); or
(b) a folder of single-band rasters (``.tif``, ``.tiff``, ``.jp2``) whose file names end in the band name
    just before the extension (``*_B02.tif``, ``T31UDQ_20170829_B8A.jp2``), each at its native
    resolution (10, 20 or 60 m).

:func:`read_scene` returns a ``(band, y, x)`` float32 reflectance array (unitless, 0-1; NaN = no data) on
the scene's **finest** grid, in the scene's own CRS (metres for UTM, degrees for EPSG:4326), with the CRS
and transform written by rioxarray. Coarser bands are up-sampled onto that grid with **bilinear**
interpolation (smooth, no blocky 20 m steps; a 20 m edge is spread over about two 10 m pixels).
Digital numbers (any integer data, or float data with a maximum above 2) are divided by 10000 after adding
``BOA_ADD_OFFSET`` when the file's metadata carries it (processing baseline 04.00+); 0 and the file's
nodata value become NaN.

:func:`align` puts one scene onto another's grid and :func:`write_change_raster` writes a change map as a
Cloud-Optimised GeoTIFF.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import RasterioError
from rasterio.warp import Resampling, reproject

from pipeline import config
from pipeline._files import atomic_path
from pipeline.config import S2_BANDS
from pipeline.errors import BandError, DetectionError, InputFileError, NotARasterError, SceneMismatchError
from pipeline.preprocess.harmonise import to_reflectance

__all__ = [
    "MIN_BANDS",
    "RASTER_SUFFIXES",
    "canonical_band",
    "read_scene",
    "band_files",
    "scene_date",
    "scene_pixels",
    "align",
    "pixel_size_m",
    "write_change_raster",
    "check_pair",
    "CHANGE",
    "NO_CHANGE",
    "NODATA",
]

MIN_BANDS = config.MIN_BANDS
"""Bands every scene must have (the detector's minimum)."""

RASTER_SUFFIXES: tuple[str, ...] = (".tif", ".tiff", ".jp2")
"""File extensions recognised in a band folder (case-insensitive)."""

NO_CHANGE, CHANGE, NODATA = 0, 1, 255
"""Pixel values of the change raster written by :func:`write_change_raster`."""

# "B2", "b02", "B02 (490 nm)", "B8A", "b8a_865nm" ... -> group 1 = number or 8A. Generic labels such as
# "Band 1" (written by many tools for any raster) are deliberately NOT read as Sentinel-2 bands.
_DESC_RE = re.compile(r"^\s*b(0?8a|\d{1,2})(?![0-9a-z])", re.IGNORECASE)
# a file stem ending in a band name: "..._B02", "...-b8a", "B11"
_STEM_RE = re.compile(r"(?:^|[_\-.\s])(b(?:0?8a|\d{1,2}))$", re.IGNORECASE)
# a date YYYYMMDD, YYYY-MM-DD or YYYY_MM_DD not embedded in a longer number (e.g. "20170829T105019")
_DATE_RE = re.compile(r"(?<!\d)((?:19|20)\d{2})[-_]?(0[1-9]|1[0-2])[-_]?(0[1-9]|[12]\d|3[01])(?!\d)")
_DATE_TAGS = (
    "ACQUISITION_DATE",
    "DATATAKE_SENSING_START",
    "DATATAKE_1_DATATAKE_SENSING_START",
    "SENSING_TIME",
    "SENSING_DATE",
    "PRODUCT_START_TIME",
    "DATE_ACQUIRED",
)


def canonical_band(name: str) -> str | None:
    """Canonical Sentinel-2 band name (``B01`` … ``B12``, ``B8A``) for a loose label, or ``None``.

    Accepts ``B2``, ``b02``, ``B02 (490 nm)``, ``b8a_865nm`` and the like; generic labels such as
    ``Band 1`` give ``None`` (they number layers, not Sentinel-2 bands).
    """
    m = _DESC_RE.match(name or "")
    return _band_from_number(m.group(1)) if m else None


def _band_from_number(token: str) -> str | None:
    token = token.upper()
    if token.endswith("8A"):
        return "B8A"
    n = int(token)
    return f"B{n:02d}" if 1 <= n <= 12 else None


def _band_from_stem(stem: str) -> str | None:
    m = _STEM_RE.search(stem)
    return _band_from_number(m.group(1)[1:]) if m else None


@dataclass(frozen=True)
class _Layer:
    """One band of a scene: its canonical name, the file and 1-based band index it lives in."""

    band: str
    path: Path
    index: int


def _open(path: Path) -> rasterio.DatasetReader:
    try:
        return rasterio.open(path)
    except (RasterioError, OSError) as err:
        raise NotARasterError(
            f"{path} is not a raster GDAL can read; give a GeoTIFF/JP2 file or a folder of *_Bxx.tif files"
        ) from err


def _check_required(layers: Sequence[_Layer], required: Sequence[str], where: Path) -> None:
    found = [lay.band for lay in layers]
    missing = [b for b in required if b not in found]
    if missing:
        raise BandError(
            f"{where} lacks band(s) {', '.join(missing)} (found: {', '.join(found) or 'none'}); "
            f"a scene needs at least {', '.join(required)}"
        )


def _select(layers: list[_Layer], bands: Sequence[str] | None, where: Path) -> list[_Layer]:
    """Keep (and order as) the requested bands; error when one is absent."""
    if bands is None:
        return layers
    wanted = _canonical_list(bands)
    by_band = {lay.band: lay for lay in layers}
    missing = [b for b in wanted if b not in by_band]
    if missing:
        raise BandError(
            f"{where} has no band(s) {', '.join(missing)} (found: {', '.join(by_band) or 'none'}); "
            "check --bands"
        )
    return [by_band[b] for b in wanted]


def _canonical_list(bands: Sequence[str]) -> list[str]:
    out: list[str] = []
    for b in bands:
        c = canonical_band(str(b))
        if c is None:
            raise BandError(f"{b!r} is not a Sentinel-2 band name; use names like B02, B8A, B11")
        if c in out:
            raise BandError(f"band {c} is listed twice in the requested bands")
        out.append(c)
    return out


def _file_layers(path: Path, bands: Sequence[str] | None) -> list[_Layer]:
    with _open(path) as src:
        count = src.count
        descs = list(src.descriptions)
    named = [canonical_band(d) if d else None for d in descs]
    if not any(named) and count == 1:
        named = [_band_from_stem(path.stem)]
    if any(named):
        layers: list[_Layer] = []
        for i, b in enumerate(named, start=1):
            if b is None:
                continue  # a non-spectral layer (e.g. "SCL"): not part of the reflectance scene
            if any(lay.band == b for lay in layers):
                raise BandError(f"{path}: band {b} appears twice in the band descriptions {descs}")
            layers.append(_Layer(b, path, i))
        return _select(layers, bands, path)
    if bands is None:
        raise BandError(
            f"{path} has {count} band(s) without band descriptions naming Sentinel-2 bands; "
            "name them in file order, e.g. --bands B02,B03,B04,B08"
        )
    wanted = _canonical_list(bands)
    if len(wanted) != count:
        raise BandError(
            f"{path} has {count} band(s) but {len(wanted)} band name(s) were given ({', '.join(wanted)}); "
            "give one name per band, in file order"
        )
    return [_Layer(b, path, i) for i, b in enumerate(wanted, start=1)]


def _folder_layers(path: Path, bands: Sequence[str] | None) -> list[_Layer]:
    found: dict[str, Path] = {}
    for f in sorted(path.iterdir()):
        if not f.is_file() or f.suffix.lower() not in RASTER_SUFFIXES:
            continue
        b = _band_from_stem(f.stem)
        if b is None:
            continue
        if b in found:
            raise BandError(
                f"{path} has two files for band {b} ({found[b].name}, {f.name}); keep one file per band"
            )
        found[b] = f
    if not found:
        raise BandError(
            f"{path} has no band files; expected single-band rasters named like *_B02.tif, *_B8A.jp2"
        )
    order = {b: i for i, b in enumerate(S2_BANDS)}
    layers = [_Layer(b, found[b], 1) for b in sorted(found, key=lambda b: order.get(b, 99))]
    return _select(layers, bands, path)


def _boa_add_offset(src: rasterio.DatasetReader, index: int, band: str) -> float:
    """``BOA_ADD_OFFSET`` (DN): band tag, else file tag ``BOA_ADD_OFFSET_<band>`` or ``BOA_ADD_OFFSET``; 0."""
    for tags, key in (
        (src.tags(index), "BOA_ADD_OFFSET"),
        (src.tags(), f"BOA_ADD_OFFSET_{band}"),
        (src.tags(), "BOA_ADD_OFFSET"),
    ):
        if key in tags:
            try:
                return float(tags[key])
            except ValueError as err:
                raise BandError(f"{src.name}: tag {key}={tags[key]!r} is not a number") from err
    return 0.0


def _scene_date(paths: Sequence[Path], root: Path) -> str | None:
    """Acquisition date (ISO) from well-known tags (any case), else from a YYYYMMDD / YYYY-MM-DD in the
    file/folder names."""
    with _open(paths[0]) as src:
        tags = {k.upper(): v for k, v in src.tags().items()}
    for key in _DATE_TAGS:
        if key in tags:
            m = re.match(r"(\d{4})-?(\d{2})-?(\d{2})", tags[key].strip())
            if m:
                return _iso(*m.groups())
    for name in [p.stem for p in paths] + [root.stem, root.parent.name]:
        m = _DATE_RE.search(name)
        if m:
            return _iso(*m.groups())
    return None


def _iso(y: str, m: str, d: str) -> str | None:
    try:
        return dt.date(int(y), int(m), int(d)).isoformat()
    except ValueError:
        return None


def _read_layer(
    layer: _Layer, dst_crs: CRS, dst_transform: Affine, dst_shape: tuple[int, int]
) -> tuple[np.ndarray, float]:
    """One band as float32 reflectance on the target grid, and the BOA_ADD_OFFSET applied (DN)."""
    with _open(layer.path) as src:
        try:
            raw = src.read(layer.index)
        except (RasterioError, OSError) as err:
            raise NotARasterError(
                f"{layer.path} could not be read ({err}); the file may be truncated"
            ) from err
        nodata = src.nodatavals[layer.index - 1]
        offset = 0.0
        bad = raw == 0
        if nodata is not None and not np.isnan(nodata):
            bad |= raw == nodata
        if np.issubdtype(raw.dtype, np.floating):
            bad |= ~np.isfinite(raw)
        valid_vals = raw[~bad]
        is_dn = np.issubdtype(raw.dtype, np.integer) or (valid_vals.size > 0 and float(valid_vals.max()) > 2)
        if is_dn:
            offset = _boa_add_offset(src, layer.index, layer.band)
            dn = np.where(bad, 0, raw)
            refl = to_reflectance(xr.DataArray(dn), offset or None).values.astype(np.float32)
        else:
            refl = raw.astype(np.float32)
        refl[bad] = np.nan
        if src.crs == dst_crs and src.transform.almost_equals(dst_transform) and src.shape == dst_shape:
            return refl, offset
        out = np.full(dst_shape, np.nan, np.float32)
        reproject(
            refl,
            out,
            src_transform=src.transform,
            src_crs=src.crs,
            src_nodata=np.nan,
            dst_transform=dst_transform,
            dst_crs=dst_crs,
            dst_nodata=np.nan,
            resampling=Resampling.bilinear,
        )
        return out, offset


def read_scene(
    path: str | Path, bands: Sequence[str] | None = None, *, required: Sequence[str] = MIN_BANDS
) -> xr.DataArray:
    """Read one scene as ``(band, y, x)`` float32 reflectance on its finest-resolution grid.

    Parameters
    ----------
    path
        A multiband raster (bands named by their descriptions, or by ``bands``) or a folder of single-band
        rasters named ``*_<band>.<tif|tiff|jp2>`` (see the module docstring).
    bands
        For a file without band descriptions: the band names in file order (count must match). Otherwise:
        the bands to keep, in this order. Loose names (``B2``, ``b8a``) are accepted.
    required
        Bands the scene must contain (default :data:`MIN_BANDS`); ``()`` to skip the check.

    Returns
    -------
    xarray.DataArray
        float32 reflectance (unitless, 0-1, NaN = no data), dims ``(band, y, x)``; ``band`` holds canonical
        names, ``y``/``x`` pixel centres in the scene's CRS units; CRS/transform written with rioxarray;
        attrs ``scene_id`` (file or folder name), ``date`` (ISO acquisition date or ``""`` if unknown),
        ``source`` (the path) and ``boa_add_offset`` (the largest offset in DN applied, 0 if none).
        The grid is that of the band with the smallest pixels; coarser bands are bilinearly up-sampled.

    Raises
    ------
    InputFileError
        ``path`` does not exist.
    NotARasterError
        A file GDAL cannot open, or one without a CRS (a scene must be georeferenced).
    BandError
        No band files, bands that cannot be identified, a duplicated band, or a missing required band.
    """
    path = Path(path)
    if not path.exists():
        raise InputFileError(
            f"{path} does not exist; give a multiband GeoTIFF or a folder of single-band *_Bxx.tif files"
        )
    layers = _folder_layers(path, bands) if path.is_dir() else _file_layers(path, bands)
    _check_required(layers, required, path)

    # target grid: the layer with the smallest pixel area (ties: the first in band order)
    grids: dict[Path, tuple[CRS, Affine, tuple[int, int]]] = {}
    for lay in layers:
        if lay.path not in grids:
            with _open(lay.path) as src:
                if src.crs is None:
                    raise NotARasterError(
                        f"{lay.path} has no coordinate reference system; a scene must be georeferenced"
                    )
                grids[lay.path] = (src.crs, src.transform, src.shape)
    crs, transform, shape = min(grids.values(), key=lambda g: abs(g[1].a * g[1].e))

    data = np.empty((len(layers), *shape), np.float32)
    offsets = []
    for i, lay in enumerate(layers):
        data[i], off = _read_layer(lay, crs, transform, shape)
        offsets.append(off)

    if not np.isfinite(data).any():
        raise NotARasterError(
            f"{path} has no valid pixels (every value is 0, NaN or the file's no-data value); check the export "
            "(band scaling, the area or the no-data setting)"
        )
    xs = transform.c + transform.a * (np.arange(shape[1]) + 0.5)
    ys = transform.f + transform.e * (np.arange(shape[0]) + 0.5)
    date = _scene_date(sorted({lay.path for lay in layers}), path)
    da = xr.DataArray(
        data,
        dims=("band", "y", "x"),
        coords={"band": [lay.band for lay in layers], "y": ys, "x": xs},
        name="reflectance",
        attrs={
            "scene_id": path.stem if path.is_file() else path.name,
            "date": date or "",
            "source": str(path),
            "boa_add_offset": float(max(offsets, key=abs)) if offsets else 0.0,
            "units": "1",
        },
    )
    da = da.rio.write_crs(crs).rio.write_transform(transform).rio.write_nodata(np.nan, encoded=False)
    return da


def band_files(
    path: str | Path, bands: Sequence[str] | None = None, *, required: Sequence[str] = MIN_BANDS
) -> dict[str, Path]:
    """``{band: file}`` of a folder of single-band rasters (form (b) of the module docstring), in band order.

    ``bands`` keeps only these bands (loose names accepted); ``required`` as for :func:`read_scene`. Nothing
    is read but the folder listing. Raises :class:`~pipeline.errors.InputFileError` when ``path`` is not a
    folder, :class:`~pipeline.errors.BandError` as :func:`read_scene` does.
    """
    path = Path(path)
    if not path.is_dir():
        raise InputFileError(
            f"{path} is not a folder; give a folder of single-band *_Bxx.tif files (e.g. a granule's band files)"
        )
    layers = _folder_layers(path, bands)
    _check_required(layers, required, path)
    return {lay.band: lay.path for lay in layers}


def scene_date(path: str | Path) -> str | None:
    """The ISO acquisition date of a scene file or band folder (as :func:`read_scene` sets ``date``), or None."""
    path = Path(path)
    if path.is_dir():
        files = sorted(band_files(path, required=()).values())
    else:
        files = [path]
    return _scene_date(files, path)


def scene_pixels(path: str | Path) -> int:
    """Pixels of a scene's finest grid (width × height of a file, or of a folder's largest band file),
    read from the file headers only. Raises as :func:`read_scene` for what is not a scene."""
    path = Path(path)
    files = list(band_files(path, required=()).values()) if path.is_dir() else [path]
    size = 0
    for f in files:
        with _open(f) as src:
            size = max(size, int(src.width) * int(src.height))
    return size


def align(after: xr.DataArray, before: xr.DataArray) -> xr.DataArray:
    """Reproject ``after`` onto ``before``'s grid (CRS, transform, shape) with bilinear resampling.

    Pixels of ``before``'s grid that ``after`` does not cover are NaN. The result's ``y``/``x`` coordinates
    are exactly ``before``'s, so the two arrays combine element-wise; ``after``'s bands and attrs are kept.
    """
    src = after.astype(np.float32).rio.write_nodata(np.nan, encoded=False)
    same_grid = (
        after.rio.crs == before.rio.crs
        and after.rio.shape == before.rio.shape
        and after.rio.transform().almost_equals(before.rio.transform())
    )
    if same_grid:  # nothing to resample (bilinear would still spread NaN holes by a pixel)
        out = src.copy()
    else:
        out = src.rio.reproject_match(before, resampling=Resampling.bilinear, nodata=np.nan)
    out = out.assign_coords(y=before["y"].values, x=before["x"].values)
    out = out.rio.write_crs(before.rio.crs).rio.write_transform(before.rio.transform())
    out.attrs = dict(after.attrs)
    return out.rio.write_nodata(np.nan, encoded=False)


def pixel_size_m(scene: xr.DataArray) -> float | None:
    """The scene's pixel size in metres (geometric mean of x and y; degrees converted at the scene's
    centre latitude), or None when it has no CRS."""
    crs = scene.rio.crs
    if crs is None:
        return None
    t = scene.rio.transform()
    dx, dy = abs(t.a), abs(t.e)
    if crs.is_geographic:
        lat = float(np.mean(scene["y"].values))
        dx *= 111_320.0 * np.cos(np.radians(lat))
        dy *= 110_574.0
    else:
        factor = crs.linear_units_factor[1] if crs.linear_units_factor else 1.0
        dx, dy = dx * factor, dy * factor
    return float(np.sqrt(dx * dy))


def write_change_raster(change: xr.DataArray, valid: xr.DataArray, path: str | Path) -> Path:
    """Write a change map as a uint8 Cloud-Optimised GeoTIFF (deflate) on ``change``'s grid and CRS.

    Pixel values: 1 = change, 0 = no change, 255 = no data (where ``valid`` is False; the file's nodata).

    Parameters
    ----------
    change, valid
        Boolean ``(y, x)`` arrays on the same grid; the CRS is taken from ``change`` (else ``valid``).
    path
        Output file; parent folders are created.
    """
    if change.shape != valid.shape or change.ndim != 2:
        raise DetectionError(f"change {change.shape} and valid {valid.shape} must be 2-D and of the same shape")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    values = np.where(valid.values.astype(bool), change.values.astype(bool).astype(np.uint8), NODATA)
    crs = change.rio.crs or valid.rio.crs
    ref = change if change.rio.crs is not None else valid
    transform = ref.rio.transform()
    profile = {
        "driver": "COG",
        "width": values.shape[1],
        "height": values.shape[0],
        "count": 1,
        "dtype": "uint8",
        "nodata": NODATA,
        "transform": transform,
        "compress": "deflate",
    }
    if crs is not None:
        profile["crs"] = crs
    with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(values.astype(np.uint8), 1)
        dst.update_tags(1, VALUES="1=change,0=no change,255=no data")
    return path


def check_pair(before: xr.DataArray, after: xr.DataArray) -> None:
    """Refuse two scenes (as :func:`read_scene` returns them) that cannot be compared: footprints that do
    not overlap, or a BEFORE acquired after AFTER (both dates known). Raises :class:`SceneMismatchError`."""
    from rasterio.warp import transform_bounds

    b_bounds = before.rio.bounds()
    try:
        a_bounds = transform_bounds(after.rio.crs, before.rio.crs, *after.rio.bounds(), densify_pts=21)
    except (RasterioError, ValueError) as err:
        raise SceneMismatchError(
            f"AFTER ({after.attrs.get('source', '?')}) cannot be brought into BEFORE's CRS {before.rio.crs} ({err})"
        ) from err
    if (a_bounds[0] >= b_bounds[2] or a_bounds[2] <= b_bounds[0] or a_bounds[1] >= b_bounds[3]
            or a_bounds[3] <= b_bounds[1]):
        raise SceneMismatchError(
            f"BEFORE ({before.attrs.get('source', '?')}) and AFTER ({after.attrs.get('source', '?')}) do not overlap "
            f"(BEFORE covers {tuple(round(v) for v in b_bounds)}, AFTER {tuple(round(v) for v in a_bounds)} in "
            f"{before.rio.crs}); give two scenes of the same place"
        )
    d_b, d_a = before.attrs.get("date") or "", after.attrs.get("date") or ""
    if d_b and d_a and d_b > d_a:
        raise SceneMismatchError(
            f"BEFORE ({before.attrs.get('source', '?')}, {d_b}) is later than AFTER "
            f"({after.attrs.get('source', '?')}, {d_a}); swap them: compoundwatch compare EARLIER LATER"
        )
