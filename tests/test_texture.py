"""Texture change: grey blocks on grey gravel, the case per-pixel change vectors do not solve.

The synthetic ``grey-desert`` scenario builds one large compound whose mean spectrum is the gravel's; only its
structure changes. Measured here: CVA on a before/after pair finds it only in pieces, the series detector
(spectral + texture channels) flags most of it (≥ 60 %) as one object, and the texture windows behave at edges and
across dask chunks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from scipy import ndimage
from shapely.geometry import box

from pipeline.config import DetectSettings, load_settings
from pipeline.detect import detect_pair, detect_series
from pipeline.detect.texture import local_texture, texture_regions
from pipeline.evaluate.objects import rasterize_truth
from pipeline.fetch import make_fetcher, request_for, truth_for
from pipeline.fetch.synthetic import SCENARIOS, SyntheticFetcher
from pipeline.preprocess import preprocess_cube
from pipeline.sites import Site

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def grey_site() -> dict:
    """One 1.8 km grey-desert site: its preprocessed scenes and truth mask (one compound, 20-40 ha)."""
    settings = load_settings(REPO / "params.yaml")
    site = Site("grey-test", "grey", box(88.40, 43.30, 88.4222, 43.3162), control=False, scenario="grey-desert")
    fetcher = make_fetcher(settings)
    request = request_for(site, settings)
    scenes = preprocess_cube(fetcher.fetch(request), settings.preprocess)
    truth = truth_for(fetcher, request)
    mask = rasterize_truth(truth, scenes["reflectance"].isel(time=0, band=0, drop=True))
    return {"settings": settings, "scenes": scenes, "truth": truth, "mask": mask}


def _pieces(change: np.ndarray, mask: np.ndarray) -> tuple[float, int, float]:
    """Share of the truth covered, number of 8-connected pieces touching it, share covered by the largest."""
    labels, _ = ndimage.label(change, structure=np.ones((3, 3)))
    ids, counts = np.unique(labels[mask & change], return_counts=True)
    keep = ids > 0
    largest = counts[keep].max() if keep.any() else 0
    return float((change & mask).sum() / mask.sum()), int(keep.sum()), float(largest / mask.sum())


def test_grey_desert_compound_has_the_gravels_mean_colour(grey_site):
    refl = grey_site["scenes"]["reflectance"].where(grey_site["scenes"]["clear"])
    mask = grey_site["mask"]
    assert len(grey_site["truth"]) == 1 and 2000 <= mask.sum() <= 4000  # 20-40 ha at 10 m
    ring = ndimage.binary_dilation(mask, iterations=8) & ~ndimage.binary_dilation(mask, iterations=3)
    last = refl.isel(time=slice(-6, None)).median("time").values  # (band, y, x), after construction
    inside, around = np.nanmean(last[:, mask], axis=1), np.nanmean(last[:, ring], axis=1)
    assert np.all(np.abs(inside / around - 1) < 0.04)  # same mean spectrum within 4 % in every band
    tex = local_texture(refl).isel(time=slice(-6, None)).median("time").values
    assert np.nanmedian(tex[ndimage.binary_erosion(mask, iterations=2)]) > 2 * np.nanmedian(tex[ring])


def test_cva_finds_the_grey_compound_only_in_pieces(grey_site):
    s = grey_site["scenes"]
    refl = s["reflectance"].where(s["clear"])
    before = refl.isel(time=slice(0, 10)).median("time").fillna(0)
    after = refl.isel(time=slice(-6, None)).median("time").fillna(0)
    det = detect_pair(before, after, DetectSettings(pair_method="cva"))
    covered, pieces, largest = _pieces(det["change"].values, grey_site["mask"])
    assert covered < 0.5 and pieces >= 10 and largest < 0.2


def test_series_detector_flags_most_of_the_grey_compound_as_one_object(grey_site):
    s = grey_site["scenes"]
    det = detect_series(s["reflectance"], s["clear"], grey_site["settings"].detect)
    change, mask = det["change"].values, grey_site["mask"]
    covered, _, largest = _pieces(change, mask)
    assert covered >= 0.6 and largest >= 0.6
    assert (change & ~ndimage.binary_dilation(mask, iterations=1)).sum() <= 0.02 * mask.sum()
    times = s["time"].values
    after, shown = (np.datetime64(grey_site["truth"][k].iloc[0]) for k in ("appeared_after", "appeared_before"))
    breaks = times[det["break_index"].values[change & mask]]
    assert (breaks > after).mean() >= 0.95  # dated after the last date before ground works began ...
    assert after < np.sort(breaks)[breaks.size // 2] <= shown  # ... and mostly by the first date showing it
    assert float(np.median(det["confidence"].values[change & mask])) >= 0.5


def test_local_texture_is_the_window_std_and_the_same_across_chunks():
    rng = np.random.default_rng(3)
    data = rng.uniform(0.1, 0.3, (2, 3, 20, 24)).astype("float32")
    data[1, :, 5, 5] = np.nan  # a cloudy pixel: every 3 × 3 window containing it is NaN
    da = xr.DataArray(data, dims=("time", "band", "y", "x"),
                      coords={"band": ["B02", "B03", "B04"], "y": np.arange(20.0), "x": np.arange(24.0)})
    tex = local_texture(da)
    bright = data.mean(axis=1)
    assert tex.dims == ("time", "y", "x")
    window = bright[0, 9:12, 9:12]
    assert tex.values[0, 10, 10] == pytest.approx(window.std() / window.mean(), rel=1e-4)
    doubled = local_texture(da * 2).values  # a gain between dates (another display stretch) changes nothing
    np.testing.assert_allclose(doubled, tex.values, rtol=1e-5, equal_nan=True)
    assert np.isnan(tex.values[1, 4:7, 4:7]).all() and np.isfinite(tex.values[1, 8, 8])
    lazy = local_texture(da.chunk({"y": 7, "x": 5})).values
    np.testing.assert_allclose(lazy, tex.values, rtol=1e-6, equal_nan=True)


def test_texture_regions_close_holes_take_the_window_ring_off_and_drop_small_regions():
    truth = np.zeros((30, 30), bool)
    truth[8:20, 6:22] = True
    seen = ndimage.binary_dilation(truth, iterations=1)  # a 3 × 3 window bleeds one pixel out
    seen[12:14, 10:12] = False  # a hole where the windows saw only yard
    seen[0, 0] = True  # a lone pixel
    seen[25:28, 25:28] = True  # a small patch: 1 px left after the ring comes off, under min_px
    out = texture_regions(seen, radius=1, closing=3, min_px=50)
    np.testing.assert_array_equal(out, truth)
    assert texture_regions(seen, radius=1, closing=3, min_px=1)[26, 26]
    assert not texture_regions(np.zeros((5, 5), bool)).any()


def test_unknown_scenario_is_a_clear_error():
    from pipeline.errors import ConfigError

    settings = load_settings(REPO / "params.yaml")
    site = Site("x", "x", box(88.40, 43.30, 88.4222, 43.3162), control=False, scenario="grey_desert")
    with pytest.raises(ConfigError, match="unknown synthetic scenario 'grey_desert'"):
        SyntheticFetcher().fetch(request_for(site, settings))
    assert "grey-desert" in SCENARIOS


def test_texture_off_is_the_spectral_channel_alone(grey_site):
    s = grey_site["scenes"]
    settings = grey_site["settings"].detect
    off = detect_series(s["reflectance"], s["clear"], settings.model_copy(update={"texture": False}))
    on = detect_series(s["reflectance"], s["clear"], settings)
    mask = grey_site["mask"]
    assert "texture_threshold" not in off.attrs and "texture_threshold" in on.attrs
    assert (off["change"].values & mask).sum() < 0.1 * mask.sum() < (on["change"].values & mask).sum()
    assert (off["change"].values <= on["change"].values).all()  # texture only adds
