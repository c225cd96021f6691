"""Train the learned pair detector on the labelled OSCD cities (reproducible, seeded, CPU only).

Usage::

    python -m pipeline.train.oscd --data ../shared/data/oscd --out pipeline/data/models/ \
        [--band-sets s2-13,s2-6,s2-4] [--report oscd_train.json] [--no-loco]

For every band set (see :data:`pipeline.detect.features.BAND_SETS`):

1. each labelled city is read as ``compoundwatch compare imgs_1/ imgs_2/`` reads it
   (:func:`pipeline.fetch.oscd.read_city`), AFTER co-registered and normalised to BEFORE
   (:func:`pipeline.detect.learned.prepare_pair`) and turned into features;
2. training pixels are sampled per city (seeded): up to ``--pos`` change and ``--neg`` no-change pixels;
3. leave-one-city-out (LOCO): for each city a model trained on the other cities predicts it; the Gaussian
   smoothing of the probability and the decision rule of the shipped model are chosen on the pooled LOCO
   predictions (best micro-F1): a global probability threshold or a per-image adaptive threshold
   ``clip(scale * quantile_q(probability), min, max)`` (the threshold does not transfer between cities: the
   model is under-confident on some, so a cut relative to the image's own high-probability level wins);
   the report also gives the strict per-city score where each city's rule comes from the *other* cities'
   LOCO predictions only. A richer band set's model is shipped averaged with the 4-band model
   (:data:`BLEND_PARTNER`, the sidecar's ``blend``): its rule is chosen on the mean of the two models' LOCO
   probabilities (the report keeps the model's own scores as ``loco_alone``), and the 4-band model is
   trained whenever a richer one is. Superpixel averaging of the probability
   (:mod:`pipeline.detect.segments`, the sidecar's ``segment_average``) is kept when it raises the pooled
   LOCO micro-F1 (:func:`select_chain`);
4. the shipped model is trained on all cities and written as ``oscd-<band set>.txt`` (LightGBM text model)
   with the sidecar ``oscd-<band set>.json`` (bands, feature names, threshold, ``adaptive_threshold`` rule,
   smoothing, LOCO scores).

Hold-out cities (:data:`pipeline.fetch.oscd.HOLDOUT_CITIES`) are never read.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from pipeline.detect.features import BAND_SETS, build_features
from pipeline.detect.learned import prepare_pair
from pipeline.detect.segments import SegmentRule, segment_average, superpixels
from pipeline.evaluate.metrics import Scores, f1_of_counts, threshold_counts
from pipeline.fetch.oscd import HOLDOUT_CITIES, labelled_cities, read_city

__all__ = [
    "LGB_PARAMS", "BLEND_PARTNER", "CityData", "load_city", "sample_rows", "train_booster", "loco",
    "select_threshold", "select_chain", "decision_candidates", "blend_partners", "blend_probs", "f1_counts",
    "main",
]

SEED = 0
N_TREES = 250
LGB_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 100,
    "feature_fraction": 0.5,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "verbose": -1,
    "deterministic": True,
    "force_col_wise": True,
}
SIGMAS: tuple[float, ...] = (0.0, 1.0, 1.5)  # candidate probability smoothing, pixels
THRESHOLDS = np.round(np.arange(0.05, 0.981, 0.01), 2)  # candidate probability thresholds


@dataclass
class CityData:
    """Sampled training rows of one city and what is needed to predict it again."""

    name: str
    x: np.ndarray  # (n, feature) float32
    y: np.ndarray  # (n,) bool
    label: np.ndarray  # (y, x) bool
    shape: tuple[int, int]


def _prepared(root: Path, city: str, band_set: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    bands = list(BAND_SETS[band_set])
    oc = read_city(root, city, bands)
    assert oc.label is not None
    b = oc.before.values.astype(np.float32)
    a, _ = prepare_pair(b, oc.after.values.astype(np.float32), bands)
    return b, a, oc.label


def _city_arrays(root: Path, city: str, band_set: str) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    b, a, label = _prepared(root, city, band_set)
    names, feats, valid = build_features(b, a, BAND_SETS[band_set], band_set)
    return names, feats, valid, label


def select_chain(
    probs: dict[str, np.ndarray], labels: dict[str, np.ndarray], segments: dict[str, np.ndarray] | None,
    rule: SegmentRule = SegmentRule(),
) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, np.ndarray]]:
    """The decision rule (:func:`select_threshold`) of LOCO maps with or without superpixel averaging
    (``segments``: labels per city, or None for without), whichever pools the higher micro-F1.

    Returns the selection, the ``segment_average`` rule (a dict, or None when the plain maps win) and the
    maps the selection was made on.
    """
    sel = select_threshold(probs, labels)
    if segments is None:
        return sel, None, probs
    averaged = {c: segment_average(probs[c], segments[c], rule.weight) for c in probs}
    sel_avg = select_threshold(averaged, labels)
    if sel_avg["micro_f1"] > sel["micro_f1"]:
        return {**sel_avg, "without_segments_micro_f1": sel["micro_f1"]}, rule.as_dict(), averaged
    return {**sel, "with_segments_micro_f1": sel_avg["micro_f1"]}, None, probs


def load_city(
    root: Path, city: str, band_set: str, n_pos: int, n_neg: int, rng: np.random.Generator
) -> tuple[list[str], CityData]:
    """Features of one city and a seeded sample of up to ``n_pos`` change / ``n_neg`` no-change pixels."""
    names, feats, valid, label = _city_arrays(root, city, band_set)
    idx = sample_rows(label, valid, n_pos, n_neg, rng)
    x = np.ascontiguousarray(feats.reshape(feats.shape[0], -1)[:, idx].T)
    return names, CityData(city, x, label.ravel()[idx], label, label.shape)


def sample_rows(label: np.ndarray, valid: np.ndarray, n_pos: int, n_neg: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted flat indices: up to ``n_pos`` valid change and ``n_neg`` valid no-change pixels (no repeats)."""
    pos = np.flatnonzero((label & valid).ravel())
    neg = np.flatnonzero((~label & valid).ravel())
    pos = rng.choice(pos, min(n_pos, pos.size), replace=False)
    neg = rng.choice(neg, min(n_neg, neg.size), replace=False)
    return np.sort(np.concatenate([pos, neg]))


def train_booster(x: np.ndarray, y: np.ndarray, n_trees: int = N_TREES, threads: int = 2, seed: int = SEED) -> Any:
    """A LightGBM binary classifier on rows ``x`` (float32) and labels ``y`` (bool)."""
    import lightgbm as lgb

    params = {**LGB_PARAMS, "seed": seed, "num_threads": threads}
    return lgb.train(params, lgb.Dataset(x, y.astype(np.float32), free_raw_data=True), n_trees)


def _predict_full(booster: Any, feats: np.ndarray) -> np.ndarray:
    nf, h, w = feats.shape
    flat = feats.reshape(nf, -1).T
    out = np.empty(flat.shape[0], np.float64)
    step = 262_144
    for i in range(0, flat.shape[0], step):
        out[i:i + step] = booster.predict(np.ascontiguousarray(flat[i:i + step]))
    return out.reshape(h, w).astype(np.float32)


def f1_counts(prob: np.ndarray, label: np.ndarray, thresholds: np.ndarray = THRESHOLDS) -> np.ndarray:
    """``(threshold, 3)`` int64 counts TP, FP, FN of ``prob >= t`` against ``label`` for each threshold."""
    return threshold_counts(prob, label, thresholds)


#: Candidate per-image adaptive thresholds ``clip(scale * quantile_q(prob), lo, hi)`` (see
#: :func:`pipeline.detect.learned.adaptive_threshold`): the image's own high-probability level sets the cut,
#: so cities where the model is under-confident (low probabilities overall) are not cut at a level that only
#: suits confident cities.
ADAPTIVE_QUANTILES: tuple[float, ...] = (0.98, 0.99, 0.995)
ADAPTIVE_SCALES = np.round(np.arange(0.5, 0.901, 0.05), 2)
ADAPTIVE_MINS: tuple[float, ...] = (0.2, 0.25, 0.3, 0.35, 0.4)
ADAPTIVE_MAXS = np.round(np.arange(0.5, 0.801, 0.05), 2)


def decision_candidates(adaptive: bool) -> list[dict[str, float] | None]:
    """The decision rules :func:`select_threshold` tries: None (a global threshold) and, with ``adaptive``,
    every per-image rule of the ``ADAPTIVE_*`` grid."""
    out: list[dict[str, float] | None] = [None]  # None: the global threshold
    if adaptive:
        for q in ADAPTIVE_QUANTILES:
            for a in ADAPTIVE_SCALES:
                for lo in ADAPTIVE_MINS:
                    for hi in ADAPTIVE_MAXS:
                        if hi > lo:
                            out.append({"quantile": q, "scale": float(a), "min": lo, "max": float(hi)})
    return out


def _threshold_index(level: float, cand: dict[str, float]) -> int:
    from pipeline.detect.learned import adaptive_from_level

    return int(np.argmin(np.abs(THRESHOLDS - adaptive_from_level(level, cand))))


def select_threshold(
    probs: dict[str, np.ndarray], labels: dict[str, np.ndarray], sigmas: Sequence[float] = SIGMAS,
    adaptive: bool = True, valids: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Choose smoothing sigma and the decision rule on pooled LOCO probabilities; strict per-city scores too.

    Decision rules: one global probability threshold (:data:`THRESHOLDS`) or, with ``adaptive``, a per-image
    threshold ``clip(scale * quantile_q(prob), min, max)`` over the grid of ``ADAPTIVE_*`` (probabilities
    of pixels outside ``valids``, default ``prob > 0``, are ignored for the quantile).

    Returns a dict: ``sigma``, ``threshold`` (the best global threshold at that sigma: the fallback),
    ``adaptive`` (the chosen rule's parameters, or None when the global threshold wins), ``micro_f1``
    (pooled, at the chosen rule), ``macro_f1``, ``per_city`` (city -> f1/precision/recall at the chosen rule),
    ``global`` (micro/macro F1 of the best global threshold at that sigma) and ``strict`` (each city scored
    with the rule, sigma fixed, that maximises the pooled F1 of the *other* cities: ``micro_f1``,
    ``macro_f1``, ``per_city``).
    """
    cands = decision_candidates(adaptive)
    cities = list(probs)
    best: dict[str, Any] | None = None
    table: dict[float, np.ndarray] = {}
    for s in sigmas:
        # counts[k, j] = TP/FP/FN of candidate k on city j
        counts = np.zeros((len(cands), len(cities), 3), np.int64)
        glob = np.zeros((len(THRESHOLDS), len(cities), 3), np.int64)
        for j, c in enumerate(cities):
            p = probs[c]
            v = valids[c] if valids is not None else p > 0
            ps = ndimage.gaussian_filter(p, s) if s > 0 else p
            fc = f1_counts(ps, labels[c])
            glob[:, j] = fc
            pv = ps[v] if v.any() else ps.ravel()
            levels = {q: float(np.quantile(pv, q)) for q in ADAPTIVE_QUANTILES}
            for k, cand in enumerate(cands):
                if cand is not None:
                    counts[k, j] = fc[_threshold_index(levels[cand["quantile"]], cand)]
        ig = int(np.argmax(f1_of_counts(glob.sum(1))))
        counts[0] = glob[ig]
        table[s] = counts
        pooled = f1_of_counts(counts.sum(1))
        k = int(np.argmax(pooled))
        if best is None or pooled[k] > best["micro_f1"]:
            best = {"sigma": float(s), "threshold": float(THRESHOLDS[ig]), "adaptive": cands[k],
                    "micro_f1": float(pooled[k]), "k": k,
                    "global": {"micro_f1": float(f1_of_counts(glob[ig].sum(0))),
                               "macro_f1": float(np.mean([f1_of_counts(glob[ig, j]) for j in range(len(cities))]))}}
    assert best is not None
    counts = table[best["sigma"]]
    k = best.pop("k")
    per_city = {c: _scores(counts[k, j]) for j, c in enumerate(cities)}
    best["macro_f1"] = float(np.mean([v["f1"] for v in per_city.values()]))
    best["per_city"] = per_city
    strict: dict[str, Any] = {"per_city": {}}
    total = np.zeros(3, np.int64)
    for j, c in enumerate(cities):
        others = counts[:, [i for i in range(len(cities)) if i != j]].sum(1)
        kk = int(np.argmax(f1_of_counts(others)))
        rule = cands[kk]
        strict["per_city"][c] = {**_scores(counts[kk, j]), "rule": rule if rule is not None else "global"}
        total += counts[kk, j]
    strict["micro_f1"] = float(f1_of_counts(total))
    strict["macro_f1"] = float(np.mean([v["f1"] for v in strict["per_city"].values()]))
    best["strict"] = strict
    return best


def _scores(c: np.ndarray) -> dict[str, float]:
    """Scores of one ``(tp, fp, fn)`` count row (:class:`pipeline.evaluate.metrics.Scores`)."""
    return Scores(*(int(v) for v in c)).as_dict()


def loco(
    root: Path, cities: Sequence[str], band_set: str, data: dict[str, CityData], n_trees: int = N_TREES,
    threads: int = 2, log: Any = print, segments: dict[str, np.ndarray] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Leave-one-city-out probabilities (unsmoothed, 0 outside valid) and wall seconds per city.

    The wall time per city covers training the fold model and predicting the city (features included).
    ``segments``, when given, is filled with each city's superpixel labels, cut as ``compare`` cuts them
    (:func:`pipeline.detect.segments.superpixels`) from the pair the fold reads anyway.
    """
    probs: dict[str, np.ndarray] = {}
    secs: dict[str, float] = {}
    for c in cities:
        t0 = time.perf_counter()
        x = np.concatenate([data[k].x for k in cities if k != c])
        y = np.concatenate([data[k].y for k in cities if k != c])
        booster = train_booster(x, y, n_trees, threads)
        b, a, _ = _prepared(root, c, band_set)
        _, feats, valid = build_features(b, a, BAND_SETS[band_set], band_set)
        probs[c] = np.where(valid, _predict_full(booster, feats), 0.0).astype(np.float32)
        if segments is not None:
            segments[c] = superpixels(b, a, BAND_SETS[band_set])
        secs[c] = time.perf_counter() - t0
        log(f"  LOCO {band_set} {c}: {secs[c]:.1f} s")
    return probs, secs


#: The band set whose model the richer band sets' models are averaged with (the sidecar's ``blend``):
#: the 4-band model cannot fit city-specific spectra, and on the OSCD cities left out the mean of the two
#: models' probabilities scores higher than either (see the module docstring).
BLEND_PARTNER = "s2-4"


def blend_partners(band_set: str) -> list[str]:
    """Band sets whose models' probabilities are averaged with ``band_set``'s (none for the partner itself)."""
    return [] if band_set == BLEND_PARTNER else [BLEND_PARTNER]


def blend_probs(members: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per city, the mean of the members' LOCO probability maps; 0 where any member is 0 (invalid there)."""
    out: dict[str, np.ndarray] = {}
    for c in members[0]:
        maps = [m[c] for m in members]
        valid = np.logical_and.reduce([p > 0 for p in maps])
        out[c] = np.where(valid, np.mean(maps, axis=0), 0.0).astype(np.float32)
    return out


@dataclass
class _Sampled:
    names: list[str]
    data: dict[str, CityData]
    probs: dict[str, np.ndarray] | None = None  # LOCO probabilities (unsmoothed)
    secs: dict[str, float] | None = None  # LOCO wall seconds per city
    segments: dict[str, np.ndarray] | None = None  # superpixel labels per city (cut during LOCO)
    loco_seconds: float = 0.0


def _sample_and_loco(args: argparse.Namespace, band_set: str, cities: list[str]) -> _Sampled:
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    data: dict[str, CityData] = {}
    names: list[str] = []
    for c in cities:
        names, data[c] = load_city(args.data, c, band_set, args.pos, args.neg, rng)
    print(f"[{band_set}] {len(names)} features, {sum(len(d.y) for d in data.values())} sampled pixels "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)
    out = _Sampled(names, data)
    if args.loco:
        t1 = time.perf_counter()
        out.segments = {}
        out.probs, out.secs = loco(args.data, cities, band_set, data, args.trees, args.threads,
                                   log=lambda m: print(m, flush=True), segments=out.segments)
        out.loco_seconds = time.perf_counter() - t1
    return out


def _train_band_set(
    args: argparse.Namespace, band_set: str, cities: list[str], sampled: dict[str, _Sampled]
) -> dict[str, Any]:
    own = sampled[band_set]
    data, names = own.data, own.names
    partners = blend_partners(band_set)
    record: dict[str, Any] = {}
    sigma, threshold, adaptive = 1.0, 0.5, None
    segment_rule: dict[str, Any] | None = None
    if own.probs is not None:
        assert own.secs is not None  # set together with probs by the LOCO run
        part_probs: list[dict[str, np.ndarray]] = []
        part_secs: list[dict[str, float]] = []
        for p in partners:  # partners run LOCO whenever the band set does
            probs_p, secs_p = sampled[p].probs, sampled[p].secs
            assert probs_p is not None and secs_p is not None
            part_probs.append(probs_p)
            part_secs.append(secs_p)
        labels = {c: data[c].label for c in cities}
        alone = select_threshold(own.probs, labels)
        maps = blend_probs([own.probs, *part_probs]) if partners else own.probs
        sel, segment_rule, _ = select_chain(maps, labels, own.segments)
        sigma, threshold, adaptive = sel["sigma"], sel["threshold"], sel["adaptive"]
        secs = {c: own.secs[c] + sum(s[c] for s in part_secs) for c in cities}
        record = {"loco": sel, "loco_seconds_per_city": secs,
                  "loco_seconds": own.loco_seconds + sum(sampled[p].loco_seconds for p in partners)}
        record["segment_average"] = segment_rule
        if partners:
            record["blend"] = partners
            record["loco_alone"] = {k: alone[k] for k in ("micro_f1", "macro_f1", "sigma", "adaptive")}
            record["loco_alone"]["strict_micro_f1"] = alone["strict"]["micro_f1"]
        print(f"[{band_set}] LOCO micro-F1 {sel['micro_f1']:.4f}"
              + (f" averaged with {'+'.join(partners)} (alone {alone['micro_f1']:.4f})" if partners else "")
              + (" and per superpixel" if segment_rule else "")
              + f" (sigma {sigma}, threshold {threshold}, adaptive {adaptive}; global threshold only "
              f"{sel['global']['micro_f1']:.4f}); strict {sel['strict']['micro_f1']:.4f}", flush=True)
    t2 = time.perf_counter()
    x = np.concatenate([data[c].x for c in cities])
    y = np.concatenate([data[c].y for c in cities])
    booster = train_booster(x, y, args.trees, args.threads, args.seed)
    train_s = time.perf_counter() - t2
    import lightgbm as lgb

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model_path = out / f"oscd-{band_set}.txt"
    booster.save_model(str(model_path))
    meta = {
        "band_set": band_set,
        "bands": list(BAND_SETS[band_set]),
        "features": names,
        "threshold": threshold,
        "adaptive_threshold": adaptive,
        "smooth_sigma_px": sigma,
        "blend": partners,
        "segment_average": segment_rule,
        "coregister": True,
        "normalise": True,
        "model_format": "lightgbm-text",
        "training": {
            "cities": cities,
            "pixels_per_city": {"change_max": args.pos, "no_change_max": args.neg},
            "n_rows": int(len(y)),
            "n_trees": args.trees,
            "params": LGB_PARAMS,
            "seed": args.seed,
            "lightgbm": lgb.__version__,
            "python": platform.python_version(),
            "train_seconds": train_s,
        },
        **({"loco": {k: record["loco"][k]
                     for k in ("micro_f1", "macro_f1", "sigma", "threshold", "adaptive", "global")},
            "loco_strict": {k: record["loco"]["strict"][k] for k in ("micro_f1", "macro_f1")}}
           if record else {}),
    }
    (out / f"oscd-{band_set}.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    size = model_path.stat().st_size
    print(f"[{band_set}] model {model_path} {size / 1e6:.2f} MB, trained in {train_s:.0f} s", flush=True)
    return {**record, "model_bytes": size, "train_seconds": train_s, "threshold": threshold, "sigma": sigma}


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m pipeline.train.oscd", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data/oscd"), help="OSCD folder")
    p.add_argument("--out", type=Path, default=Path("pipeline/data/models"), help="model folder")
    p.add_argument("--band-sets", default="s2-13,s2-6,s2-4", help="comma-separated band sets to train")
    p.add_argument("--pos", type=int, default=8000, help="max change pixels sampled per city")
    p.add_argument("--neg", type=int, default=16000, help="max no-change pixels sampled per city")
    p.add_argument("--trees", type=int, default=N_TREES, help="boosting rounds")
    p.add_argument("--threads", type=int, default=2, help="LightGBM threads")
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--loco", action=argparse.BooleanOptionalAction, default=True,
                   help="run leave-one-city-out to choose threshold/smoothing (default on)")
    p.add_argument("--report", type=Path, default=None, help="write the LOCO report (JSON) here")
    args = p.parse_args(argv)
    cities = [c for c in labelled_cities(args.data) if c not in HOLDOUT_CITIES]
    sets = [s.strip() for s in args.band_sets.split(",") if s.strip()]
    unknown = [s for s in sets if s not in BAND_SETS]
    if unknown:
        p.error(f"unknown band set(s) {unknown}; known: {list(BAND_SETS)}")
    for s in list(sets):  # a blended model needs its partners' models (and their LOCO predictions)
        sets += [p for p in blend_partners(s) if p not in sets]
    sampled = {s: _sample_and_loco(args, s, cities) for s in sets}
    report: dict[str, Any] = {"cities": cities, "band_sets": {}}
    for s in sets:
        report["band_sets"][s] = _train_band_set(args, s, cities, sampled)
    if args.report is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
