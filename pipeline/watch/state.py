"""The published state a watch compares against: kept, versioned run folders plus a pointer.

Layout of the state folder (default ``published/`` in the project)::

    LATEST                     the run id of the last published run (one line)
    <run-id>/flags.geojson     that run's published flag layer (a byte copy of data/out/flags.geojson)
    <run-id>/site_summary.geojson
    <run-id>/alerts.geojson    what was new or grown in that run (RFC 7946)
    <run-id>/digest.md         the short Markdown digest
    <run-id>/manifest.json     run id, sequence, previous run, published_at, imagery_until, layer hash, counts
    feed.atom                  Atom 1.0 feed of every run's alerts

Run ids are ``<sequence>-<imagery date>`` (``0002-2023-09-18``): ordered and unique. Nothing is hidden:
deleting a run folder's pointer (``LATEST``) makes the next watch compare against nothing (all flags new).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import InputFileError
from pipeline.publish.geojson import read_geojson
from pipeline.watch.report import RunAlerts

__all__ = ["Snapshot", "POINTER", "MANIFEST", "FLAGS", "SUMMARY", "ALERTS", "DIGEST", "FEED", "last_snapshot",
           "all_runs", "run_alerts", "make_run_id"]

POINTER = "LATEST"
MANIFEST = "manifest.json"
FLAGS = "flags.geojson"
SUMMARY = "site_summary.geojson"
ALERTS = "alerts.geojson"
DIGEST = "digest.md"
FEED = "feed.atom"


@dataclass(frozen=True)
class Snapshot:
    """One published run folder and its manifest."""

    folder: Path
    manifest: dict[str, Any]

    @property
    def run_id(self) -> str:
        return str(self.manifest["run_id"])

    @property
    def sequence(self) -> int:
        return int(self.manifest["sequence"])

    @property
    def flags(self) -> Path:
        return self.folder / FLAGS


def make_run_id(sequence: int, imagery_until: str | None) -> str:
    """``<4-digit sequence>-<imagery date or 'undated'>``."""
    return f"{sequence:04d}-{imagery_until or 'undated'}"


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise InputFileError(f"{path} not found: the watch state in {folder.parent} is incomplete; restore the "
                             f"run folder, or delete {folder.parent / POINTER} to start a new watch") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputFileError(f"{path} is not valid JSON ({err}); restore it from your copy of the watch state") \
            from err
    if not isinstance(doc, dict) or "run_id" not in doc or "sequence" not in doc:
        raise InputFileError(f"{path} is not a compoundwatch watch manifest (no run_id/sequence)")
    return doc


def last_snapshot(state_dir: Path) -> Snapshot | None:
    """The run ``LATEST`` points at, or ``None`` when the folder has no pointer (no watch yet)."""
    pointer = state_dir / POINTER
    if not pointer.is_file():
        return None
    run_id = pointer.read_text(encoding="utf-8").strip()
    folder = state_dir / run_id
    if not run_id or "/" in run_id or run_id.startswith(".") or not folder.is_dir():
        raise InputFileError(f"{pointer} names run {run_id!r}, but {folder} is not there; restore the run "
                             f"folder, or delete {pointer} to start a new watch (every flag is then new)")
    snap = Snapshot(folder, _read_manifest(folder))
    if not snap.flags.is_file():
        raise InputFileError(f"{snap.flags} not found: run {run_id} is incomplete; restore it, or delete {pointer}")
    return snap


def all_runs(state_dir: Path, upto: Snapshot | None) -> list[Snapshot]:
    """The chain of runs ending at ``upto`` (following ``previous_run_id``), oldest first."""
    chain: list[Snapshot] = []
    snap = upto
    seen: set[str] = set()
    while snap is not None and snap.run_id not in seen:
        seen.add(snap.run_id)
        chain.append(snap)
        prev = snap.manifest.get("previous_run_id")
        snap = Snapshot(state_dir / prev, _read_manifest(state_dir / prev)) if prev and (
            state_dir / prev).is_dir() else None
    return chain[::-1]


def run_alerts(snap: Snapshot) -> RunAlerts:
    """A published run's alerts, for the feed."""
    m = snap.manifest
    return RunAlerts(run_id=snap.run_id, published_at=str(m["published_at"]), imagery_until=m.get("imagery_until"),
                     previous_run_id=m.get("previous_run_id"), alerts=read_geojson(snap.folder / ALERTS),
                     n_flags=int(m.get("n_flags", 0)), n_gone=int(m.get("n_gone", 0)))
