"""Learned two-date change detector: co-registration, radiometric normalisation, features, boosted trees.

The chain for a BEFORE/AFTER pair on one grid (``(band, y, x)`` reflectance, unitless 0-1, NaN = no data):

1. choose the richest shipped band set both scenes provide (:data:`pipeline.detect.features.BAND_SETS`);
2. co-register AFTER onto BEFORE by sub-pixel phase correlation on B08
   (:mod:`pipeline.preprocess.coregister`);
3. normalise AFTER's radiometry to BEFORE on likely-unchanged pixels (:mod:`pipeline.preprocess.normalise`);
4. per-pixel features (:func:`pipeline.detect.features.build_features`);
5. a LightGBM model trained on the labelled OSCD cities (``python -m pipeline.train.oscd``) gives the
   probability of urban change; when the sidecar names ``blend`` band sets (the 4-band model for the richer
   ones), their models run steps 2-4 on their own bands and the probabilities are averaged (a 13-band model
   fits city-specific spectra that the 4-band one cannot: the mean generalises better to unseen cities);
   with the sidecar's ``segment_average`` each pixel's probability is pulled towards the mean of its
   superpixel (:mod:`pipeline.detect.segments`, cut on the pair prepared for the model's own bands);
   the probability is smoothed by a small Gaussian (``smooth_sigma_px`` of the model's sidecar)
   and thresholded per image: ``clip(scale * quantile_q(probability), min, max)`` when the sidecar has
   ``adaptive_threshold`` (the image's own high-probability level sets the cut, so a city where the model
   is under-confident is not cut at a level that only suits confident ones), else the model's global
   ``threshold``; both chosen on leave-one-city-out predictions.

Models live in ``pipeline/data/models/`` as ``oscd-<band set>.txt`` (LightGBM text format) with a JSON
sidecar ``oscd-<band set>.json`` (band set, bands, feature names, threshold, optional ``adaptive_threshold``
rule, optional ``blend`` and ``segment_average``, smoothing, training record)
and are read with :mod:`importlib.resources`. Detectors never open scene files.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from scipy import ndimage

from pipeline.config import DetectSettings
from pipeline.detect.features import BAND_SETS, MIN_BANDS, build_features, choose_band_set
from pipeline.detect.segments import SegmentRule, segment_average, superpixels
from pipeline.detect.threshold import probability_confidence
from pipeline.errors import BandError, DetectionError
from pipeline.preprocess.coregister import coregister
from pipeline.preprocess.normalise import normalise_to

__all__ = [
    "LearnedModel",
    "LearnedDetector",
    "available_band_sets",
    "load_model",
    "load_model_meta",
    "detect_pair_learned",
    "prepare_pair",
    "adaptive_threshold",
    "adaptive_from_level",
    "MODEL_PACKAGE",
    "METHOD_PREFIX",
]

MODEL_PACKAGE = "pipeline.data.models"
METHOD_PREFIX = "pair-lgbm"


@dataclass(frozen=True)
class LearnedModel:
    """A shipped (or freshly trained) model and its sidecar.

    ``booster`` is a ``lightgbm.Booster``; ``meta`` the sidecar dict (keys ``band_set``, ``bands``,
    ``features``, ``threshold``, ``smooth_sigma_px``, ``coregister``, ``normalise``, ``training``).
    """

    band_set: str
    booster: Any
    meta: dict[str, Any] = field(hash=False)

    @property
    def threshold(self) -> float:
        """Probability threshold (0-1) above which a pixel is change."""
        return float(self.meta["threshold"])

    @property
    def adaptive(self) -> dict[str, float] | None:
        """Per-image threshold rule ``{quantile, scale, min, max}`` of the sidecar, or None (global threshold)."""
        rule = self.meta.get("adaptive_threshold")
        return dict(rule) if rule else None

    def decision_threshold(self, prob: np.ndarray, valid: np.ndarray) -> float:
        """The probability threshold for this image: adaptive when the sidecar says so, else :attr:`threshold`."""
        rule = self.adaptive
        if rule is None:
            return self.threshold
        return adaptive_threshold(prob, valid, rule)

    @property
    def blend(self) -> list[str]:
        """Band sets whose models' probabilities are averaged with this one's (the sidecar's ``blend``)."""
        return [str(b) for b in self.meta.get("blend") or []]

    @property
    def segment_rule(self) -> SegmentRule | None:
        """Superpixel averaging of the (blended) probability (the sidecar's ``segment_average``), or None."""
        rule = self.meta.get("segment_average")
        return SegmentRule.from_dict(rule) if rule else None

    @property
    def smooth_sigma(self) -> float:
        """Gaussian sigma (pixels) applied to the probability map before thresholding."""
        return float(self.meta.get("smooth_sigma_px", 0.0))

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Change probability for a ``(feature, y, x)`` stack (float32 ``(y, x)``, 0-1)."""
        nf, h, w = features.shape
        if nf != len(self.meta["features"]):
            raise DetectionError(
                f"model {self.band_set} expects {len(self.meta['features'])} features, got {nf}; "
                "the feature builder and the shipped model disagree: retrain with python -m pipeline.train.oscd"
            )
        flat = features.reshape(nf, -1).T
        out = np.empty(flat.shape[0], np.float64)
        step = 262_144  # rows per call: bounds the memory of the transposed copy
        for i in range(0, flat.shape[0], step):
            out[i:i + step] = self.booster.predict(np.ascontiguousarray(flat[i:i + step]), num_threads=0)
        return out.reshape(h, w).astype(np.float32)


def _models_dir() -> Any:
    return resources.files(MODEL_PACKAGE)


def available_band_sets(model_dir: str | Path | None = None) -> list[str]:
    """Band sets with a model (text + sidecar) in ``model_dir`` (default: the shipped models), richest first."""
    root = Path(model_dir) if model_dir is not None else _models_dir()
    out = []
    for name in BAND_SETS:
        if root.joinpath(f"oscd-{name}.txt").is_file() and root.joinpath(f"oscd-{name}.json").is_file():
            out.append(name)
    return out


def load_model_meta(band_set: str, model_dir: str | Path | None = None) -> dict[str, Any]:
    """The sidecar of ``band_set``'s model (bands, threshold, LOCO scores ...) without loading LightGBM."""
    root = Path(model_dir) if model_dir is not None else _models_dir()
    side = root.joinpath(f"oscd-{band_set}.json")
    if not side.is_file():
        raise DetectionError(
            f"no learned model for band set {band_set} in {root}; train one with python -m pipeline.train.oscd"
        )
    return dict(json.loads(side.read_text(encoding="utf-8")))


@functools.lru_cache(maxsize=8)
def _load(band_set: str, model_dir: str | None) -> LearnedModel:
    import lightgbm as lgb  # imported lazily: only the learned detector needs it

    root = Path(model_dir) if model_dir is not None else _models_dir()
    meta = load_model_meta(band_set, model_dir)
    txt = root.joinpath(f"oscd-{band_set}.txt")
    if not txt.is_file():
        raise DetectionError(
            f"no learned model for band set {band_set} in {root}; train one with python -m pipeline.train.oscd"
        )
    booster = lgb.Booster(model_str=txt.read_text(encoding="utf-8"))
    return LearnedModel(band_set, booster, meta)


def load_model(band_set: str, model_dir: str | Path | None = None) -> LearnedModel:
    """Load (cached) the model for ``band_set`` from ``model_dir`` (default: shipped with the package)."""
    return _load(band_set, None if model_dir is None else str(model_dir))


def prepare_pair(
    before: np.ndarray, after: np.ndarray, bands: list[str], *, do_coregister: bool = True,
    do_normalise: bool = True,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Co-register (on B08) and radiometrically normalise AFTER to BEFORE; returns (after, provenance).

    ``provenance`` holds ``shift_px`` ``[dy, dx]`` (pixels applied to AFTER), ``gains`` and ``offsets``.
    """
    info: dict[str, Any] = {"shift_px": [0.0, 0.0], "gains": None, "offsets": None}
    if do_coregister and "B08" in bands:
        after, shift = coregister(before, after, bands.index("B08"))
        info["shift_px"] = [float(shift[0]), float(shift[1])]
    if do_normalise:
        after, gains, offs = normalise_to(before, after)
        info["gains"] = [float(g) for g in gains]
        info["offsets"] = [float(o) for o in offs]
    return after, info


def adaptive_from_level(level: float, rule: dict[str, float]) -> float:
    """``clip(scale * level, min, max)`` rounded to 0.01, ``level`` being the image's probability quantile."""
    t = float(np.clip(float(rule["scale"]) * level, float(rule["min"]), float(rule["max"])))
    return round(t, 2)


def adaptive_threshold(prob: np.ndarray, valid: np.ndarray, rule: dict[str, float]) -> float:
    """Per-image threshold: ``clip(scale * quantile_q(prob[valid]), min, max)`` (rule keys ``quantile``,
    ``scale``, ``min``, ``max``); ``prob`` is the smoothed probability map, ``valid`` its data mask."""
    pv = prob[valid] if valid.any() else prob.ravel()
    level = float(np.quantile(pv, float(rule["quantile"]))) if pv.size else 0.0
    return adaptive_from_level(level, rule)


class LearnedDetector:
    """The learned pair detector for the band sets that have models in ``model_dir`` (default: shipped)."""

    def __init__(self, model_dir: str | Path | None = None, band_set: str | None = None) -> None:
        self.model_dir = model_dir
        self.available = available_band_sets(model_dir)
        if band_set is not None and band_set not in self.available:
            raise DetectionError(f"no model for band set {band_set}; have {self.available or 'none'}")
        self.band_set = band_set

    def supports(self, bands: list[str]) -> bool:
        """True when a model exists for some band set contained in ``bands``."""
        try:
            choose_band_set(bands, self.available)
        except BandError:
            return False
        return True

    def probability(
        self, before: xr.DataArray, after: xr.DataArray
    ) -> tuple[np.ndarray, np.ndarray, LearnedModel, dict[str, Any]]:
        """Smoothed change probability ``(y, x)``, the valid mask, the model used and preprocessing info."""
        if before.shape[1:] != after.shape[1:]:
            raise DetectionError(
                f"BEFORE grid {before.shape[1:]} and AFTER grid {after.shape[1:]} differ; align AFTER first"
            )
        bb = list(map(str, before["band"].values))
        ab = set(map(str, after["band"].values))
        common = [b for b in bb if b in ab]
        missing = [b for b in MIN_BANDS if b not in common]
        if missing:
            raise BandError(f"both scenes need bands {list(MIN_BANDS)}; missing in one of them: {missing}")
        band_set = self.band_set or choose_band_set(common, self.available)
        model = load_model(band_set, self.model_dir)
        prob, valid, info, (b, a) = self._member(before, after, model)
        if model.blend:
            missing = [m for m in model.blend
                       if m not in self.available or not set(BAND_SETS[m]) <= set(common)]
            if missing:
                raise DetectionError(
                    f"model {band_set} averages its probability with band set(s) {missing}, which have no "
                    f"model in {self.model_dir or 'the package'} or lack bands; retrain with "
                    "python -m pipeline.train.oscd"
                )
            for other in model.blend:
                p, v, _, _ = self._member(before, after, load_model(other, self.model_dir))
                prob += p
                valid &= v
            prob = np.where(valid, prob / (1 + len(model.blend)), 0.0).astype(np.float32)
        if model.segment_rule is not None:
            rule = model.segment_rule
            prob = segment_average(prob, superpixels(b, a, BAND_SETS[model.band_set], rule), rule.weight)
        if model.smooth_sigma > 0:
            prob = ndimage.gaussian_filter(prob, model.smooth_sigma).astype(np.float32)
        return prob, valid, model, info

    def _member(
        self, before: xr.DataArray, after: xr.DataArray, model: LearnedModel
    ) -> tuple[np.ndarray, np.ndarray, dict[str, Any], tuple[np.ndarray, np.ndarray]]:
        """One model's unsmoothed probability (0 outside valid), its valid mask, preprocessing info and the
        ``(band, y, x)`` BEFORE and prepared AFTER arrays of its bands."""
        use = list(BAND_SETS[model.band_set])
        b = before.sel(band=use).values.astype(np.float32)
        a = after.sel(band=use).values.astype(np.float32)
        valid_in = np.isfinite(b).all(0) & np.isfinite(a).all(0)
        if valid_in.sum() < 100:
            raise DetectionError("fewer than 100 pixels have data in both scenes; do BEFORE and AFTER overlap?")
        a, info = prepare_pair(
            b, a, use, do_coregister=bool(model.meta.get("coregister", True)),
            do_normalise=bool(model.meta.get("normalise", True)),
        )
        names, feats, valid = build_features(b, a, use, model.band_set)
        if names != list(model.meta["features"]):
            raise DetectionError(
                f"feature names of band set {model.band_set} differ from the model's; retrain with "
                "python -m pipeline.train.oscd"
            )
        prob = np.where(valid, model.predict(feats), 0.0).astype(np.float32)
        return prob, valid, info, (b, a)

    def detect(self, before: xr.DataArray, after: xr.DataArray, settings: DetectSettings | None = None) -> xr.Dataset:
        """Change map of a pair (see :func:`detect_pair_learned`)."""
        prob, valid, model, info = self.probability(before, after)
        thr = model.decision_threshold(prob, valid)
        change = (prob >= thr) & valid
        dims, coords = ("y", "x"), {"y": before["y"].values, "x": before["x"].values}
        ds = xr.Dataset(
            {
                "change": (dims, change),
                "score": (dims, prob.astype(np.float32)),
                "valid": (dims, valid),
                "confidence": (dims, probability_confidence(prob, thr) * change),
            },
            coords=coords,
            attrs={
                "threshold": thr,
                "method": f"{METHOD_PREFIX}-{model.band_set}",
                "band_set": model.band_set,
                "shift_px": info["shift_px"],
            },
        )
        return ds


def detect_pair_learned(
    before: xr.DataArray, after: xr.DataArray, settings: DetectSettings | None = None,
    model_dir: str | Path | None = None,
) -> xr.Dataset:
    """Detect urban change between two reflectance scenes on the same grid with the learned model.

    Parameters
    ----------
    before, after
        Reflectance (unitless, 0-1), dims ``(band, y, x)``, same ``y``/``x`` grid, NaN = no data; bands
        matched by name, at least B02, B03, B04, B08 in both (the richest band set with a model is used).
    settings
        Accepted for signature parity with :func:`pipeline.detect.detect_pair`; the threshold is the
        model's (a probability, per image when the sidecar has an ``adaptive_threshold`` rule), so
        ``settings.threshold`` (robust-z units) is not used.
    model_dir
        Folder with ``oscd-<band set>.txt/.json`` (default: the models shipped in the package).

    Returns
    -------
    xarray.Dataset
        ``change`` (bool), ``score`` (float32 change probability 0-1, smoothed), ``valid`` (bool),
        ``confidence`` (float32 0-1, 0 where no change) on ``before``'s grid; attrs ``threshold``
        (probability), ``method`` (``pair-lgbm-<band set>``), ``band_set`` and ``shift_px`` ([dy, dx]
        co-registration shift applied to AFTER, pixels).
    """
    return LearnedDetector(model_dir).detect(before, after, settings)
