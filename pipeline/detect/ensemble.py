"""The ensemble chain: the spatial model's and the pixel classifier's change probabilities averaged.

``p = w · unet + (1 - w) · lgbm`` on pixels valid for both, change where ``p ≥ t``; the weight ``w`` and the
decision rule come from grouped cross-validation over the labelled OSCD cities
(``python -m pipeline.train.ensemble``), recorded in the sidecar ``ensemble-<band set>.json`` beside the
spatial models (``pipeline/data/unet/``), with the members (``members.unet``, ``members.lgbm``: band sets of
:mod:`pipeline.detect.unet` and :mod:`pipeline.detect.learned`). :func:`pipeline.detect.pair.detect_pair`
runs it where its cross-validated micro-F1 beats both members' and unites it with the extreme CVA changes,
as the pixel classifier's chain does. The rule is a global threshold ``t`` (sidecar ``threshold``) or the
pixel classifier's bounded per-image one, ``t = clip(scale · quantile_q(p), min, max)`` (sidecar
``adaptive_threshold``, :func:`pipeline.detect.learned.adaptive_threshold`).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from pipeline.detect.unet import MODEL_PACKAGE
from pipeline.errors import DetectionError

__all__ = ["ensemble_band_sets", "load_ensemble_meta", "choose_band_set", "detect_pair_ensemble", "METHOD_PREFIX"]

METHOD_PREFIX = "pair-ensemble"


def _root(model_dir: str | Path | None) -> Any:
    return Path(model_dir) if model_dir is not None else resources.files(MODEL_PACKAGE)


def load_ensemble_meta(band_set: str, model_dir: str | Path | None = None) -> dict[str, Any]:
    """The sidecar of ``band_set``'s ensemble (members, ``weight_unet``, ``threshold``, ``cv``)."""
    side = _root(model_dir).joinpath(f"ensemble-{band_set}.json")
    if not side.is_file():
        raise DetectionError(f"no ensemble for band set {band_set!r} in {_root(model_dir)}")
    return dict(json.loads(side.read_text()))


def ensemble_band_sets(model_dir: str | Path | None = None) -> list[str]:
    """Band sets (of the spatial member) with a shipped ensemble sidecar, richest first."""
    from pipeline.detect.unet_input import UNET_BAND_SETS

    root = _root(model_dir)
    return [name for name in UNET_BAND_SETS if root.joinpath(f"ensemble-{name}.json").is_file()]


def choose_band_set(bands: list[str], model_dir: str | Path | None = None) -> str | None:
    """Of the ensembles whose two members' bands ``bands`` cover, the one with the highest cross-validated
    micro-F1 (the richest on ties), or None."""
    from pipeline.detect.features import BAND_SETS
    from pipeline.detect.unet_input import UNET_BAND_SETS

    have = set(bands)
    best: tuple[float, str] | None = None
    for name in ensemble_band_sets(model_dir):
        meta = load_ensemble_meta(name, model_dir)
        members = meta["members"]
        if set(UNET_BAND_SETS[members["unet"]]) <= have and set(BAND_SETS[members["lgbm"]]) <= have:
            f1 = float(meta["cv"]["micro_f1"])
            if best is None or f1 > best[0]:
                best = (f1, name)
    return None if best is None else best[1]


def detect_pair_ensemble(
    before: xr.DataArray, after: xr.DataArray, band_set: str, *, pixel_m: float | None = None,
    model_dir: str | Path | None = None,
) -> xr.Dataset:
    """Change between two scenes on one grid with the ensemble of ``band_set``.

    ``before``/``after``: reflectance (unitless 0-1), ``(band, y, x)``, same grid, NaN = no data, holding both
    members' bands; ``pixel_m``: the grid's pixel size in metres (the spatial member resamples to its 10 m).
    Returns ``change``, ``score`` (the averaged probability, 0-1), ``valid`` and ``confidence`` on ``before``'s
    grid; attrs ``threshold`` (probability), ``method`` (``pair-ensemble-<band set>``), ``weight_unet``,
    ``band_set`` and ``shift_px`` (the pixel classifier's co-registration shift, pixels).
    """
    from pipeline.detect.learned import LearnedDetector, adaptive_threshold
    from pipeline.detect.unet import pair_probability, probability_detection

    meta = load_ensemble_meta(band_set, model_dir)
    w = float(meta["weight_unet"])
    p_unet, v_unet, _ = pair_probability(before, after, meta["members"]["unet"], pixel_m=pixel_m)
    p_lgbm, v_lgbm, _, info = LearnedDetector(band_set=meta["members"]["lgbm"]).probability(before, after)
    valid = v_unet & v_lgbm
    prob = np.where(valid, w * p_unet + (1.0 - w) * p_lgbm, 0.0).astype(np.float32)
    rule = meta.get("adaptive_threshold")
    thr = adaptive_threshold(prob, valid, rule) if rule else float(meta["threshold"])
    return probability_detection(prob, valid, thr, before, {
        "method": f"{METHOD_PREFIX}-{band_set}", "weight_unet": w, "band_set": band_set,
        "shift_px": info["shift_px"]})
