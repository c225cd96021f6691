"""Loader for the Onera Satellite Change Detection (OSCD) benchmark as shipped in ``shared/data/oscd``.

Layout (see that folder's README): ``images/<city>/imgs_1|imgs_2/*_Bxx.tif`` (13 single-band L1C TOA
reflectance ×10000 GeoTIFFs per date, EPSG:4326), ``images/<city>/dates.txt`` and
``train_labels/<city>/cm/<city>-cm.tif`` (uint8, 1 = no change, 2 = change, pixel-aligned with the
imgs_1 10 m grid, no georeferencing).

A city is read exactly as ``compoundwatch compare imgs_1/ imgs_2/`` reads it: :func:`pipeline.fetch.scenes.read_scene`
for each date (coarse bands bilinearly up-sampled to the 10 m grid) and :func:`pipeline.fetch.scenes.align` of
date 2 onto date 1's grid, so a model trained here sees the same inputs as the command line.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import xarray as xr
from rasterio.errors import NotGeoreferencedWarning

from pipeline.errors import InputFileError
from pipeline.fetch.scenes import align, read_scene

__all__ = ["LABELLED_CITIES", "HOLDOUT_CITIES", "OscdCity", "labelled_cities", "read_city", "read_label"]

#: The ten cities whose labels are in the shared copy (the official OSCD train split minus the hold-out).
LABELLED_CITIES: tuple[str, ...] = (
    "abudhabi", "aguasclaras", "beihai", "bercy", "bordeaux", "cupertino", "mumbai", "paris", "rennes", "saclay_e",
)
#: Cities kept back for the project's unseen evaluation: never read, tuned on or obtained.
HOLDOUT_CITIES: tuple[str, ...] = ("beirut", "hongkong", "nantes", "pisa")


@dataclass(frozen=True)
class OscdCity:
    """One OSCD city on the imgs_1 10 m grid.

    ``before``/``after``: ``(band, y, x)`` float32 TOA reflectance (0-1, NaN = no data), ``after`` aligned
    onto ``before``'s grid (EPSG:4326 degrees); ``label``: ``(y, x)`` bool (True = change) or ``None`` for
    unlabelled cities.
    """

    name: str
    before: xr.DataArray
    after: xr.DataArray
    label: np.ndarray | None


def labelled_cities(root: str | Path) -> list[str]:
    """The labelled cities present under ``root`` (sorted), never a hold-out city."""
    root = Path(root)
    lab = root / "train_labels"
    if not lab.is_dir():
        raise InputFileError(f"{lab} is missing; point at the OSCD folder holding images/ and train_labels/")
    return sorted(
        p.name for p in lab.iterdir()
        if p.is_dir() and p.name not in HOLDOUT_CITIES and (p / "cm" / f"{p.name}-cm.tif").is_file()
    )


def read_label(root: str | Path, city: str) -> np.ndarray:
    """The change map of ``city`` as bool (True where the file holds 2 = change)."""
    if city in HOLDOUT_CITIES:
        raise InputFileError(f"{city} is a hold-out city and must not be used")
    path = Path(root) / "train_labels" / city / "cm" / f"{city}-cm.tif"
    if not path.is_file():
        raise InputFileError(f"no label file {path}")
    with warnings.catch_warnings():  # the label tif has no georeferencing (it is on the imgs_1 grid)
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            return src.read(1) == 2


def read_city(
    root: str | Path, city: str, bands: Sequence[str] | None = None, *, with_label: bool = True
) -> OscdCity:
    """Read one city as BEFORE/AFTER on the imgs_1 10 m grid (the ``compare`` path) plus its label.

    Parameters
    ----------
    root
        The OSCD folder (holding ``images/`` and ``train_labels/``).
    city
        City name (a folder in ``images/``); hold-out cities are refused.
    bands
        Bands to read (default: all bands in the folders).
    with_label
        Read the label too (``label`` is ``None`` otherwise or when the city has none).
    """
    if city in HOLDOUT_CITIES:
        raise InputFileError(f"{city} is a hold-out city and must not be used")
    img = Path(root) / "images" / city
    if not img.is_dir():
        raise InputFileError(f"{img} is missing; is {root} the OSCD folder?")
    before = read_scene(img / "imgs_1", bands)
    after = align(read_scene(img / "imgs_2", bands), before)
    label = None
    if with_label and (Path(root) / "train_labels" / city).is_dir():
        label = read_label(root, city)
        if label.shape != before.shape[1:]:
            raise InputFileError(
                f"{city}: label {label.shape} is not on the imgs_1 10 m grid {before.shape[1:]}"
            )
    return OscdCity(city, before, after, label)
