"""Public, in-memory API for notebooks and scripts: run one site end to end without files or DVC.

>>> from pipeline.api import run_site
>>> run = run_site("arid-compound")          # reads params.yaml from the working directory
>>> run.flags[["flag_id", "area_m2", "appeared_before", "confidence"]]

The DVC pipeline (``dvc repro`` / ``compoundwatch demo``) runs the same library functions stage by stage
with files in between; this module chains them in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import xarray as xr

from pipeline.config import DEFAULT_PARAMS, Settings, load_settings
from pipeline.detect import detect_series
from pipeline.evaluate.metrics import pixel_scores
from pipeline.evaluate.objects import object_metrics, rasterize_truth
from pipeline.fetch import make_fetcher, request_for, truth_for
from pipeline.flag import to_wgs84, vectorise
from pipeline.preprocess import preprocess_cube
from pipeline.sites import Site, get_site

__all__ = ["SiteRun", "run_site", "true_colour"]


@dataclass(frozen=True)
class SiteRun:
    """Everything one site's run produced, in memory.

    ``cube``: the fetched scene cube (uint16 DN + SCL); ``scenes``: harmonised float32 reflectance and clear
    mask; ``detection``: the per-pixel detection dataset; ``flags``/``truth``: WGS84 layers (truth empty for
    real sources); ``metrics``: object and pixel scores against the truth.
    """

    site: Site
    settings: Settings
    cube: xr.Dataset
    scenes: xr.Dataset
    detection: xr.Dataset
    flags: gpd.GeoDataFrame
    truth: gpd.GeoDataFrame
    metrics: dict[str, Any]


def run_site(site_id: str, settings: Settings | None = None, params: str | Path = DEFAULT_PARAMS) -> SiteRun:
    """Fetch, preprocess, detect and flag one site (``settings`` default: :func:`load_settings` of ``params``)."""
    settings = settings or load_settings(params)
    site = get_site(settings.sites_file, site_id)
    fetcher = make_fetcher(settings)
    request = request_for(site, settings)
    cube = fetcher.fetch(request)
    scenes = preprocess_cube(cube, settings.preprocess)
    detection = detect_series(scenes["reflectance"], scenes["clear"], settings.detect)
    flags = to_wgs84(vectorise(detection, site_id=site_id, settings=settings))
    truth = truth_for(fetcher, request, control=site.control)
    metrics = object_metrics(
        flags,
        truth,
        iou_threshold=settings.evaluate.iou_threshold,
        min_truth_area_m2=settings.evaluate.min_truth_area_m2,
    )
    pixels = pixel_scores(detection["change"].values, rasterize_truth(truth, detection["change"]))
    metrics.update({k: v for k, v in pixels.items() if k.startswith("pixel_")})
    return SiteRun(site, settings, cube, scenes, detection, flags, truth, metrics)


def true_colour(scenes: xr.Dataset, time_index: int, stretch: tuple[float, float] = (2, 98)) -> np.ndarray:
    """RGB (B04, B03, B02) image of one date as floats in 0-1 with a percentile ``stretch``; NaN → 0."""
    rgb = scenes["reflectance"].isel(time=time_index).sel(band=["B04", "B03", "B02"]).values
    lo, hi = np.nanpercentile(rgb, stretch)
    out = np.clip((rgb - lo) / max(hi - lo, 1e-6), 0, 1)
    return np.nan_to_num(np.moveaxis(out, 0, -1))
