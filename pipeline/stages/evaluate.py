"""Stage ``evaluate``: flags and detections of every site scored against the truth.

``python -m pipeline.stages.evaluate FLAGS_DIR TRUTH_DIR DETECT_DIR METRICS_OUT PR_CURVE_OUT [--params ...]``

Reads ``sites``, ``sites_file`` and ``evaluate`` from the parameters and, per site,
``FLAGS_DIR/<site>.geojson``, ``TRUTH_DIR/<site>.geojson`` and ``DETECT_DIR/<site>.zarr``. Writes

- ``METRICS_OUT`` (JSON): ``object_recall``, ``object_precision`` (flags vs truth polygons matched at IoU ≥
  ``evaluate.iou_threshold``, pooled over all sites, so flags on control sites count as false alarms),
  ``pixel_f1`` (detection ``change`` raster vs truth burnt onto the same UTM grid, pooled over non-control
  sites), ``control_site_flags`` (flags on sites marked ``control`` in ``sites_file``), ``n_flags``,
  ``n_truth`` (truth polygons ≥ ``evaluate.min_truth_area_m2`` m²) and ``per_site`` (the same per site);
- ``PR_CURVE_OUT`` (CSV ``threshold,precision,recall``): object precision and recall keeping flags with
  confidence ≥ threshold, for thresholds 0.00, 0.05, … 0.95.
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline._files import atomic_path, write_json_atomic
from pipeline.config import Settings, load_settings
from pipeline.errors import ConfigError
from pipeline.evaluate.metrics import Scores, pixel_scores, rate
from pipeline.evaluate.objects import object_metrics, pr_curve, rasterize_truth
from pipeline.io import read_cube
from pipeline.publish.geojson import read_geojson
from pipeline.sites import load_sites
from pipeline.stages import Progress, site_path, stage_main, stage_parser

__all__ = ["THRESHOLDS", "run", "main"]

#: Confidence thresholds of the precision/recall curve.
THRESHOLDS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(20))
_COUNTS = ("n_flags", "n_truth", "tp", "fp", "fn", "truth_found")


def _ratios(c: dict[str, int]) -> dict[str, float]:
    """Recall / precision from pooled counts (empty layers: the rule of :mod:`pipeline.evaluate.metrics`)."""
    return {"object_recall": rate(c["truth_found"], c["n_truth"]), "object_precision": rate(c["tp"], c["n_flags"])}


def _round(obj: Any) -> Any:
    if isinstance(obj, float):
        return round(obj, 4)
    if isinstance(obj, dict):
        return {k: _round(v) for k, v in obj.items()}
    return obj


def run(
    flags_dir: str | Path,
    truth_dir: str | Path,
    detect_dir: str | Path,
    metrics_out: str | Path,
    pr_out: str | Path,
    settings: Settings,
    progress: Progress = None,
) -> dict[str, Any]:
    """Score the sites of ``settings.sites``; write ``metrics_out`` and ``pr_out``; return the metrics."""
    if not settings.sites:
        raise ConfigError("sites: no sites listed in the parameters; add site ids to `sites` in params.yaml")
    known = {s.site_id: s for s in load_sites(settings.sites_file)}
    unknown = [s for s in settings.sites if s not in known]
    if unknown:
        raise ConfigError(
            f"sites: {', '.join(unknown)} not in {settings.sites_file}; known: {', '.join(known)}"
        )
    ev = settings.evaluate
    kw = dict(iou_threshold=ev.iou_threshold, min_truth_area_m2=ev.min_truth_area_m2)

    total = dict.fromkeys(_COUNTS, 0)
    px = {"tp": 0, "fp": 0, "fn": 0}
    curve = np.zeros((len(THRESHOLDS), 4), dtype=np.int64)  # tp, n_flags, found, n_truth per threshold
    per_site: dict[str, dict[str, Any]] = {}
    control_flags = 0
    for site_id in settings.sites:
        control = known[site_id].control
        flags = read_geojson(site_path(flags_dir, site_id, ".geojson"))
        truth = read_geojson(site_path(truth_dir, site_id, ".geojson"))
        obj = object_metrics(flags, truth, **kw)
        change = read_cube(site_path(detect_dir, site_id, ".zarr"))["change"].load()
        pix = pixel_scores(change.values, rasterize_truth(truth, change))
        for k in _COUNTS:
            total[k] += obj[k]
        if control:
            control_flags += obj["n_flags"]
        else:
            for k in px:
                px[k] += pix[k]
        for i, row in enumerate(pr_curve(flags, truth, THRESHOLDS, **kw)):
            curve[i] += (row["tp"], row["n_flags"], row["truth_found"], row["n_truth"])
        area = float(flags["area_m2"].sum()) if len(flags) and "area_m2" in flags else 0.0
        per_site[site_id] = {"control": control, **obj, "pixel_f1": pix["pixel_f1"], "area_m2": area}
        if progress is not None:
            progress(site_id)

    metrics = {
        **_ratios(total),
        "pixel_f1": Scores(**px).f1,
        "control_site_flags": control_flags,
        "n_flags": total["n_flags"],
        "n_truth": total["n_truth"],
        "per_site": per_site,
    }
    metrics = _round(metrics)
    write_json_atomic(metrics_out, metrics, indent=2)  # a killed run never leaves half a metrics file
    with atomic_path(pr_out) as tmp, tmp.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["threshold", "precision", "recall"])
        for t, (tp, nf, found, nt) in zip(THRESHOLDS, curve):
            w.writerow([f"{t:.2f}", f"{rate(tp, nf):.4f}", f"{rate(found, nt):.4f}"])
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    parser = stage_parser("evaluate", "Score flags and detections against the truth (metrics, PR curve).")
    parser.add_argument("flags_dir", type=Path, help="folder with <site>.geojson flag layers")
    parser.add_argument("truth_dir", type=Path, help="folder with <site>.geojson truth layers")
    parser.add_argument("detect_dir", type=Path, help="folder with <site>.zarr detection datasets")
    parser.add_argument("metrics_out", type=Path, help="metrics JSON to write")
    parser.add_argument("pr_out", type=Path, help="precision/recall CSV to write")

    def _go(a: argparse.Namespace) -> None:
        m = run(a.flags_dir, a.truth_dir, a.detect_dir, a.metrics_out, a.pr_out, load_settings(a.params))
        print(
            f"evaluate: object recall {m['object_recall']:.2f}, precision {m['object_precision']:.2f}, "
            f"pixel F1 {m['pixel_f1']:.2f}, {m['control_site_flags']} flag(s) on control sites"
        )

    return stage_main(_go, parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())
