"""pipeline.explore on one demo site run in memory (synthetic source, no network): series and threshold sweep."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.api import SiteRun, run_site
from pipeline.config import load_settings
from pipeline.errors import ConfigError
from pipeline.explore import site_series, threshold_sweep

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> SiteRun:
    settings = load_settings(REPO / "params.yaml")
    settings = settings.model_copy(update={"sites_file": REPO / settings.sites_file})
    return run_site("town-edge", settings)


def test_site_series_inside_a_flag(run: SiteRun) -> None:
    assert len(run.flags) >= 1
    flag = run.flags.iloc[0]
    s = site_series(run, flag.geometry)
    times = pd.DatetimeIndex(run.scenes["time"].values)
    assert list(s.index) == list(times) and s.index.name == "date"
    clear = np.asarray(run.scenes["clear"].values, bool)
    np.testing.assert_allclose(s["cloud_cover"].to_numpy(), 1 - clear.mean(axis=(1, 2)))
    assert {"ndvi_inside", "ndbi_outside", "bsi_inside"} <= set(s.columns)
    assert ((s["clear_inside"] >= 0) & (s["clear_inside"] <= 1)).all()
    # the change: inside the flag the indices step between before and after it appeared; outside they do not
    cut = pd.Timestamp(flag["appeared_before"])
    for name in ("ndbi", "bsi", "ndvi"):
        step = {k: s[f"{name}_{k}"][s.index >= cut].median() - s[f"{name}_{k}"][s.index < cut].median()
                for k in ("inside", "outside")}
        assert abs(step["inside"]) > 0.04 and abs(step["inside"]) > 3 * abs(step["outside"]), (name, step)
    whole = site_series(run)
    assert (whole["clear_inside"].to_numpy() == pytest.approx(1 - whole["cloud_cover"].to_numpy()))
    assert whole["ndvi_outside"].isna().all()


def test_threshold_sweep_trades_recall_for_precision(run: SiteRun) -> None:
    own = float(run.detection.attrs["threshold"])
    sweep = threshold_sweep(run, [18.0, own, 3.0])
    t = sweep.table
    assert list(t["threshold"]) == sorted([18.0, own, 3.0])
    assert list(t.columns[:3]) == ["threshold", "n_flags", "flagged_area_m2"]
    assert t["pixel_recall"].is_monotonic_decreasing and t["pixel_recall"].iloc[0] > t["pixel_recall"].iloc[-1]
    assert t["flagged_area_m2"].iloc[-1] < t["flagged_area_m2"].iloc[0]
    # at the run's own threshold the sweep gives the run's own flags
    assert list(sweep.flags[own]["flag_id"]) == list(run.flags["flag_id"])
    assert sweep.flags[own].crs.to_epsg() == 4326
    row = t[t["threshold"] == own].iloc[0]
    assert row["object_precision"] == run.metrics["object_precision"]
    assert row["object_recall"] == run.metrics["object_recall"]
    with pytest.raises(ConfigError, match="positive"):
        threshold_sweep(run, [])
    with pytest.raises(ConfigError, match="positive"):
        threshold_sweep(run, [0.0, 4.0])
