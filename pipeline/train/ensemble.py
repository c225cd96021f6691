"""Choose, by grouped cross-validation over cities, whether and how the spatial model is averaged with the
pixel classifier (the LightGBM chain): the ensemble chain of :mod:`pipeline.detect.ensemble`.

Usage::

    python -m pipeline.train.ensemble --data ../shared/data/oscd --band-set s2-13 --work .cache \
        --out pipeline/data/unet [--threads 1]

Inputs, none of which saw the city it predicts:

* the spatial model's out-of-fold maps (``<work>/unet/<band set>/oof``, written by
  ``python -m pipeline.train.unet``: 5 folds of 2 cities, :data:`pipeline.train.unet.FOLDS`);
* the LightGBM chain's leave-one-city-out probability maps, formed as the shipped chain forms them (the band
  set's model averaged with its blend partner, superpixel averaging when selected, smoothed; computed here
  with the training recipe of :mod:`pipeline.train.oscd` and cached under ``<work>/lgbm_oof``);
* the extreme CVA changes (robust z ≥ :data:`pipeline.detect.pair.STRONG_Z`) that the LightGBM chain unites
  with its own change map.

The ensemble probability is ``w · unet + (1 - w) · lgbm`` on pixels valid for both; a pixel is change when it
reaches the decision rule's threshold or is an extreme CVA change. The rules (:data:`RULES`) are those the
LightGBM chain chooses from: a global threshold, or the per-image ``clip(scale · quantile_q(p), min, max)``
(bounded, so no scene's own distribution can move the cut outside ``[min, max]``). For each fold, the weight
and rule are those with the best pooled micro-F1 over the *other* folds' cities, and the fold's cities are
scored with them (nothing about a city is used to score it); pixels without data in both dates count as "no
change" (a change there is a miss, as in ``evaluate oscd``). ``w = 0`` is the LightGBM chain, ``w = 1`` the
spatial model. The shipped weight and rule are the best over all cities. The sidecar
``ensemble-<band set>.json`` records the members, ``weight_unet``, the rule (``threshold`` or
``adaptive_threshold``) and the cross-validation (per city: the fold's weight, rule and the threshold it gave,
F1, predicted and true change fractions; pooled micro/macro F1; object recall/precision of components ≥ 0.5
ha), beside the same procedure with ``w`` fixed at 0 and at 1. :mod:`pipeline.detect.pair` runs the ensemble
only where its cross-validated micro-F1 beats both members'.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.detect.learned import adaptive_from_level, adaptive_threshold
from pipeline.evaluate.metrics import f1_of_counts, rate, threshold_counts
from pipeline.evaluate.objects import component_scores
from pipeline.train import oscd as tr

__all__ = ["WEIGHTS", "THRESHOLDS", "RULES", "CityMaps", "select", "lgbm_oof", "main"]

WEIGHTS = np.round(np.arange(0.0, 1.001, 0.125), 3)  # candidate weights of the spatial model
THRESHOLDS = tr.THRESHOLDS  # candidate global probability thresholds (those of the LightGBM training)
#: Candidate decision rules: a global threshold (float) or the LightGBM chain's per-image rule
#: ``clip(scale * quantile_q(p), min, max)`` (dict, :func:`pipeline.detect.learned.adaptive_threshold`).
RULES: tuple[float | dict[str, float], ...] = (
    *(float(t) for t in THRESHOLDS), *(r for r in tr.decision_candidates(adaptive=True) if r is not None)
)


@dataclass(frozen=True)
class CityMaps:
    """One city's out-of-fold maps on its label grid: ``unet``/``lgbm`` probabilities (float32, 0-1),
    ``strong`` extreme CVA changes, ``valid`` (data in both dates) and ``label`` (bool)."""

    unet: np.ndarray
    lgbm: np.ndarray
    strong: np.ndarray
    valid: np.ndarray
    label: np.ndarray

    def blend(self, w: float) -> np.ndarray:
        """The ensemble probability for weight ``w`` (0 without data), as the detector thresholds it."""
        return np.where(self.valid, w * self.unet + (1.0 - w) * self.lgbm, 0.0).astype(np.float32)

    def threshold(self, w: float, rule: float | dict[str, float]) -> float:
        """The probability threshold ``rule`` gives this city's blend (global, or per image)."""
        if isinstance(rule, dict):
            return adaptive_threshold(self.blend(w), self.valid, rule)
        return float(rule)

    def predict(self, w: float, rule: float | dict[str, float]) -> np.ndarray:
        """The change mask: the blend at or above the rule's threshold, or an extreme CVA change."""
        return ((self.blend(w) >= self.threshold(w, rule)) | self.strong) & self.valid

    def counts(self, w: float) -> np.ndarray:
        """``(rule, 3)`` TP, FP, FN over the whole label for each of :data:`RULES` (pixels without data
        count as no change)."""
        p = self.blend(w)
        forced = np.where(self.strong & self.valid, 2.0, p)  # extreme CVA changes pass every threshold
        fc = threshold_counts(forced, self.label, THRESHOLDS)
        pv = p[self.valid] if self.valid.any() else p.ravel()
        levels = {q: float(np.quantile(pv, q)) for q in tr.ADAPTIVE_QUANTILES}
        idx = [int(np.argmin(np.abs(THRESHOLDS - (adaptive_from_level(levels[r["quantile"]], r)
                                                   if isinstance(r, dict) else r)))) for r in RULES]
        return fc[idx]


def _best(counts: np.ndarray) -> tuple[int, int]:
    """Index ``(weight, rule)`` of the best micro-F1 of ``(weight, rule, 3)`` pooled counts (the first on
    ties: lower weights, then global thresholds before per-image rules)."""
    f1 = f1_of_counts(counts.reshape(-1, 3)).reshape(counts.shape[:2])
    wi, ri = np.unravel_index(int(np.argmax(f1)), f1.shape)
    return int(wi), int(ri)


def _rule_json(rule: float | dict[str, float]) -> dict[str, Any]:
    return {"adaptive_threshold": dict(rule)} if isinstance(rule, dict) else {"threshold": float(rule)}


def select(maps: Mapping[str, CityMaps], folds: Sequence[Sequence[str]],
           weights: np.ndarray = WEIGHTS) -> dict[str, Any]:
    """Nested selection and scores of the weight and decision rule over ``folds`` (module docstring).

    Returns ``weight_unet`` and the rule (``threshold`` or ``adaptive_threshold``; best over all cities),
    ``cv`` (nested: per city and pooled) and ``fixed_weight`` ({"0.0": …, "1.0": …}: the same nested
    procedure with the weight held, i.e. each member alone).
    """
    cities = [c for f in folds for c in f]
    cc = {c: np.stack([maps[c].counts(float(w)) for w in weights]) for c in cities}  # (w, rule, 3)

    def nested(allowed: np.ndarray) -> dict[str, Any]:
        per_city: dict[str, Any] = {}
        total = np.zeros(3, np.int64)
        objs = {"true": 0, "found": 0, "predicted": 0, "correct": 0}
        for fold in folds:
            others = np.sum([cc[c][allowed] for c in cities if c not in fold], axis=0)
            wi, ri = _best(others)
            w, rule = float(weights[allowed][wi]), RULES[ri]
            for c in fold:
                m = maps[c]
                row = cc[c][allowed][wi, ri]
                total += row
                pred = m.predict(w, rule)
                o = component_scores(pred, m.label)
                for k in objs:
                    objs[k] += o[k]
                per_city[c] = {
                    "weight_unet": w, **_rule_json(rule), "threshold_used": m.threshold(w, rule),
                    "f1": round(float(f1_of_counts(row)), 4),
                    "predicted_fraction": round(float(pred[m.valid].mean()), 4),
                    "true_fraction": round(float(m.label[m.valid].mean()), 4), "objects": o,
                }
        return {
            "micro_f1": round(float(f1_of_counts(total)), 4),
            "macro_f1": round(float(np.mean([v["f1"] for v in per_city.values()])), 4),
            "object_recall": round(rate(objs["found"], objs["true"]), 4),
            "object_precision": round(rate(objs["correct"], objs["predicted"]), 4),
            "objects": objs, "per_city": per_city,
        }

    everything = np.ones(len(weights), bool)
    wi, ri = _best(np.sum(list(cc.values()), axis=0))
    fixed = {}
    for w in (0.0, 1.0):
        allowed = np.isclose(weights, w)
        if allowed.any():
            fixed[str(w)] = {k: v for k, v in nested(allowed).items() if k != "per_city"}
    return {
        "weight_unet": float(weights[wi]), **_rule_json(RULES[ri]),
        "weights": [float(w) for w in weights], "folds": [list(f) for f in folds],
        "cv": nested(everything), "fixed_weight": fixed,
    }


def lgbm_oof(root: Path, band_set: str, cities: Sequence[str], out: Path, threads: int = 1) -> dict[str, Any]:
    """The LightGBM chain's LOCO probability maps of ``cities`` (cached as ``out/<city>.npy``, the selection
    in ``out/selection.json``), formed as :meth:`pipeline.detect.learned.LearnedDetector.probability` forms
    them, with the shipped models' training recipe (:class:`pipeline.evaluate.oscd.Recipe`, as
    ``evaluate oscd`` retrains its folds)."""
    from scipy import ndimage

    from pipeline.evaluate.oscd import Recipe, loco_chain

    done = out / "selection.json"
    if done.is_file():
        return dict(json.loads(done.read_text()))
    out.mkdir(parents=True, exist_ok=True)
    chain = loco_chain(root, cities, band_set, Recipe(threads=threads))
    probs, sel = chain.probs, chain.selection
    for c in cities:
        p = probs[c]
        smooth = ndimage.gaussian_filter(p, sel["sigma"]) if sel["sigma"] > 0 else p
        np.save(out / f"{c}.npy", np.where(p > 0, smooth, 0.0).astype(np.float32))
    info = {"members": list(chain.members), "smooth_sigma_px": sel["sigma"], "segment_average": chain.segment_rule}
    done.write_text(json.dumps(info, indent=1) + "\n")
    return info


def _strong(root: Path, city: str, cache: Path) -> np.ndarray:
    """The city's extreme CVA changes (cached robust z as ``cache/<city>.npy``)."""
    from pipeline.config import DetectSettings
    from pipeline.detect.pair import STRONG_Z, detect_pair_cva
    from pipeline.fetch.oscd import read_city

    path = cache / f"{city}.npy"
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        oc = read_city(root, city)
        np.save(path, detect_pair_cva(oc.before, oc.after, DetectSettings())["score"].values.astype(np.float32))
    return np.asarray(np.load(path) >= STRONG_Z)


def main(argv: Sequence[str] | None = None) -> int:
    from pipeline.train.unet import FOLDS

    ap = argparse.ArgumentParser(prog="python -m pipeline.train.ensemble", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="the OSCD folder (images/, train_labels/)")
    ap.add_argument("--band-set", default="s2-13", help="the spatial model's band set (its LightGBM partner: "
                    "the richest LightGBM band set it covers)")
    ap.add_argument("--work", type=Path, default=Path(".cache"),
                    help="holds unet/ (python -m pipeline.train.unet --work) and the cached LightGBM maps")
    ap.add_argument("--out", type=Path, default=Path("pipeline/data/unet"), help="where the sidecar goes")
    ap.add_argument("--threads", type=int, default=1, help="LightGBM threads")
    args = ap.parse_args(argv)
    from pipeline.detect.features import choose_band_set
    from pipeline.detect.learned import available_band_sets
    from pipeline.detect.unet_input import UNET_BAND_SETS

    lgbm_set = choose_band_set(list(UNET_BAND_SETS[args.band_set]), available_band_sets())
    cities = sorted(c for f in FOLDS for c in f)
    info = lgbm_oof(args.data, lgbm_set, cities, args.work / "lgbm_oof" / lgbm_set, args.threads)
    oof = args.work / "unet" / args.band_set / "oof"
    maps = {}
    for c in cities:
        z = np.load(args.work / "unet" / "cities" / f"{c}.npz")
        valid = np.isfinite(z["before"]).all(0) & np.isfinite(z["after"]).all(0)
        maps[c] = CityMaps(np.load(oof / f"{c}.npy"), np.load(args.work / "lgbm_oof" / lgbm_set / f"{c}.npy"),
                           _strong(args.data, c, args.work / "lgbm_oof" / "cva"), valid, z["label"].astype(bool))
    result = select(maps, FOLDS)
    side = {"chain": "ensemble", "band_set": args.band_set, "members": {"unet": args.band_set, "lgbm": lgbm_set},
            "lgbm_chain": info, **result}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"ensemble-{args.band_set}.json"
    path.write_text(json.dumps(side, indent=1) + "\n")
    cv = result["cv"]
    rule = result.get("adaptive_threshold") or result.get("threshold")
    print(f"{path}: weight_unet {result['weight_unet']}, rule {rule}; nested CV micro-F1 "
          f"{cv['micro_f1']} (LightGBM alone {result['fixed_weight'].get('0.0', {}).get('micro_f1')}, spatial "
          f"model alone {result['fixed_weight'].get('1.0', {}).get('micro_f1')})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
