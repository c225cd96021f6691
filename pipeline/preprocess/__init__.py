"""Preprocessing: radiometric harmonisation and clear-sky masks (pure functions over xarray)."""

from pipeline.preprocess.harmonise import to_reflectance
from pipeline.preprocess.mask import clear_mask

__all__ = ["to_reflectance", "clear_mask"]
