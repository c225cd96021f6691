"""One watch step: compare a freshly published layer with the last published run and record what changed.

:func:`record_watch` reads the published ``flags.geojson`` (and ``site_summary.geojson`` for the latest clear
imagery date), compares it with the run ``LATEST`` points at (:mod:`pipeline.watch.state`) and

- when the layer is byte-identical and the imagery is no newer: writes **nothing** (no file, no mtime
  changes) and reports nothing new;
- otherwise: writes a new run folder (layer copies, alerts, digest, manifest), rewrites ``feed.atom`` when
  its text changes, and moves ``LATEST`` last, so an interruption leaves the previous state in force.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd

from pipeline._files import write_bytes_atomic, write_json_atomic, write_text_atomic
from pipeline.errors import InputFileError
from pipeline.publish.geojson import read_geojson, write_geojson
from pipeline.watch.diff import GrowthRule, compare_flags, gone_flags
from pipeline.watch.report import RunAlerts, atom_feed, digest_markdown
from pipeline.watch.state import (
    ALERTS,
    DIGEST,
    FEED,
    FLAGS,
    MANIFEST,
    POINTER,
    SUMMARY,
    Snapshot,
    all_runs,
    last_snapshot,
    make_run_id,
    run_alerts,
)

__all__ = ["WatchResult", "record_watch", "imagery_until"]


@dataclass(frozen=True)
class WatchResult:
    """What a watch step found: ``changed`` is False when nothing was written. ``run`` holds the alerts (and
    is the previous run's when nothing changed); ``folder`` the run folder written (``None`` if none)."""

    changed: bool
    run: RunAlerts | None
    folder: Path | None
    previous_run_id: str | None

    @property
    def n_new(self) -> int:
        return 0 if not self.changed or self.run is None else int((self.run.alerts["alert"] == "new").sum())

    @property
    def n_grown(self) -> int:
        return 0 if not self.changed or self.run is None else int((self.run.alerts["alert"] == "grown").sum())


def imagery_until(summary: Path) -> str | None:
    """The latest ``latest_clear_date`` of a site summary layer (ISO date), ``None`` when there is none."""
    if not summary.is_file():
        return None
    dates = [str(d) for d in read_geojson(summary).get("latest_clear_date", []) if isinstance(d, str) and d]
    return max(dates) if dates else None


def _write_if_changed(path: Path, text: str) -> bool:
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    write_text_atomic(path, text)
    return True


def record_watch(flags: Path, summary: Path, state_dir: Path, *, rule: GrowthRule = GrowthRule(),
                 feed_key: str = "compoundwatch", now: dt.datetime | None = None) -> WatchResult:
    """Compare the published layer ``flags`` with the last run in ``state_dir``; record it when it changed.

    Parameters
    ----------
    flags, summary
        The published ``flags.geojson`` and ``site_summary.geojson`` of the run just made (EPSG:4326).
    state_dir
        The watch state folder (created on the first run).
    rule
        When a matched flag counts as grown.
    feed_key
        Names the watch in the Atom ids (e.g. the sites file).
    now
        Publication time (UTC; default: the clock), written in the manifest and the feed.

    Raises
    ------
    InputFileError
        When ``flags`` is missing (run the pipeline first) or the state folder is damaged.
    """
    if not flags.is_file():
        raise InputFileError(f"published layer {flags} not found; run compoundwatch run (or watch without "
                             "--no-run) first")
    layer_bytes = flags.read_bytes()
    digest = hashlib.sha256(layer_bytes).hexdigest()
    until = imagery_until(summary)
    prev: Snapshot | None = last_snapshot(state_dir)
    if prev is not None and prev.manifest.get("layer_sha256") == digest and prev.manifest.get("imagery_until") == until:
        return WatchResult(False, run_alerts(prev), None, prev.run_id)

    current = read_geojson(flags)
    previous = read_geojson(prev.flags) if prev is not None else current.iloc[0:0]
    alerts = compare_flags(previous, current, rule)
    gone = gone_flags(previous, current) if prev is not None else []
    sequence = prev.sequence + 1 if prev is not None else 1
    run_id = make_run_id(sequence, until)
    stamp = (now or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    run = RunAlerts(run_id, stamp, until, prev.run_id if prev else None, alerts, len(current), len(gone))

    folder = state_dir / run_id
    if folder.exists():
        raise InputFileError(f"{folder} already exists but {state_dir / POINTER} does not point at it; move it "
                             "away (an interrupted watch) and run again")
    write_bytes_atomic(folder / FLAGS, layer_bytes)
    if summary.is_file():
        write_bytes_atomic(folder / SUMMARY, summary.read_bytes())
    _write_alerts(alerts, folder / ALERTS)
    write_text_atomic(folder / DIGEST, digest_markdown(run))
    write_json_atomic(folder / MANIFEST, {
        "run_id": run_id, "sequence": sequence, "previous_run_id": run.previous_run_id, "published_at": stamp,
        "imagery_until": until, "layer_sha256": digest, "n_flags": len(current),
        "n_new": int((alerts["alert"] == "new").sum()) if len(alerts) else 0,
        "n_grown": int((alerts["alert"] == "grown").sum()) if len(alerts) else 0, "n_gone": len(gone),
        "gone_flag_ids": gone, "rule": {"min_growth_m2": rule.min_growth_m2,
                                        "min_growth_fraction": rule.min_growth_fraction},
    })
    snap = Snapshot(folder, json.loads((folder / MANIFEST).read_text(encoding="utf-8")))
    runs = [run_alerts(s) for s in all_runs(state_dir, prev)] + [run]
    _write_if_changed(state_dir / FEED, atom_feed(runs, feed_key=feed_key))
    write_text_atomic(state_dir / POINTER, snap.run_id + "\n")
    return WatchResult(True, run, folder, run.previous_run_id)


def _write_alerts(alerts: gpd.GeoDataFrame, path: Path) -> None:
    if len(alerts):
        write_geojson(alerts, path)
    else:
        write_text_atomic(path, '{"type":"FeatureCollection","features":[]}\n')
