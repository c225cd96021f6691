"""What is new or has grown between two published flag layers (:func:`compare_flags`).

A flag of the current layer is matched to the flags of the previous layer at the same site whose polygons
overlap it (a shared area, not just a shared edge). It is

- **new** when it overlaps no previous flag;
- **grown** when its area exceeds the summed area of the previous flags it overlaps by at least
  ``min_growth_m2`` square metres and ``min_growth_fraction`` of that area (so a flag redrawn a few pixels
  larger by a rerun is not an alert);
- otherwise unchanged (no alert). Previous flags that no current flag overlaps are counted as ``gone``.

Areas are the layers' ``area_m2`` values (measured on each site's UTM grid by the flagger); geometry
tests run in EPSG:4326 (overlap does not depend on the CRS).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import geopandas as gpd
import pandas as pd

from pipeline.errors import ConfigError

__all__ = ["AlertKind", "GrowthRule", "ALERT_COLUMNS", "compare_flags", "gone_flags"]


class AlertKind(str, Enum):
    """Why a flag is an alert."""

    NEW = "new"
    GROWN = "grown"


@dataclass(frozen=True)
class GrowthRule:
    """A matched flag is *grown* when ``new − previous ≥ min_growth_m2`` (m²) and
    ``(new − previous) / previous ≥ min_growth_fraction``."""

    min_growth_m2: float = 1000.0
    min_growth_fraction: float = 0.2

    def __post_init__(self) -> None:
        if self.min_growth_m2 < 0 or not 0 <= self.min_growth_fraction <= 10:
            raise ConfigError(f"--min-growth-m2 must be >= 0 and --min-growth-fraction between 0 and 10, got "
                              f"{self.min_growth_m2:g} and {self.min_growth_fraction:g}")

    def grown(self, previous_m2: float, new_m2: float) -> bool:
        gain = new_m2 - previous_m2
        return gain >= self.min_growth_m2 and gain >= self.min_growth_fraction * previous_m2


#: Columns of an alerts layer before the current flag's own columns (``geometry`` last).
ALERT_COLUMNS: tuple[str, ...] = ("alert", "flag_id", "site_id", "area_m2", "previous_area_m2", "growth_m2",
                                  "previous_flag_ids")


def _overlaps(previous: gpd.GeoDataFrame, current: gpd.GeoDataFrame) -> dict[int, list[int]]:
    """``{current row: [previous rows]}`` of same-site flags sharing area (row positions)."""
    out: dict[int, list[int]] = {i: [] for i in range(len(current))}
    if not len(previous) or not len(current):
        return out
    prev = previous.reset_index(drop=True)
    tree = prev.sindex
    for i, (geom, site) in enumerate(zip(current.geometry, current["site_id"])):
        if geom is None or geom.is_empty:
            continue
        for j in sorted(int(k) for k in tree.query(geom, predicate="intersects")):
            other = prev.geometry.iloc[j]
            if prev["site_id"].iloc[j] == site and geom.intersection(other).area > 0:
                out[i].append(j)
    return out


def _area(frame: gpd.GeoDataFrame, rows: list[int]) -> float:
    return float(pd.to_numeric(frame["area_m2"].iloc[rows], errors="coerce").fillna(0.0).sum())


def compare_flags(previous: gpd.GeoDataFrame, current: gpd.GeoDataFrame,
                  rule: GrowthRule = GrowthRule()) -> gpd.GeoDataFrame:
    """The alerts: current flags that are new or grown since ``previous`` (see the module docstring).

    Parameters
    ----------
    previous, current
        Flag layers (``flag_id``, ``site_id``, ``area_m2`` in m², polygons) in EPSG:4326, e.g. the published
        ``flags.geojson`` of two runs; ``previous`` may be empty (the first watch: every flag is new).

    Returns
    -------
    geopandas.GeoDataFrame
        EPSG:4326, one row per alert in the current layer's order (its ranking): :data:`ALERT_COLUMNS`
        (``alert`` is ``"new"`` or ``"grown"``; ``previous_area_m2``/``growth_m2`` are null for new flags;
        ``previous_flag_ids`` the matched flags, comma-separated), then the current flag's other columns.
    """
    current = current.reset_index(drop=True)
    previous = previous.reset_index(drop=True)
    if len(previous):
        previous = previous.to_crs(4326)
    if len(current):
        current = current.to_crs(4326)
    matches = _overlaps(previous, current)
    rows: list[dict[str, object]] = []
    keep: list[int] = []
    for i, prev_rows in matches.items():
        new_m2 = _area(current, [i])
        if not prev_rows:
            rows.append({"alert": AlertKind.NEW.value, "previous_area_m2": None, "growth_m2": None,
                         "previous_flag_ids": ""})
        else:
            old_m2 = _area(previous, prev_rows)
            if not rule.grown(old_m2, new_m2):
                continue
            ids = ",".join(str(previous["flag_id"].iloc[j]) for j in prev_rows)
            rows.append({"alert": AlertKind.GROWN.value, "previous_area_m2": round(old_m2, 2),
                         "growth_m2": round(new_m2 - old_m2, 2), "previous_flag_ids": ids})
        keep.append(i)
    own = [c for c in current.columns if c not in ALERT_COLUMNS and c != current.geometry.name]
    picked = current.iloc[keep].reset_index(drop=True)
    extra = pd.DataFrame(rows, columns=["alert", "previous_area_m2", "growth_m2", "previous_flag_ids"])
    data = {
        "alert": extra["alert"].astype(object),
        "flag_id": picked["flag_id"] if len(picked) else pd.Series([], dtype=object),
        "site_id": picked["site_id"] if len(picked) else pd.Series([], dtype=object),
        "area_m2": pd.to_numeric(picked["area_m2"], errors="coerce") if len(picked) else pd.Series([], dtype=float),
        "previous_area_m2": pd.to_numeric(extra["previous_area_m2"], errors="coerce"),
        "growth_m2": pd.to_numeric(extra["growth_m2"], errors="coerce"),
        "previous_flag_ids": extra["previous_flag_ids"].astype(object),
    }
    frame = pd.DataFrame(data)
    for c in own:
        frame[c] = picked[c].to_numpy() if len(picked) else pd.Series([], dtype=object)
    geometry = gpd.GeoSeries(list(picked.geometry) if len(picked) else [], crs=4326)
    return gpd.GeoDataFrame(frame, geometry=geometry, crs=4326)


def gone_flags(previous: gpd.GeoDataFrame, current: gpd.GeoDataFrame) -> list[str]:
    """``flag_id`` of the previous flags that no current flag of the same site overlaps."""
    if not len(previous):
        return []
    matched = {j for rows in _overlaps(previous.reset_index(drop=True).to_crs(4326),
                                       current.reset_index(drop=True).to_crs(4326) if len(current) else current
                                       ).values() for j in rows}
    return [str(f) for j, f in enumerate(previous["flag_id"]) if j not in matched]
