"""Looking into one site's run (a :class:`pipeline.api.SiteRun`, in memory): per-date series, a threshold sweep.

Used by the notebooks ``notebooks/explore_site.ipynb`` and ``notebooks/tune_threshold.ipynb``; nothing is
written to disk.

>>> from pipeline.api import run_site
>>> from pipeline.explore import site_series, threshold_sweep
>>> run = run_site("farmland-compound")
>>> site_series(run, run.flags.geometry.iloc[0])           # one row per acquisition date
>>> threshold_sweep(run, [4, 6, 8, 12]).table               # precision/recall per detection threshold
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
import xarray as xr
from shapely.geometry.base import BaseGeometry

from pipeline.api import SiteRun
from pipeline.detect import detect_series
from pipeline.detect.indices import bsi, has_bands, ndbi, ndvi
from pipeline.errors import ConfigError
from pipeline.evaluate.metrics import pixel_scores
from pipeline.evaluate.objects import object_metrics, rasterize_truth
from pipeline.flag import to_wgs84, vectorise

__all__ = ["INDICES", "SweepResult", "site_series", "threshold_sweep"]

#: Spectral indices of :func:`site_series`, with the bands each needs.
INDICES: dict[str, tuple[str, ...]] = {
    "ndvi": ("B04", "B08"),
    "ndbi": ("B08", "B11"),
    "bsi": ("B02", "B04", "B08", "B11"),
}
_INDEX_FUNCS = {"ndvi": ndvi, "ndbi": ndbi, "bsi": bsi}


def _median_where(values: xr.DataArray, mask: np.ndarray) -> np.ndarray:
    """Per-date median of ``values`` (time, y, x) over the True pixels of ``mask`` (time, y, x); NaN if none."""
    arr = np.asarray(values.values, dtype=np.float64)
    arr = np.where(mask, arr, np.nan)
    flat = arr.reshape(arr.shape[0], -1)
    out = np.full(arr.shape[0], np.nan)
    has = np.isfinite(flat).any(axis=1)
    out[has] = np.nanmedian(flat[has], axis=1)
    return out


def site_series(run: SiteRun, geometry: BaseGeometry | None = None) -> pd.DataFrame:
    """One row per acquisition date of the site: cloud cover and spectral indices inside and outside an area.

    Parameters
    ----------
    run
        A site's run (:func:`pipeline.api.run_site`): its ``scenes`` (harmonised reflectance 0–1 and clear
        mask on the site's UTM grid) are read.
    geometry
        An area in EPSG:4326 (lon/lat), e.g. a flag's polygon (``run.flags.geometry.iloc[0]``); None: the
        whole site is "inside".

    Returns
    -------
    pandas.DataFrame
        Index ``date`` (datetime64); columns ``cloud_cover`` (share 0–1 of the site's pixels not clear),
        ``clear_inside`` (share 0–1 of the area's pixels clear), and for each of :data:`INDICES` the scenes'
        bands allow, ``<index>_inside`` and ``<index>_outside``: the median over the clear pixels inside the
        area and in the rest of the site (NaN when none is clear; ``_outside`` is NaN without a geometry).
    """
    refl = run.scenes["reflectance"]
    clear = np.asarray(run.scenes["clear"].transpose("time", "y", "x").values, dtype=bool)
    grid = run.detection["change"]
    if geometry is None:
        inside = np.ones(clear.shape[1:], dtype=bool)
    else:
        inside = rasterize_truth(gpd.GeoDataFrame(geometry=[geometry], crs=4326), grid)
    n_in = max(int(inside.sum()), 1)
    table: dict[str, np.ndarray] = {
        "cloud_cover": 1.0 - clear.mean(axis=(1, 2)),
        "clear_inside": (clear & inside).sum(axis=(1, 2)) / n_in,
    }
    for name, bands in INDICES.items():
        if not has_bands(refl, *bands):
            continue
        values = _INDEX_FUNCS[name](refl).transpose("time", "y", "x")
        table[f"{name}_inside"] = _median_where(values, clear & inside)
        table[f"{name}_outside"] = (
            _median_where(values, clear & ~inside) if geometry is not None else np.full(clear.shape[0], np.nan)
        )
    index = pd.DatetimeIndex(run.scenes["time"].values, name="date")
    return pd.DataFrame(table, index=index)


@dataclass(frozen=True)
class SweepResult:
    """What :func:`threshold_sweep` measured.

    ``table``: one row per threshold (ascending) with ``threshold`` (robust z units), ``n_flags``,
    ``flagged_area_m2`` (m², on the UTM grid), ``object_precision``/``object_recall`` (flags vs truth
    polygons, :func:`pipeline.evaluate.objects.object_metrics`) and ``pixel_precision``/``pixel_recall``/
    ``pixel_f1``; ``flags``: the flag layer (EPSG:4326) at each threshold.
    """

    table: pd.DataFrame
    flags: Mapping[float, gpd.GeoDataFrame]


def threshold_sweep(run: SiteRun, thresholds: Sequence[float]) -> SweepResult:
    """Detect and flag the site again at each fixed detection threshold and score it against the run's truth.

    The threshold is ``detect.threshold`` (robust z units; the run's own, automatic one is
    ``run.detection.attrs["threshold"]``); every other setting is the run's. Each threshold reruns
    :func:`pipeline.detect.detect_series` (about 1.5 s for a 3 km demo site on one core).

    Raises
    ------
    ConfigError
        When ``thresholds`` is empty or holds a value that is not a positive number.
    """
    values = sorted({float(t) for t in thresholds})
    if not values or not all(np.isfinite(t) and t > 0 for t in values):
        raise ConfigError(f"thresholds must be positive numbers, got {list(thresholds)}; e.g. [4, 6, 8, 12]")
    ev = run.settings.evaluate
    rows = []
    layers: dict[float, gpd.GeoDataFrame] = {}
    for t in values:
        settings = run.settings.model_copy(update={"detect": run.settings.detect.model_copy(update={"threshold": t})})
        det = detect_series(run.scenes["reflectance"], run.scenes["clear"], settings.detect)
        flags = to_wgs84(vectorise(det, site_id=run.site.site_id, settings=settings))
        obj = object_metrics(flags, run.truth, iou_threshold=ev.iou_threshold, min_truth_area_m2=ev.min_truth_area_m2)
        pix = pixel_scores(det["change"].values, rasterize_truth(run.truth, det["change"]))
        rows.append(
            {
                "threshold": t,
                "n_flags": len(flags),
                "flagged_area_m2": float(flags["area_m2"].sum()) if len(flags) else 0.0,
                "object_precision": obj["object_precision"],
                "object_recall": obj["object_recall"],
                "pixel_precision": pix["pixel_precision"],
                "pixel_recall": pix["pixel_recall"],
                "pixel_f1": pix["pixel_f1"],
            }
        )
        layers[t] = flags
    return SweepResult(pd.DataFrame(rows), layers)
