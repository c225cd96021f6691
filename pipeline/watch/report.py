"""The texts a watch run publishes: a short Markdown digest of its alerts and an Atom 1.0 feed of every run's.

Both are pure functions of their inputs (no clock, no files), so the same runs always give the same bytes.
Feed entry ids are ``urn:uuid:`` UUIDv5 of the feed key, run id and flag id: stable across rewrites, so a
feed reader or chat bot shows each alert once.
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import geopandas as gpd

import pipeline

__all__ = ["RunAlerts", "digest_markdown", "atom_feed", "entry_id", "ATOM_NS", "MAX_FEED_ENTRIES", "NOT_MEASURABLE"]

ATOM_NS = "http://www.w3.org/2005/Atom"
#: Most entries in the feed (newest first); older alerts stay in their run folders.
MAX_FEED_ENTRIES = 200
#: What 10 m pixels cannot show (said in every digest).
NOT_MEASURABLE = ("Walls, fences and watchtowers are not measurable at 10 m: alerts are built-up area "
                  "(m²), candidates to review on sharper imagery, never verdicts.")


@dataclass(frozen=True)
class RunAlerts:
    """One published watch run: its id, when it was published (``YYYY-MM-DDTHH:MM:SSZ``), imagery date, the
    previous run and its alerts layer (EPSG:4326, :data:`pipeline.watch.diff.ALERT_COLUMNS`)."""

    run_id: str
    published_at: str
    imagery_until: str | None
    previous_run_id: str | None
    alerts: gpd.GeoDataFrame
    n_flags: int
    n_gone: int = 0


def _num(v: Any) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "—"
    return "—" if f != f else f"{f:,.0f}"


def _where(geom: Any) -> str:
    if geom is None or geom.is_empty:
        return "—"
    p = geom.representative_point()
    return f"{p.y:.5f}, {p.x:.5f}"


def _headline(row: Any) -> str:
    if row["alert"] == "grown":
        return (f"Grown flag at {row['site_id']}: {_num(row['previous_area_m2'])} → {_num(row['area_m2'])} m² "
                f"(+{_num(row['growth_m2'])} m²)")
    return f"New flag at {row['site_id']}: {_num(row['area_m2'])} m²"


def digest_markdown(run: RunAlerts) -> str:
    """A short Markdown digest of one run: counts, then one table row per alert (ranked as in the layer)."""
    a = run.alerts
    n_new = int((a["alert"] == "new").sum()) if len(a) else 0
    n_grown = int((a["alert"] == "grown").sum()) if len(a) else 0
    since = (f"since run {run.previous_run_id}" if run.previous_run_id
             else "(first watch run: every flag is new; later runs report only changes)")
    lines = [
        f"# compoundwatch watch {run.run_id}",
        "",
        f"Imagery up to {run.imagery_until or 'unknown'}; published {run.published_at}.",
        "",
        f"**{n_new} new** and **{n_grown} grown** flag(s) {since}; {run.n_flags} flag(s) in the layer"
        + (f", {run.n_gone} earlier flag(s) no longer flagged (not alerted)." if run.n_gone else "."),
        "",
    ]
    if len(a):
        lines += ["| alert | site | flag | area (m²) | previous (m²) | appeared between | confidence | lat, lon |",
                  "|---|---|---|---:|---:|---|---:|---|"]
        for _, row in a.iterrows():
            conf = row.get("confidence")
            lines.append(
                f"| {row['alert']} | {row['site_id']} | {row['flag_id']} | {_num(row['area_m2'])} | "
                f"{_num(row['previous_area_m2'])} | {row.get('appeared_after') or '?'} … "
                f"{row.get('appeared_before') or '?'} | {'—' if conf is None else f'{float(conf):.2f}'} | "
                f"{_where(row.geometry)} |")
        lines.append("")
    else:
        lines += ["Nothing new or grown.", ""]
    lines += ["Files: `alerts.geojson` (these alerts, RFC 7946 GeoJSON), `flags.geojson` (the whole layer), "
              "`site_summary.geojson`.", "", NOT_MEASURABLE, ""]
    return "\n".join(lines)


def entry_id(feed_key: str, run_id: str, flag_id: str) -> str:
    """The stable Atom id of one alert."""
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'compoundwatch:{feed_key}:{run_id}:{flag_id}')}"


def atom_feed(runs: Sequence[RunAlerts], *, feed_key: str, title: str = "compoundwatch alerts") -> str:
    """An Atom 1.0 feed (RFC 4287) of the alerts of ``runs`` (oldest first), newest entries first.

    ``feed_key`` names the watch (e.g. its sites) and makes the feed and entry ids; ``updated`` is the newest
    entry's (the first run's when there is none), so runs without alerts leave the feed unchanged. Entry
    links are relative to the feed: ``<run-id>/alerts.geojson``.
    """
    ET.register_namespace("", ATOM_NS)

    def sub(parent: ET.Element, tag: str, text: str | None = None, **attrib: str) -> ET.Element:
        el = ET.SubElement(parent, f"{{{ATOM_NS}}}{tag}", attrib)
        if text is not None:
            el.text = text
        return el

    entries: list[tuple[str, RunAlerts, Any]] = []
    for run in runs:
        for _, row in run.alerts.iterrows():
            entries.append((run.published_at, run, row))
    entries.sort(key=lambda e: (e[0], e[1].run_id), reverse=True)  # newest run first, layer order within
    entries = entries[:MAX_FEED_ENTRIES]
    updated = entries[0][0] if entries else (runs[0].published_at if runs else "1970-01-01T00:00:00Z")
    feed = ET.Element(f"{{{ATOM_NS}}}feed")
    sub(feed, "id", f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'compoundwatch:{feed_key}')}")
    sub(feed, "title", title)
    sub(feed, "subtitle", "New and grown built-up area at watched sites (Sentinel-2, 10 m): candidates to "
                          "review, not verdicts.")
    sub(feed, "updated", updated)
    author = sub(feed, "author")
    sub(author, "name", "compoundwatch")
    sub(feed, "generator", "compoundwatch", version=pipeline.__version__)
    for published_at, run, row in entries:
        e = sub(feed, "entry")
        sub(e, "id", entry_id(feed_key, run.run_id, str(row["flag_id"])))
        sub(e, "title", _headline(row))
        sub(e, "updated", published_at)
        sub(e, "link", rel="alternate", type="application/geo+json", href=f"{run.run_id}/alerts.geojson")
        sub(e, "category", term=str(row["alert"]))
        conf = row.get("confidence")
        sub(e, "summary", (
            f"{_headline(row)}; appeared between {row.get('appeared_after') or '?'} and "
            f"{row.get('appeared_before') or '?'}; confidence {'?' if conf is None else f'{float(conf):.2f}'}; "
            f"at lat, lon {_where(row.geometry)}; flag {row['flag_id']}, watch run {run.run_id} (imagery up to "
            f"{run.imagery_until or 'unknown'}). A candidate to review, not a verdict."), type="text")
    ET.indent(feed, space="  ")
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(feed, encoding="unicode") + "\n"
