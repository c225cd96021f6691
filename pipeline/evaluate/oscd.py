"""The OSCD evaluation harness behind ``compoundwatch evaluate oscd``: per-city pixel scores of the naive
CVA + Otsu baseline and of the learned chain scored leave-one-city-out (LOCO), in one document.

* :class:`pipeline.evaluate.metrics.Scores` holds the change-class counts of one city (or of a pool of
  cities) and derives precision, recall, F1 = 2 tp / (2 tp + fp + fn) and IoU (empty classes: the rule of
  :mod:`pipeline.evaluate.metrics`). Pixels are scored over the whole label (imgs_1 10 m grid); a pixel
  without data in both dates is "no change" for every chain, so a change there is a miss.
* :func:`pool` gives micro scores (counts summed over cities, then F1) and the macro F1 (mean of cities);
  each chain also gets object recall and precision over change components of ≥ 0.5 ha
  (:func:`pipeline.evaluate.objects.component_scores`, counts pooled over the cities).
* :func:`evaluate_baseline` runs :func:`pipeline.detect.pair.detect_pair_cva` on each city as
  ``compoundwatch compare`` reads it (:func:`pipeline.fetch.oscd.read_city`).
* :func:`evaluate_learned` trains one model per city on the *other* cities with the training recipe
  (:mod:`pipeline.train.oscd`: same sampling, seed, LightGBM parameters; for a band set shipped averaged
  with the 4-band model, both models per city and the mean of their probabilities), chooses superpixel
  averaging, the smoothing and decision rule on the pooled LOCO probabilities exactly as training chooses
  the shipped model's (:func:`pipeline.train.oscd.select_chain`), then predicts each held-out city as
  ``compare`` does: smoothed probability ≥ the (per-image adaptive) threshold on valid pixels, united with
  extreme CVA changes (robust z ≥ :data:`pipeline.detect.pair.STRONG_Z`). The "strict" variant also takes
  each city's decision rule from the other cities' predictions only (nothing about the city is used to
  score it).
* :func:`learned_from_report` reuses the LOCO section of a training report
  (``python -m pipeline.train.oscd --report``) instead of retraining: the classifier alone, without the
  CVA union (the report keeps counts, not probabilities).
* :func:`build_document` writes the metrics document (top level: the best chain run; ``spatial``: the shipped
  spatial models' grouped cross-validation from their sidecars), :func:`write_plot` a per-city grouped bar
  chart (PNG).

Seconds are wall-clock seconds on this machine. Hold-out cities (:data:`pipeline.fetch.oscd.HOLDOUT_CITIES`) are
never listed nor read.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import ConfigError, InputFileError
from pipeline.evaluate.metrics import Scores, rate
from pipeline.evaluate.objects import component_scores
from pipeline.fetch.oscd import HOLDOUT_CITIES, labelled_cities, read_city

__all__ = [
    "BASELINE_METHOD",
    "LEARNED_METHOD",
    "ChainResult",
    "LocoChain",
    "loco_chain",
    "Recipe",
    "Progress",
    "pick_cities",
    "pool",
    "evaluate_baseline",
    "evaluate_learned",
    "learned_from_report",
    "build_document",
    "spatial_models",
    "write_document",
    "write_plot",
]

BASELINE_METHOD = "cva-otsu"
LEARNED_METHOD = "lgbm-loco"

#: ``progress(phase, city, done)``: called with ``done=False`` when work on ``city`` starts and ``True`` when
#: it ends; phases ``"baseline"``, ``"sample <band set>"`` (features + training rows) and
#: ``"loco <band set>"`` (one fold), once per band set of the learned chain (the model and the ones it is
#: averaged with).
Progress = Callable[[str, str, bool], None]


def _quiet(phase: str, city: str, done: bool) -> None:
    """The default progress callback: nothing."""


def pool(per_city: Mapping[str, Scores]) -> dict[str, float]:
    """Micro scores (pixel counts summed over the cities, then scored) and the macro F1 (mean city F1)."""
    if not per_city:
        raise ConfigError("no city to pool scores over")
    total = sum(per_city.values(), Scores(0, 0, 0))
    return {"micro_f1": total.f1, "macro_f1": float(np.mean([s.f1 for s in per_city.values()])),
            "micro_precision": total.precision, "micro_recall": total.recall, "micro_iou": total.iou}


@dataclass
class ChainResult:
    """Per-city scores and wall seconds of one chain; ``info`` holds chain-specific details (JSON-ready)."""

    method: str
    scores: dict[str, Scores]
    seconds: dict[str, float]
    info: dict[str, Any] = field(default_factory=dict)
    objects: dict[str, dict[str, int]] = field(default_factory=dict)  # component_scores per city

    def summary(self) -> dict[str, Any]:
        """``method``, pooled scores, ``object_recall``/``object_precision`` (change components of ≥ 0.5 ha,
        :func:`pipeline.evaluate.objects.component_scores`, pooled over the cities) and ``per_city``
        {city: precision … fn, seconds, objects} (see :func:`pool`)."""
        per_city = {c: {**s.as_dict(), "seconds": round(self.seconds.get(c, float("nan")), 3),
                        **({"objects": self.objects[c]} if c in self.objects else {})}
                    for c, s in self.scores.items()}
        out = {"method": self.method, **pool(self.scores)}
        if self.objects:
            tot = {k: sum(o[k] for o in self.objects.values()) for k in ("true", "found", "predicted", "correct")}
            out["object_recall"] = rate(tot["found"], tot["true"])
            out["object_precision"] = rate(tot["correct"], tot["predicted"])
        return {**out, "per_city": per_city}


@dataclass(frozen=True)
class Recipe:
    """How each LOCO fold is trained; the defaults are the shipped models' recipe (:mod:`pipeline.train.oscd`)

    ``n_trees`` boosting rounds, up to ``n_pos`` change and ``n_neg`` no-change pixels sampled per city,
    ``threads`` LightGBM threads, ``seed`` of the sampling and of LightGBM. Fewer trees or rows are faster
    (tests) but are not the shipped recipe.
    """

    n_trees: int = 250
    n_pos: int = 8000
    n_neg: int = 16000
    threads: int = 2
    seed: int = 0


def pick_cities(root: str | Path, cities: Sequence[str] | None = None) -> list[str]:
    """The labelled cities under ``root`` to evaluate: all of them, or the subset ``cities`` (checked).

    Raises :class:`~pipeline.errors.InputFileError` when ``root`` is no OSCD folder or holds no labelled
    city, :class:`~pipeline.errors.ConfigError` for a hold-out or unknown city name.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputFileError(
            f"{root} is not a folder; give the OSCD folder holding images/ and train_labels/"
        )
    wanted = [c.strip() for c in cities or [] if c.strip()]
    held = [c for c in wanted if c in HOLDOUT_CITIES]
    if held:
        verb = "cities are" if len(held) > 1 else "city is"
        raise ConfigError(f"{', '.join(held)}: hold-out {verb} never evaluated")
    have = labelled_cities(root)
    if not have:
        raise InputFileError(f"{root / 'train_labels'} holds no labelled city (<city>/cm/<city>-cm.tif)")
    unknown = [c for c in wanted if c not in have]
    if unknown:
        noun = "cities" if len(unknown) > 1 else "city"
        raise ConfigError(f"unknown or unlabelled {noun} {', '.join(unknown)}; {root} has: {', '.join(have)}")
    return [c for c in have if c in wanted] if wanted else have


def evaluate_baseline(
    root: str | Path, cities: Sequence[str], progress: Progress = _quiet
) -> tuple[ChainResult, dict[str, np.ndarray]]:
    """Score the naive CVA + Otsu chain (``detect_pair_cva``, default settings) on each city.

    Returns the result (seconds: detection only, reading excluded) and, per city, the extreme-CVA mask
    (change with robust z ≥ ``STRONG_Z``) that the learned chain unites with its own change map.
    """
    from pipeline.config import DetectSettings
    from pipeline.detect.pair import STRONG_Z, detect_pair_cva

    scores: dict[str, Scores] = {}
    seconds: dict[str, float] = {}
    strong: dict[str, np.ndarray] = {}
    objects: dict[str, dict[str, int]] = {}
    for c in cities:
        progress("baseline", c, False)
        oc = read_city(root, c)
        assert oc.label is not None  # pick_cities only lists labelled cities
        t0 = time.perf_counter()
        det = detect_pair_cva(oc.before, oc.after, DetectSettings())
        seconds[c] = time.perf_counter() - t0
        change = det["change"].values
        scores[c] = Scores.from_masks(change, oc.label)
        objects[c] = component_scores(change, oc.label)
        strong[c] = change & (det["score"].values >= STRONG_Z)
        progress("baseline", c, True)
    return ChainResult(BASELINE_METHOD, scores, seconds, objects=objects), strong


def _decide(prob: np.ndarray, sigma: float, rule: dict[str, float] | None, threshold: float) -> np.ndarray:
    """The shipped model's decision on a raw LOCO probability map (0 outside valid pixels): smooth by
    ``sigma`` px, cut at the per-image adaptive threshold of ``rule`` (else the global ``threshold``)."""
    from scipy import ndimage

    from pipeline.detect.learned import adaptive_threshold

    valid = prob > 0  # LOCO maps are 0 exactly where features are invalid (sigmoid output > 0 elsewhere)
    smooth = ndimage.gaussian_filter(prob, sigma).astype(np.float32) if sigma > 0 else prob
    thr = adaptive_threshold(smooth, valid, rule) if rule is not None else threshold
    return (smooth >= thr) & valid


@dataclass(frozen=True)
class LocoChain:
    """The LightGBM chain's leave-one-city-out maps: ``probs`` (per city, 0-1 on its label grid, after the
    chosen segment averaging, before smoothing), ``labels``, the chosen smoothing and decision rule
    (``selection``, as :func:`pipeline.train.oscd.select_chain` returns it), the ``members`` averaged, the
    ``segment_rule`` and the seconds per city (its folds' training, reading, features and prediction)."""

    probs: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    selection: dict[str, Any]
    members: tuple[str, ...]
    segment_rule: Any
    seconds: dict[str, float]


def loco_chain(root: str | Path, cities: Sequence[str], band_set: str, recipe: Recipe = Recipe(),
               progress: Progress = _quiet) -> LocoChain:
    """Form the LightGBM chain of ``band_set`` leave one city out, as the shipped chain forms it: each member
    (the band set's model and its blend partners) trained with ``recipe`` on the other cities' sampled
    pixels, the members averaged, segment averaging and the decision rule chosen on the pooled maps. Used by
    ``evaluate oscd`` and by the ensemble's selection (:mod:`pipeline.train.ensemble`)."""
    from pipeline.train import oscd as tr

    cities = list(cities)
    members = [band_set] + tr.blend_partners(band_set)  # the shipped chain averages these models
    member_probs: list[dict[str, np.ndarray]] = []
    segments: dict[str, np.ndarray] = {}  # of the chain's own band set, cut in its folds
    secs = dict.fromkeys(cities, 0.0)
    labels: dict[str, np.ndarray] = {}
    for bs in members:
        rng = np.random.default_rng(recipe.seed)  # the training recipe's sampling: same seed, same city order
        data: dict[str, tr.CityData] = {}
        for c in cities:
            progress(f"sample {bs}", c, False)
            data[c] = tr.load_city(Path(root), c, bs, recipe.n_pos, recipe.n_neg, rng)[1]
            progress(f"sample {bs}", c, True)
        labels = {c: data[c].label for c in cities}
        folds_done: list[str] = []

        def log(_message: str, bs: str = bs, folds_done: list[str] = folds_done) -> None:  # after each fold
            folds_done.append(cities[len(folds_done)])
            progress(f"loco {bs}", folds_done[-1], True)
            if len(folds_done) < len(cities):
                progress(f"loco {bs}", cities[len(folds_done)], False)

        progress(f"loco {bs}", cities[0], False)
        probs, fold_secs = tr.loco(Path(root), cities, bs, data, recipe.n_trees, recipe.threads, log=log,
                                   segments=segments if bs == band_set else None)
        member_probs.append(probs)
        for c in cities:
            secs[c] += fold_secs[c]
    probs = tr.blend_probs(member_probs) if len(members) > 1 else member_probs[0]
    sel, segment_rule, probs = tr.select_chain(probs, labels, segments)
    return LocoChain(probs, labels, sel, tuple(members), segment_rule, secs)


def evaluate_learned(
    root: str | Path, cities: Sequence[str], band_set: str = "s2-13", *, recipe: Recipe = Recipe(),
    strong: Mapping[str, np.ndarray] | None = None, cva_seconds: Mapping[str, float] | None = None,
    progress: Progress = _quiet,
) -> ChainResult:
    """Score the learned chain leave-one-city-out on ``cities`` (at least 2).

    Each city is predicted by a model trained (``recipe``) on the other cities' sampled pixels; the smoothing
    and decision rule are chosen on the pooled LOCO probabilities (as for the shipped model) and each
    prediction is united with ``strong`` (the extreme-CVA masks of :func:`evaluate_baseline`; none: the
    classifier alone). Seconds per city: training the fold, reading, features and prediction of the city,
    plus its ``cva_seconds`` (the union's CVA detection). ``info`` holds the decision rule, the strict
    scores, the classifier-only pooled F1 and the recipe.
    """
    from pipeline.detect.features import BAND_SETS

    if band_set not in BAND_SETS:
        raise ConfigError(f"unknown band set {band_set!r}; known: {', '.join(BAND_SETS)}")
    cities = list(cities)
    if len(cities) < 2:
        raise ConfigError("leave-one-city-out needs at least 2 cities")
    chain = loco_chain(root, cities, band_set, recipe, progress)
    probs, labels, sel, secs = chain.probs, chain.labels, chain.selection, chain.seconds
    union = strong or {}
    scores: dict[str, Scores] = {}
    strict: dict[str, Scores] = {}
    seconds: dict[str, float] = {}
    objects: dict[str, dict[str, int]] = {}
    for c in cities:
        t0 = time.perf_counter()
        extra = union.get(c, np.zeros_like(labels[c]))
        pred = _decide(probs[c], sel["sigma"], sel["adaptive"], sel["threshold"]) | extra
        seconds[c] = secs[c] + time.perf_counter() - t0 + float((cva_seconds or {}).get(c, 0.0))
        scores[c] = Scores.from_masks(pred, labels[c])
        objects[c] = component_scores(pred, labels[c])
        rule = sel["strict"]["per_city"][c]["rule"]
        strict_pred = _decide(probs[c], sel["sigma"], None if rule == "global" else rule, sel["threshold"])
        strict[c] = Scores.from_masks(strict_pred | extra, labels[c])
    info = {
        "source": "loco",
        "band_set": band_set,
        "blend": list(chain.members[1:]),
        "segment_average": chain.segment_rule,
        "cva_union": strong is not None,
        "decision_rule": {"smooth_sigma_px": sel["sigma"], "adaptive_threshold": sel["adaptive"],
                          "threshold": sel["threshold"]},
        "classifier_only": {"micro_f1": sel["micro_f1"], "macro_f1": sel["macro_f1"]},
        "strict": {**{k: v for k, v in pool(strict).items() if k in ("micro_f1", "macro_f1")},
                   "per_city": {c: strict[c].as_dict() for c in cities}},
        "recipe": {"n_trees": recipe.n_trees, "n_pos": recipe.n_pos, "n_neg": recipe.n_neg,
                   "seed": recipe.seed},
    }
    return ChainResult(LEARNED_METHOD, scores, seconds, info, objects)


def learned_from_report(report: str | Path, band_set: str, cities: Sequence[str]) -> ChainResult:
    """The LOCO scores of ``band_set`` in a training report (``python -m pipeline.train.oscd --report``).

    The report's scores are the classifier alone at the chosen rule (no CVA union); its seconds are the
    fold times of the training run. Every city in ``cities`` must be in the report.
    """
    path = Path(report)
    if not path.is_file():
        raise InputFileError(
            f"training report {path} not found; write one with python -m pipeline.train.oscd --report"
        )
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        rep = doc["band_sets"][band_set]
        loco, secs = rep["loco"], rep["loco_seconds_per_city"]
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(
            f"{path} has no LOCO section for band set {band_set} ({type(err).__name__}: {err})"
        ) from err
    missing = [c for c in cities if c not in loco["per_city"]]
    if missing:
        raise ConfigError(f"{path} has no LOCO scores for {', '.join(missing)}")

    def counts(d: Mapping[str, Any]) -> Scores:
        return Scores(int(d["tp"]), int(d["fp"]), int(d["fn"]))

    strict = {c: counts(loco["strict"]["per_city"][c]) for c in cities}
    info = {
        "source": f"report:{path}",
        "band_set": band_set,
        "cva_union": False,
        "decision_rule": {"smooth_sigma_px": loco["sigma"], "adaptive_threshold": loco["adaptive"],
                          "threshold": loco["threshold"]},
        "strict": {**{k: v for k, v in pool(strict).items() if k in ("micro_f1", "macro_f1")},
                   "per_city": {c: strict[c].as_dict() for c in cities}},
    }
    return ChainResult(LEARNED_METHOD, {c: counts(loco["per_city"][c]) for c in cities},
                       {c: float(secs[c]) for c in cities}, info)


def build_document(baseline: ChainResult, learned: ChainResult | None, band_set: str) -> dict[str, Any]:
    """The metrics document: the best chain run at the top level (``micro_f1``, ``macro_f1``,
    ``micro_precision``, ``micro_recall``, ``micro_iou``, ``object_recall``, ``object_precision``,
    ``method`` and ``per_city`` {city: precision, recall, f1, iou, tp, fp, fn, seconds, objects}),
    ``baseline`` (same keys for CVA + Otsu), ``ratio_micro_f1_vs_baseline`` / ``ratio_macro_f1_vs_baseline``
    (None when the baseline scores 0), ``learned`` (the learned chain's source, decision rule, strict scores;
    only when it ran) and ``spatial`` (:func:`spatial_models`)."""
    base = baseline.summary()
    top = learned.summary() if learned is not None else base
    doc: dict[str, Any] = {
        "micro_f1": top["micro_f1"],
        "macro_f1": top["macro_f1"],
        **{k: top[k] for k in ("micro_precision", "micro_recall", "micro_iou", "object_recall", "object_precision")
           if k in top},
        "method": top["method"],
        "band_set": band_set if learned is not None else None,
        "cities": list(top["per_city"]),
        "per_city": top["per_city"],
        "baseline": base,
        "ratio_micro_f1_vs_baseline": _ratio(top["micro_f1"], base["micro_f1"]),
        "ratio_macro_f1_vs_baseline": _ratio(top["macro_f1"], base["macro_f1"]),
    }
    if learned is not None:
        doc["learned"] = learned.info
    doc["spatial"] = spatial_models()
    return doc


def spatial_models() -> dict[str, Any]:
    """The shipped spatial models' grouped cross-validation over the same cities (from their sidecars, made
    by the frozen ``train_unet`` stage: retraining needs torch, which this command never does): per band
    set ``micro_f1`` (strict: nested thresholds), ``macro_f1``, ``object_recall``/``object_precision`` and
    per-city F1. The ensembles (frozen ``select_ensemble`` stage, :mod:`pipeline.detect.ensemble`) appear as
    ``ensemble-<band set>`` with their members, weight and the same nested scores."""
    from pipeline.detect.ensemble import ensemble_band_sets, load_ensemble_meta
    from pipeline.detect.unet import load_unet_meta, unet_band_sets

    keys = ("micro_f1", "macro_f1", "object_recall", "object_precision")
    out: dict[str, Any] = {}
    for bs in unet_band_sets():
        cv = load_unet_meta(bs).get("cv") or {}
        if cv:
            out[bs] = {"source": "grouped-cv", "folds": cv["folds"], "threshold": cv["threshold"],
                       **{k: cv[k] for k in keys}, "per_city": {c: v["f1"] for c, v in cv["per_city"].items()}}
    for bs in ensemble_band_sets():
        meta = load_ensemble_meta(bs)
        cv = meta["cv"]
        out[f"ensemble-{bs}"] = {
            "source": "grouped-cv", "folds": meta["folds"], "members": meta["members"],
            "weight_unet": meta["weight_unet"], "threshold": meta.get("threshold"),
            "adaptive_threshold": meta.get("adaptive_threshold"), **{k: cv[k] for k in keys},
            "per_city": {c: v["f1"] for c, v in cv["per_city"].items()},
            "members_alone_micro_f1": {k: v["micro_f1"] for k, v in meta["fixed_weight"].items()},
        }
    return out


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def write_document(doc: Mapping[str, Any], path: str | Path) -> Path:
    """Write the metrics document as indented JSON (UTF-8, atomically); returns ``path``."""
    from pipeline._files import write_text_atomic

    return write_text_atomic(path, json.dumps(doc, indent=1) + "\n")


def write_plot(doc: Mapping[str, Any], path: str | Path) -> Path:
    """A grouped bar chart (PNG) of the change-class F1 per city, micro and macro: baseline vs best chain."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cities = list(doc["per_city"])
    names = [*cities, "micro", "macro"]
    series = [("CVA + Otsu (baseline)", doc["baseline"])]
    if doc["method"] != doc["baseline"]["method"]:
        label = "learned, leave-one-city-out" + (f" ({doc['band_set']})" if doc.get("band_set") else "")
        series.append((label, doc))
    fig = Figure(figsize=(max(6.0, 0.7 * len(names) + 2), 4.0), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    width = 0.8 / len(series)
    x = np.arange(len(names))
    for i, (label, chain) in enumerate(series):
        values = [chain["per_city"][c]["f1"] for c in cities] + [chain["micro_f1"], chain["macro_f1"]]
        ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=label)
    ax.set_xticks(x, names, rotation=35, ha="right")
    ax.set_ylabel("F1 of the change class")
    ax.set_ylim(0, 1)
    ax.set_title("OSCD labelled cities: pixel F1 per city")
    ax.legend(loc="upper left", fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    from pipeline._files import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)
