"""Landsat-7 ETM+ scenes (8-bit ENVI/GeoTIFF, as in ``shared/data/landsat_taizhou``) as approximate TOA
reflectance named as Sentinel-2 bands, so the two-date detectors read them as they read Sentinel-2 scenes
(:func:`read_landsat_etm`; the Taizhou case study, :mod:`pipeline.evaluate.cases`).

Output grid: the file's own (CRS and transform written with rioxarray, ``y``/``x`` pixel centres in its CRS
units, metres for UTM).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from shapely.geometry import Point

from pipeline.errors import InputFileError

__all__ = ["ETM_TO_S2", "read_landsat_etm"]

#: Landsat-7 ETM+ band → the Sentinel-2 band of the same spectral region (blue, green, red, NIR, SWIR1,
#: SWIR2), so the detectors' band names (B02, B03, B04, B08 at least; B11/B12 for the built-up indices)
#: address the right wavelengths.
ETM_TO_S2: dict[int, str] = {1: "B02", 2: "B03", 3: "B04", 4: "B08", 5: "B11", 7: "B12"}
# Nominal ETM+ high-gain post-calibration dynamic range (LMIN, LMAX; W m-2 sr-1 um-1) and solar exo-
# atmospheric irradiance ESUN (W m-2 um-1) per band (Chander, Markham & Helder 2009, Remote Sens. Environ.
# 113, 893-903, tables 8 and 11; the pre-July-2000 LMAX differ by < 4 %).
_ETM_HIGH_GAIN = {1: (-6.2, 191.6), 2: (-6.4, 196.5), 3: (-5.0, 152.9), 4: (-5.1, 157.4), 5: (-1.0, 31.06),
                  7: (-0.35, 10.80)}
_ETM_ESUN = {1: 1970.0, 2: 1842.0, 3: 1547.0, 4: 1044.0, 5: 225.7, 7: 82.06}


def _sun_elevation(day: dt.date, lat: float, local_solar_hour: float = 10.0) -> float:
    """Approximate solar elevation (degrees) at ``local_solar_hour`` (Landsat 7 crosses at ~10:00)."""
    doy = day.timetuple().tm_yday
    decl = math.radians(23.44) * math.sin(math.radians(360.0 / 365.0 * (284 + doy)))
    hour = math.radians(15.0 * (local_solar_hour - 12.0))
    phi = math.radians(lat)
    sin_e = math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(hour)
    return math.degrees(math.asin(sin_e))


def read_landsat_etm(
    path: str | Path, day: dt.date, bands: Sequence[int] = (1, 2, 3, 4, 5, 7)
) -> xr.DataArray:
    """An 8-bit Landsat-7 ETM+ scene as approximate top-of-atmosphere reflectance named as Sentinel-2 bands.

    Layer ``i`` of the file is ETM+ band ``bands[i]`` (the Taizhou ENVI files: 1, 2, 3, 4, 5, 7), renamed by
    :data:`ETM_TO_S2`. Digital numbers become radiance with the nominal high-gain calibration and then TOA
    reflectance ``π L d² / (ESUN sin(sun elevation))``, the sun elevation computed for ``day`` at the
    scene centre at 10:00 local solar time (the MTL files, with the exact gains and sun angles, are not in
    the data). This puts both dates on an approximately physical 0-1 scale (the detectors expect
    reflectance); residual gain/offset differences are what the chain's radiometric normalisation removes.
    0 is no data.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path} not found; expected an ENVI/GeoTIFF Landsat scene")
    with rasterio.open(path) as src:
        dn = src.read().astype(np.float32)
        crs, transform = src.crs, src.transform
        centre = src.xy(src.height // 2, src.width // 2)
    if dn.shape[0] != len(bands):
        raise InputFileError(f"{path} has {dn.shape[0]} layers but {len(bands)} ETM+ band numbers were given")
    lat = float(gpd.GeoSeries([Point(*centre)], crs=crs).to_crs(4326).y.iloc[0])
    sin_e = math.sin(math.radians(_sun_elevation(day, lat)))
    doy = day.timetuple().tm_yday
    d = 1.0 - 0.01672 * math.cos(math.radians(0.9856 * (doy - 4)))  # Earth-Sun distance (AU)
    refl = np.empty_like(dn)
    for i, b in enumerate(bands):
        lmin, lmax = _ETM_HIGH_GAIN[b]
        radiance = lmin + (lmax - lmin) / 254.0 * (dn[i] - 1.0)
        refl[i] = math.pi * radiance * d * d / (_ETM_ESUN[b] * sin_e)
    refl[dn == 0] = np.nan
    h, w = dn.shape[1:]
    xs = transform.c + transform.a * (np.arange(w) + 0.5)
    ys = transform.f + transform.e * (np.arange(h) + 0.5)
    da = xr.DataArray(
        refl, dims=("band", "y", "x"), coords={"band": [ETM_TO_S2[b] for b in bands], "y": ys, "x": xs},
        name="reflectance",
        attrs={"scene_id": path.name, "date": day.isoformat(), "source": str(path), "units": "1"},
    )
    return da.rio.write_crs(crs).rio.write_transform(transform).rio.write_nodata(np.nan, encoded=False)
