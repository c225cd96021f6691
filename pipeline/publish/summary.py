"""Per-site summary layer (ASPI-style): how much was built at each site, when, and whether it goes on.

One row per site, geometry = the site polygon (EPSG:4326). Columns:

- ``site_id``, ``name``, ``control`` (bool);
- ``n_flags``: flags at the site;
- ``area_added_m2``: sum of the flags' ``area_m2`` (square metres, measured on the site's UTM grid);
- ``added_m2_<period>``: area of the flags whose ``appeared_before`` falls in that period (``2021H1`` =
  January–June 2021, ``2021H2`` = July–December; or ``2021`` with ``period="year"``). The same columns for
  every site: all periods from the run's start to its end (and any period a flag falls in), zeros where
  nothing appeared, so the layer has one fixed schema per run;
- ``first_change_date`` / ``last_change_date``: earliest / latest ``appeared_before`` (ISO date or null);
- ``latest_clear_date``: the latest acquisition where at least half of the site's pixels were clear
  (ISO date or null when no imagery was given);
- ``last_period``: the period holding ``latest_clear_date`` (the run's end date when unknown);
- ``construction_ongoing``: ``"yes"`` when flags appeared in ``last_period``, else ``"no"``. The detector
  needs a few clear dates after a change before it calls it (``detect.min_post_obs``), so construction
  begun in the last weeks of the record is not yet counted: read ``"no"`` as "none detected yet".

Then, per calendar year (the run's years, plus any year a watchlist's counts name; the columns an
ASPI-style analyst compares with):

- ``added_m2_<year>``: built-up area added that year, m² (only with ``period="half-year"``; with ``"year"``
  it is the per-period column); null for years the run's imagery does not cover (not measured, not zero);
- ``construction_ongoing_<year>``: ``"yes"`` when flags appeared that year, ``"no"``, null when not covered;
- ``source_buildings_<year>`` / ``source_construction_ongoing_<year>``: the watchlist's own building counts and
  0/1 construction flags (site attributes ``buildings_<year>`` / ``construction_ongoing_<year>``, e.g. ASPI's
  Xinjiang Data Project through ``compoundwatch sites import``), beside ours; only when a site carries them;
- ``source_tier``: the watchlist's tier (attribute ``tier``), when a site carries one;
- ``not_measurable``: what 10 m pixels cannot show (:data:`NOT_MEASURABLE`): walls, fences and watchtowers
  are not measurable, so neither are ASPI's security features; built-up area is, building counts are not.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import geopandas as gpd
import numpy as np
import pandas as pd
import xarray as xr

from pipeline.errors import ConfigError
from pipeline.sites import Site

__all__ = [
    "NOT_MEASURABLE",
    "Period",
    "period_label",
    "period_labels",
    "latest_clear_date",
    "site_summary",
    "SUMMARY_BASE_COLUMNS",
]

Period = Literal["half-year", "year"]

#: Columns before the per-period ones (``geometry`` comes last).
SUMMARY_BASE_COLUMNS: tuple[str, ...] = (
    "site_id",
    "name",
    "control",
    "n_flags",
    "area_added_m2",
    "first_change_date",
    "last_change_date",
    "latest_clear_date",
    "last_period",
    "construction_ongoing",
)

#: The ``not_measurable`` column's text.
NOT_MEASURABLE = "walls, fences and watchtowers (not measurable at 10 m); building counts (area only)"

#: A date counts as clear for a site when at least this fraction of its pixels is clear.
CLEAR_SITE_FRACTION = 0.5


def period_label(day: dt.date, period: Period = "half-year") -> str:
    """``"2021H1"`` / ``"2021H2"`` (half-year) or ``"2021"`` (year) for a date."""
    if period == "year":
        return f"{day.year}"
    if period == "half-year":
        return f"{day.year}H{1 if day.month <= 6 else 2}"
    raise ConfigError(f"summary period must be 'half-year' or 'year', got {period!r}")


def period_labels(start: dt.date, end: dt.date, period: Period = "half-year") -> list[str]:
    """Every period label from ``start`` to ``end`` (inclusive), in order."""
    labels: list[str] = []
    y, m = start.year, (1 if period == "year" or start.month <= 6 else 7)
    while dt.date(y, m, 1) <= end:
        labels.append(period_label(dt.date(y, m, 1), period))
        if period == "year" or m == 7:
            y, m = y + 1, 1
        else:
            m = 7
    return labels


def as_date(value: Any) -> dt.date | None:
    """A date from an ISO string, timestamp or date; ``None`` for missing values (None, NaN, NaT)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return pd.Timestamp(value).date()


def latest_clear_date(cube: xr.Dataset, min_fraction: float = CLEAR_SITE_FRACTION) -> dt.date | None:
    """Latest ``time`` of a tiles cube (``clear`` bool ``(time, y, x)``) with ≥ ``min_fraction`` clear pixels."""
    if "clear" not in cube or cube.sizes.get("time", 0) == 0:
        return None
    frac = np.asarray(cube["clear"].mean(("y", "x")).values, dtype=float)
    ok = np.flatnonzero(frac >= min_fraction)
    if ok.size == 0:
        return None
    return pd.Timestamp(cube["time"].values[ok[-1]]).date()


def site_summary(
    flags: gpd.GeoDataFrame,
    sites: Sequence[Site],
    *,
    start: dt.date,
    end: dt.date,
    latest_clear: Mapping[str, dt.date | None] | None = None,
    period: Period = "half-year",
) -> gpd.GeoDataFrame:
    """The summary layer: one row per site in ``sites`` order (see the module docstring for the columns).

    Parameters
    ----------
    flags
        Flag layer (any CRS) with ``site_id``, ``area_m2`` (m²) and ``appeared_before`` (ISO date) columns;
        flags of sites not in ``sites`` are ignored.
    sites
        The sites; their WGS84 polygons become the geometry.
    start, end
        The run's time range (``settings.fetch.start`` / ``end``): the period columns span it.
    latest_clear
        ``{site_id: latest clear date}`` (see :func:`latest_clear_date`); missing sites get null.
    period
        ``"half-year"`` or ``"year"``.

    Returns
    -------
    geopandas.GeoDataFrame
        EPSG:4326, columns :data:`SUMMARY_BASE_COLUMNS`, then ``added_m2_<period>`` in time order, then
        ``geometry``.
    """
    latest_clear = dict(latest_clear or {})
    flags = flags.reset_index(drop=True)
    frame = pd.DataFrame(
        {
            "site_id": flags["site_id"].astype(str) if len(flags) else pd.Series([], dtype=str),
            "area_m2": pd.to_numeric(flags["area_m2"], errors="coerce").fillna(0.0) if len(flags) else [],
            "day": [as_date(v) for v in flags["appeared_before"]] if len(flags) else [],
        }
    )
    frame["period"] = [period_label(d, period) if d is not None else None for d in frame["day"]]
    labels = period_labels(start, end, period)
    extra = sorted({p for p in frame["period"].dropna() if p not in labels})
    labels = sorted(set(labels) | set(extra))  # labels sort chronologically ("2021H1" < "2021H2" < "2022H1")

    run_years = list(range(start.year, end.year + 1))
    flag_years = sorted({d.year for d in frame["day"] if d is not None})
    src_buildings = sorted({int(k[10:]) for st in sites for k in st.attributes if _year_key(k, "buildings_")})
    src_ongoing = sorted({int(k[21:]) for st in sites for k in st.attributes
                          if _year_key(k, "construction_ongoing_")})
    years = sorted(set(run_years) | set(flag_years) | set(src_buildings) | set(src_ongoing))
    has_tier = any("tier" in st.attributes for st in sites)
    per_year = frame.assign(year=[d.year if d is not None else None for d in frame["day"]])

    rows = []
    for site in sites:
        own = frame[frame["site_id"] == site.site_id]
        days = [d for d in own["day"] if d is not None]
        clear_day = latest_clear.get(site.site_id)
        last = period_label(clear_day or end, period)
        by_period = own.groupby("period")["area_m2"].sum() if len(own) else pd.Series(dtype=float)
        row: dict[str, object] = {
            "site_id": site.site_id,
            "name": site.name,
            "control": bool(site.control),
            "n_flags": int(len(own)),
            "area_added_m2": round(float(own["area_m2"].sum()), 2),
            "first_change_date": min(days).isoformat() if days else None,
            "last_change_date": max(days).isoformat() if days else None,
            "latest_clear_date": clear_day.isoformat() if clear_day else None,
            "last_period": last,
            "construction_ongoing": "yes" if float(by_period.get(last, 0.0)) > 0 else "no",
        }
        for label in labels:
            row[f"added_m2_{label}"] = round(float(by_period.get(label, 0.0)), 2)
        mine = per_year[per_year["site_id"] == site.site_id]
        by_year = mine.groupby("year")["area_m2"].sum() if len(mine) else pd.Series(dtype=float)
        for year in years:
            covered = year in run_years or year in by_year.index
            added = float(by_year.get(year, 0.0)) if covered else None
            if period == "half-year":
                row[f"added_m2_{year}"] = round(added, 2) if added is not None else np.nan
            row[f"construction_ongoing_{year}"] = None if added is None else ("yes" if added > 0 else "no")
            if year in src_buildings:
                row[f"source_buildings_{year}"] = _count(site.attributes.get(f"buildings_{year}"))
            if year in src_ongoing:
                row[f"source_construction_ongoing_{year}"] = _count(
                    site.attributes.get(f"construction_ongoing_{year}"))
        if has_tier:
            row["source_tier"] = _count(site.attributes.get("tier"))
        row["not_measurable"] = NOT_MEASURABLE
        row["geometry"] = site.geometry
        rows.append(row)
    year_cols: list[str] = []
    for year in years:
        if period == "half-year":
            year_cols.append(f"added_m2_{year}")
        year_cols.append(f"construction_ongoing_{year}")
        if year in src_buildings:
            year_cols.append(f"source_buildings_{year}")
        if year in src_ongoing:
            year_cols.append(f"source_construction_ongoing_{year}")
    columns = [*SUMMARY_BASE_COLUMNS, *(f"added_m2_{p}" for p in labels), *year_cols,
               *(["source_tier"] if has_tier else []), "not_measurable", "geometry"]
    if not rows:
        empty = {c: pd.Series([], dtype="object") for c in columns if c != "geometry"}
        return gpd.GeoDataFrame(empty, geometry=gpd.GeoSeries([], crs=4326), crs=4326)
    gdf = gpd.GeoDataFrame(rows, columns=columns, geometry="geometry", crs=4326)
    gdf["n_flags"] = gdf["n_flags"].astype("int64")
    gdf["control"] = gdf["control"].astype(bool)
    for col in columns:
        if col.startswith(("source_buildings_", "source_construction_ongoing_", "source_tier", "added_m2_")):
            gdf[col] = pd.to_numeric(gdf[col], errors="coerce").astype("float64")  # counts: NaN = not given
    return gdf


def _year_key(key: str, prefix: str) -> bool:
    return key.startswith(prefix) and len(key) == len(prefix) + 4 and key[len(prefix):].isdigit()


def _count(value: Any) -> float:
    """A watchlist count or 0/1 flag as a float (NaN when missing or not a number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return float("nan")
    return float(value)
