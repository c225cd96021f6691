"""OSCD benchmark table: naive CVA + Otsu (``detect_pair_cva``) vs the learned detector, leave-one-city-out.

Usage::

    python benchmarks/oscd_table.py --data ../shared/data/oscd --out oscd_table.json \
        [--band-set s2-13] [--from-report oscd_train.json]

For every labelled city (hold-out cities are never read) it prints the change-class F1 of

* ``cva-otsu``: :func:`pipeline.detect.pair.detect_pair_cva` (CVA + robust z + Otsu, no training), with its wall
  time (reading excluded; detection only);
* ``lgbm-loco``: the learned detector scored leave-one-city-out, i.e. each city predicted by a model trained
  on the other nine, at the pooled-LOCO threshold/smoothing (what the shipped model uses), with wall time
  (fold training + features + prediction);
* ``lgbm-loco-strict``: the same predictions, each city at the threshold chosen on the other nine only;
* ``infer s``: wall time of the shipped model on the city (co-registration, normalisation, features,
  prediction; reading excluded) -- a timing only, the shipped model has seen every labelled city;

plus micro-F1 (pixels pooled over cities) and macro-F1 (mean of cities). ``--from-report`` reuses the LOCO
section written by ``python -m pipeline.train.oscd --report`` instead of re-running the folds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import DetectSettings  # noqa: E402
from pipeline.detect.learned import LearnedDetector  # noqa: E402
from pipeline.detect.pair import detect_pair_cva  # noqa: E402
from pipeline.oscd import labelled_cities, read_city  # noqa: E402


def _scores(pred: np.ndarray, label: np.ndarray) -> dict[str, float]:
    tp = int((pred & label).sum())
    fp = int((pred & ~label).sum())
    fn = int((~pred & label).sum())
    return {"f1": 2 * tp / max(2 * tp + fp + fn, 1), "precision": tp / max(tp + fp, 1),
            "recall": tp / max(tp + fn, 1), "iou": tp / max(tp + fp + fn, 1), "tp": tp, "fp": fp, "fn": fn}


def _summary(per_city: dict[str, dict[str, float]]) -> dict[str, float]:
    tp = sum(v["tp"] for v in per_city.values())
    fp = sum(v["fp"] for v in per_city.values())
    fn = sum(v["fn"] for v in per_city.values())
    return {"micro_f1": 2 * tp / max(2 * tp + fp + fn, 1),
            "macro_f1": float(np.mean([v["f1"] for v in per_city.values()]))}


def baseline(root: Path, cities: list[str], learned_band_set: str | None = None) -> dict[str, Any]:
    """Naive detect_pair_cva per city: scores and detection wall seconds (+ shipped-model inference seconds)."""
    per_city, secs, infer = {}, {}, {}
    for c in cities:
        oc = read_city(root, c)
        t0 = time.perf_counter()
        det = detect_pair_cva(oc.before, oc.after, DetectSettings())
        secs[c] = time.perf_counter() - t0
        assert oc.label is not None
        per_city[c] = _scores(det["change"].values, oc.label)
        if learned_band_set is not None:  # timing of the shipped model only (it was trained on this city)
            t0 = time.perf_counter()
            LearnedDetector(band_set=learned_band_set).detect(oc.before, oc.after)
            infer[c] = time.perf_counter() - t0
    return {"per_city": per_city, "seconds": secs, "learned_inference_seconds": infer, **_summary(per_city)}


def learned_loco(root: Path, cities: list[str], band_set: str, report: Path | None) -> dict[str, Any]:
    """LOCO scores of the learned detector (from a training report or by running the folds)."""
    if report is not None:
        rep = json.loads(report.read_text(encoding="utf-8"))["band_sets"][band_set]
        return {"loco": rep["loco"], "seconds": rep["loco_seconds_per_city"]}
    from pipeline.train import oscd as tr

    args = SimpleNamespace(pos=8000, neg=16000)
    rng = np.random.default_rng(tr.SEED)
    data = {c: tr.load_city(root, c, band_set, args.pos, args.neg, rng)[1] for c in cities}
    probs, secs = tr.loco(root, cities, band_set, data)
    sel = tr.select_threshold(probs, {c: data[c].label for c in cities})
    return {"loco": sel, "seconds": secs}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data/oscd"))
    p.add_argument("--out", type=Path, default=Path("oscd_table.json"))
    p.add_argument("--band-set", default="s2-13")
    p.add_argument("--from-report", type=Path, default=None)
    args = p.parse_args(argv)
    cities = labelled_cities(args.data)
    base = baseline(args.data, cities, args.band_set)
    lrn = learned_loco(args.data, cities, args.band_set, args.from_report)
    loco, strict = lrn["loco"], lrn["loco"]["strict"]
    rows = []
    head = f"{'city':12s} | {'cva-otsu F1':>11s} {'s':>5s} | {'lgbm-loco F1':>12s} {'P':>5s} {'R':>5s} {'s':>5s} | {'strict F1':>9s} | {'infer s':>7s}"
    print(head)
    print("-" * len(head))
    for c in cities:
        b, l, s = base["per_city"][c], loco["per_city"][c], strict["per_city"][c]
        print(f"{c:12s} | {b['f1']:11.3f} {base['seconds'][c]:5.1f} | {l['f1']:12.3f} {l['precision']:5.2f} "
              f"{l['recall']:5.2f} {lrn['seconds'][c]:5.0f} | {s['f1']:9.3f} | {base['learned_inference_seconds'][c]:7.1f}")
        rows.append({"city": c, "cva_otsu_f1": b["f1"], "lgbm_loco_f1": l["f1"], "lgbm_loco_strict_f1": s["f1"]})
    print("-" * len(head))
    print(f"{'micro':12s} | {base['micro_f1']:11.3f} {'':5s} | {loco['micro_f1']:12.3f} {'':17s} | {strict['micro_f1']:9.3f}")
    print(f"{'macro':12s} | {base['macro_f1']:11.3f} {'':5s} | {loco['macro_f1']:12.3f} {'':17s} | {strict['macro_f1']:9.3f}")
    print(f"learned: band set {args.band_set}, smoothing sigma {loco['sigma']} px, threshold {loco['threshold']}")
    out = {"band_set": args.band_set, "cities": cities, "rows": rows,
           "cva_otsu": base, "lgbm_loco": {k: v for k, v in loco.items() if k != "strict"},
           "lgbm_loco_strict": strict, "lgbm_seconds": lrn["seconds"]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
