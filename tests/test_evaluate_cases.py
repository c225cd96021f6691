"""Case studies of issue 6 (pipeline.evaluate.cases): scoring helpers on hand-made inputs, then the real data.

The helpers (ranking, point-in-flag matching, partial-label scores, the Landsat loader) run everywhere; the
Dabancheng and Taizhou evaluations need ``../shared/data`` and skip with a reason without it.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from affine import Affine
from pyproj import Transformer
from shapely.geometry import box

from pipeline.evaluate.cases import (
    TAIZHOU_ROOT,
    Facility,
    evaluate_taizhou,
    match_points,
    partial_label_scores,
    rank_by_confidence,
)
from pipeline.fetch.landsat import ETM_TO_S2, read_landsat_etm
from pipeline.publish.bundle import rank_flags

UTM = 32645
TO_UTM = Transformer.from_crs(4326, UTM, always_xy=True)
TO_WGS = Transformer.from_crs(UTM, 4326, always_xy=True)


def _flags(rows: list[tuple[str, float, object]]) -> gpd.GeoDataFrame:
    """Flags (flag_id, confidence, UTM geometry) with the columns the helpers read."""
    return gpd.GeoDataFrame(
        {"flag_id": [r[0] for r in rows], "confidence": [r[1] for r in rows],
         "area_m2": [r[2].area for r in rows], "appeared_after": "2018-07-23",
         "appeared_before": "2018-10-11"},
        geometry=[r[2] for r in rows], crs=UTM,
    )


def _point(key: str, x: float, y: float) -> Facility:
    lon, lat = TO_WGS.transform(x, y)
    return Facility(key, key, lon, lat)


# -- fast unit tests (no shared data) -----------------------------------------------------------------

def test_rank_by_confidence_is_the_published_order() -> None:
    flags = _flags([("cw-c", 0.6, box(0, 0, 10, 10)), ("cw-a", 0.9, box(20, 0, 30, 10)),
                    ("cw-b", 0.6, box(40, 0, 50, 10)), ("cw-d", 0.8, box(60, 0, 70, 10))])
    ranked = rank_by_confidence(flags)
    assert ranked["flag_id"].tolist() == ["cw-a", "cw-d", "cw-b", "cw-c"]  # ties: flag_id ascending
    assert ranked["rank"].tolist() == [1, 2, 3, 4]
    assert rank_flags(flags)["flag_id"].tolist() == ranked["flag_id"].tolist()


def test_match_points_takes_the_best_ranked_flag_within_the_tolerance() -> None:
    x0, y0 = 600_000.0, 4_800_000.0
    # A (conf 0.7, rank 2) contains P; B (conf 0.9, rank 1) is 60 m east of P; C (rank 3) 500 m away
    flags = _flags([("cw-a", 0.7, box(x0 - 50, y0 - 50, x0 + 50, y0 + 50)),
                    ("cw-b", 0.9, box(x0 + 60, y0 - 20, x0 + 160, y0 + 80)),
                    ("cw-c", 0.5, box(x0 + 500, y0, x0 + 600, y0 + 100))])
    ranked = rank_by_confidence(flags).to_crs(4326)  # any CRS: distances are measured in metres
    p = _point("p", x0, y0)
    q = _point("q", x0 + 350, y0 + 50)  # 150 m from C's west edge, 190 m from B
    got = match_points(ranked, [p, q], tolerance_m=100.0)
    assert got["p"]["flagged"] and got["p"]["rank"] == 1 and got["p"]["flag_id"] == "cw-b"
    assert got["p"]["distance_m"] == pytest.approx(60.0, abs=0.5)
    assert got["p"]["n_matching"] == 2 and got["p"]["nearest_m"] == 0.0
    assert got["p"]["area_m2"] == pytest.approx(10000.0)
    assert not got["q"]["flagged"] and got["q"]["rank"] is None
    assert got["q"]["nearest_m"] == pytest.approx(150.0, abs=0.5)
    strict = match_points(ranked, [p], tolerance_m=0.0)["p"]  # only a flag containing the point
    assert strict["rank"] == 2 and strict["flag_id"] == "cw-a" and strict["distance_m"] == 0.0
    assert match_points(ranked.iloc[:0], [p])["p"]["nearest_m"] is None


def test_partial_label_scores_count_only_labelled_pixels() -> None:
    change = np.array([[1, 1, 0, 0],
                       [1, 0, 1, 0],
                       [0, 0, 1, 1]], bool)
    changed = np.array([[1, 1, 0, 0],
                        [0, 0, 0, 0],
                        [0, 0, 1, 0]], bool)   # 3 labelled changed
    unchanged = np.array([[0, 0, 1, 0],
                          [1, 1, 1, 0],
                          [0, 0, 0, 0]], bool)  # 4 labelled unchanged; 5 pixels unlabelled
    s = partial_label_scores(change, changed, unchanged)
    # tp: (0,0) (0,1) (2,2); fp: (1,0) (1,2); fn: none; tn: (0,2) (1,1); (0,3) (2,3) ... unlabelled: ignored
    assert (s["tp"], s["fp"], s["fn"], s["tn"], s["n_labelled"]) == (3, 2, 0, 2, 7)
    assert s["precision"] == 0.6 and s["recall"] == 1.0
    assert s["f1"] == 0.75 and s["iou"] == 0.6
    assert s["overall_accuracy"] == round(5 / 7, 4)
    # kappa: p_o = 5/7, p_e = (5·3 + 2·4) / 49 = 23/49 -> (35/49 - 23/49) / (26/49) = 12/26
    assert s["kappa"] == round(12 / 26, 4)
    # a labelled changed pixel without data is a miss
    valid = np.ones_like(change)
    valid[0, 0] = False
    s2 = partial_label_scores(change, changed, unchanged, valid)
    assert (s2["tp"], s2["fn"], s2["n_invalid"]) == (2, 1, 1)
    with pytest.raises(ValueError, match="both changed and unchanged"):
        partial_label_scores(change, changed, changed)


def test_landsat_loader_names_bands_as_sentinel2_gives_toa_reflectance(tmp_path: Path, write_raster) -> None:
    dn = np.full((6, 4, 4), 100, np.uint8)
    dn[:, 0, 0] = 0  # no data
    path = write_raster(tmp_path / "etm.tif", dn, 32651, Affine(30, 0, 203325, 0, -30, 3604935))
    da = read_landsat_etm(path, dt.date(2000, 3, 17))
    assert list(da["band"].values) == ["B02", "B03", "B04", "B08", "B11", "B12"] == list(ETM_TO_S2.values())
    assert np.isnan(da.values[:, 0, 0]).all()
    # band 4 (NIR): L = -5.1 + (157.4 + 5.1) / 254 × 99 = 58.236; the file's centre is at 32.55° N; on
    # 17 March (declination -1.6°) at 10:00 local solar time (hour angle -30°) the sun stands 45.6° high;
    # d = 0.9948 AU -> ρ = π L d² / (1044 sin 45.6°)
    refl = math.pi * 58.236 * 0.9948**2 / (1044.0 * math.sin(math.radians(45.6)))
    assert float(da.sel(band="B08")[2, 2]) == pytest.approx(refl, rel=0.005)
    assert da.rio.crs.to_epsg() == 32651 and da.attrs["date"] == "2000-03-17"


# -- the real data (../shared/data) ---------------------------------------------------------------------

shared = pytest.mark.shared_data


@pytest.fixture
def dabancheng(dabancheng_result: dict) -> dict:
    """``evaluate_dabancheng(DABANCHENG_ROOT, pairs=False)``, run once per session (conftest; the CLI tests
    replay the same run)."""
    return dabancheng_result


@shared
def test_dabancheng_both_facilities_flagged_among_the_top5(dabancheng: dict) -> None:
    f1, f2 = dabancheng["facilities"]["facility_1"], dabancheng["facilities"]["facility_2"]
    assert dabancheng["n_dates"] == 13
    assert dabancheng["both_flagged"] and dabancheng["both_in_top5"]
    assert f1["rank"] <= 5 and f2["rank"] <= 5
    # two separate flags, each compound-sized (not one AOI-wide blob): #1 ~2 km × 0.5 km, #2 smaller
    assert f1["flag_id"] != f2["flag_id"]
    assert 30e4 < f1["area_m2"] < 200e4 and 10e4 < f2["area_m2"] < 100e4
    # #2 is new in 2020: it appears between the last 2018 scene and the 2020 scene
    assert (f2["appeared_after"], f2["appeared_before"]) == ("2018-10-11", "2020-06-02")
    # #1 was built 2017-2018: most of its changed pixels broke by the last 2018 date
    by_2018 = sum(n for d, n in f1["break_dates"].items() if d <= "2018-10-11")
    assert by_2018 > 0.5 * sum(f1["break_dates"].values())


@shared
def test_dabancheng_pairs_through_the_compare_chain(dabancheng_pairs_result: list) -> None:
    new, expansion = dabancheng_pairs_result  # dabancheng_pairs(DABANCHENG_ROOT), once per session (conftest)
    assert new["method"] == expansion["method"] == "pair-unet-rgb"  # true colour: the spatial model
    # most of each footprint digitised from the AFTER image is flagged, by one of the 3 most confident flags
    for pair in (new, expansion):
        assert pair["footprint"]["coverage"] > 0.6
        assert pair["footprint"]["best_share"] > 0.5 and pair["footprint"]["best_rank"] <= 3
    assert new["facilities"]["facility_1"]["rank"] <= 3
    assert expansion["facilities"]["facility_2"]["rank"] <= 3
    assert expansion["facilities"]["facility_2"]["appeared_before"] == "2020-06-02"


@pytest.fixture(scope="module")
def taizhou() -> dict:
    if not TAIZHOU_ROOT.is_dir():
        pytest.skip(f"shared Taizhou Landsat pair not found at {TAIZHOU_ROOT}")
    return evaluate_taizhou(TAIZHOU_ROOT)


@shared
def test_taizhou_chain_beats_the_cva_baseline_on_the_labelled_pixels(taizhou: dict) -> None:
    assert taizhou["n_labelled"] == 4227 + 17163
    chain, base = taizhou["chain"], taizhou["baseline"]
    assert chain["method"].startswith("pair-ensemble-s2-4")    # ETM+ 1-5, 7 -> the best chain for 6 bands
    assert chain["f1"] >= base["f1"]
    assert chain["f1"] >= 0.7                                  # measured 0.82 (baseline 0.15)
    assert chain["precision"] >= 0.9
