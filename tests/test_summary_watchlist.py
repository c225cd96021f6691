"""The per-site summary's per-year columns and a watchlist's own attributes beside ours
(:func:`pipeline.publish.summary.site_summary` with sites from ``compoundwatch sites import``)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from pathlib import Path

import pandas as pd
import pytest
from _publish_data import SITE_ID, tiny_run

from pipeline.publish.summary import NOT_MEASURABLE, site_summary
from pipeline.publish.vector import feature_records, read_layer, write_layer

#: ASPI-style attributes (as ``compoundwatch sites import`` writes them): counts for 2019-2020, a tier.
ASPI = {"tier": 3, "buildings_2019": 15, "buildings_2020": None, "construction_ongoing_2019": 1,
        "construction_ongoing_2020": 0, "source_properties": {"Tier": 3}}


def test_per_year_columns_and_the_source_counts_beside_ours(tmp_path: Path) -> None:
    run = tiny_run(tmp_path)
    site = dataclasses.replace(run.site, attributes=ASPI)
    summary = site_summary(run.flags, [site], start=dt.date(2020, 6, 1), end=dt.date(2021, 12, 31),
                           latest_clear={SITE_ID: dt.date(2021, 12, 20)})
    s = summary.iloc[0]
    # flags: 14,400 m² (2021-05-15), 19,600 m² (2021-08-13), 16,000 m² (2021-03-16): all in 2021
    assert s["added_m2_2020"] == 0 and s["added_m2_2021"] == pytest.approx(50_000)
    assert (s["construction_ongoing_2020"], s["construction_ongoing_2021"]) == ("no", "yes")
    assert s["source_buildings_2019"] == 15 and math.isnan(s["source_buildings_2020"])
    assert (s["source_construction_ongoing_2019"], s["source_construction_ongoing_2020"]) == (1, 0)
    assert s["source_tier"] == 3
    # 2019 is before the run's imagery: not measured (null), not "nothing built"
    assert math.isnan(s["added_m2_2019"]) and s["construction_ongoing_2019"] is None
    assert s["not_measurable"] == NOT_MEASURABLE and "watchtowers" in NOT_MEASURABLE
    cols = list(summary.columns)
    assert cols.index("added_m2_2019") < cols.index("construction_ongoing_2019") < cols.index(
        "source_buildings_2019") < cols.index("source_construction_ongoing_2019") < cols.index("added_m2_2020")
    assert cols[-3:] == ["source_tier", "not_measurable", "geometry"]
    # every format holds the same values (nulls included)
    files = write_layer(summary, tmp_path / "out", "site_summary")
    recs = {fmt: feature_records(read_layer(p)) for fmt, p in files.items()}
    assert recs["fgb"] == recs["geojson"] == recs["parquet"]
    assert recs["geojson"][SITE_ID]["source_buildings_2019"] == 15


def test_sites_without_watchlist_attributes_get_no_source_columns(tmp_path: Path) -> None:
    run = tiny_run(tmp_path)
    summary = site_summary(run.flags, [run.site], start=dt.date(2021, 1, 1), end=dt.date(2021, 12, 31),
                           period="year")
    assert not [c for c in summary.columns if c.startswith("source_")]
    assert list(summary.columns).count("added_m2_2021") == 1  # the per-period column is the per-year one
    assert summary.iloc[0]["construction_ongoing_2021"] == "yes"
    assert pd.api.types.is_float_dtype(summary["added_m2_2021"])
