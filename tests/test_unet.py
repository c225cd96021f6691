"""The spatial change model: input normalisation, block-wise inference, resampling, training helpers.

Inference is tested with the shipped ONNX model (onnxruntime is a base dependency); the training loop
needs torch (the optional ``train`` extra), so its test is skipped where torch is not installed.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from pipeline.detect import unet as U
from pipeline.detect.unet_input import (
    CLIP,
    UNET_BAND_SETS,
    choose_unet_band_set,
    normalise,
    percentile_stats,
)
from pipeline.errors import BandError, DetectionError
from pipeline.evaluate.metrics import f1_of_counts
from pipeline.evaluate.objects import component_scores
from pipeline.train import unet as T


def _scene(rng: np.random.Generator, shape: tuple[int, int] = (3, 200, 180)) -> np.ndarray:
    from scipy import ndimage

    return ndimage.gaussian_filter(rng.random(shape).astype(np.float32), (0, 2, 2)) * 0.3 + 0.1


# ----------------------------------------------------------------------------------------------- input


def test_percentile_normalisation_maps_p2_p98_to_0_1_and_ignores_gain_and_offset() -> None:
    ramp = np.linspace(0.0, 1.0, 10_001, dtype=np.float32).reshape(1, 1, -1)
    stats = percentile_stats(ramp)
    assert stats.lo[0] == pytest.approx(0.02, abs=1e-4)
    assert stats.hi[0] == pytest.approx(0.98, abs=1e-4)
    n = normalise(ramp, stats)
    assert n[0, 0, 5000] == pytest.approx(0.5, abs=1e-4)
    assert n.min() == pytest.approx(-0.02 / 0.96, abs=1e-3) and n.max() <= 1 + CLIP
    # a display-stretched copy (gain 255/0.4, offset -20) normalises to the same values
    scene = _scene(np.random.default_rng(0))
    stretched = scene * (255 / 0.4) - 20
    a = normalise(scene, percentile_stats(scene))
    b = normalise(stretched, percentile_stats(stretched))
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_normalise_clips_and_zeroes_nodata() -> None:
    x = np.array([[[0.0, 1.0, 10.0, np.nan]]], np.float32)
    stats = percentile_stats(np.linspace(0.0, 1.0, 1001, dtype=np.float32).reshape(1, 1, -1))
    out = normalise(x, stats)
    assert out.dtype == np.float32
    assert out[0, 0, 2] == pytest.approx(1 + CLIP)
    assert out[0, 0, 3] == 0.0


def test_band_set_choice_prefers_the_richest_set() -> None:
    assert choose_unet_band_set(list(UNET_BAND_SETS["s2-13"])) == "s2-13"
    assert choose_unet_band_set(["B02", "B03", "B04", "B08", "B11", "B12"]) == "s2-6"
    assert choose_unet_band_set(["B04", "B03", "B02"]) == "rgb"
    assert choose_unet_band_set(["B04", "B03"]) is None
    assert choose_unet_band_set(["B02", "B03", "B04", "B08"], available=["rgb"]) == "rgb"


# ----------------------------------------------------------------------------------------------- blocks


def test_block_windows_tile_the_grid_once() -> None:
    cover = np.zeros((517, 300), int)
    for rows, cols in U.block_windows(517, 300, 128, 64, 8):
        assert rows.start % 128 == 0 and cols.start % 128 == 0
        cover[rows, cols] += 1
    assert (cover == 1).all()
    with pytest.raises(DetectionError, match="multiples of 8"):
        list(U.block_windows(100, 100, 100, 64, 8))


@pytest.fixture(scope="module")
def rgb_model() -> U.UnetModel:
    assert "rgb" in U.unet_band_sets(), "the package must ship the RGB spatial model"
    return U.load_unet("rgb")


def test_blockwise_inference_equals_the_whole_scene(rgb_model: U.UnetModel) -> None:
    rng = np.random.default_rng(1)
    b = _scene(rng, (3, 300, 260))
    a = b.copy()
    a[:, 100:180, 60:200] += 0.15  # a new bright block
    whole = U.unet_probability(rgb_model, b, a, block=304, halo=0)
    blocks = U.unet_probability(rgb_model, b, a, block=64, halo=64)
    np.testing.assert_allclose(blocks, whole, atol=2e-5)
    # without enough context the blocks differ: the halo is what makes them exact
    short = U.unet_probability(rgb_model, b, a, block=64, halo=8)
    assert np.abs(short - whole).max() > 1e-3
    assert whole[110:170, 70:190].mean() > whole[:60, :].mean()


def test_model_input_checks(rgb_model: U.UnetModel) -> None:
    b = np.zeros((4, 32, 32), np.float32)
    with pytest.raises(BandError, match="3 bands"):
        U.unet_probability(rgb_model, b, b)
    nan = np.full((3, 32, 32), np.nan, np.float32)
    with pytest.raises(DetectionError, match="overlap"):
        U.unet_probability(rgb_model, nan, nan)


# ----------------------------------------------------------------------------------------------- pixel size


def test_resampling_to_the_model_grid_and_back() -> None:
    assert U.resample_factor(None) == 1.0
    assert U.resample_factor(10.5) == 1.0
    assert U.resample_factor(3.4) == pytest.approx(0.34)
    x = np.ones((3, 300, 200), np.float32)
    x[:, :30, :] = np.nan
    small = U.to_model_grid(x, 0.34)
    assert small.shape == (3, 102, 68)
    assert np.isnan(small[:, :9]).all() and np.isfinite(small[:, 12:]).all()
    prob = np.zeros((102, 68), np.float32)
    prob[51:, :] = 1.0
    back = U.from_model_grid(prob, (300, 200))
    assert back.shape == (300, 200)
    assert back[:140].max() < 0.01 and back[160:].min() > 0.99


def _da(arr: np.ndarray, bands: tuple[str, ...]) -> xr.DataArray:
    return xr.DataArray(arr, dims=("band", "y", "x"), coords={
        "band": list(bands), "y": np.arange(arr.shape[1])[::-1] * 10.0, "x": np.arange(arr.shape[2]) * 10.0})


def test_detect_pair_unet_contract(rgb_model: U.UnetModel) -> None:
    rng = np.random.default_rng(2)
    b = _scene(rng, (3, 120, 100))
    a = b.copy()
    a[:, :, :5] = np.nan
    det = U.detect_pair_unet(_da(b, ("B04", "B03", "B02")), _da(a, ("B04", "B03", "B02")), "rgb")
    assert set(det.data_vars) == {"change", "score", "valid", "confidence"}
    assert det["change"].dtype == bool and det["score"].dtype == np.float32
    assert not det["valid"].values[:, :5].any() and det["valid"].values[:, 5:].all()
    assert (det["score"].values[:, :5] == 0).all()
    assert det.attrs["method"] == "pair-unet-rgb"
    assert det.attrs["threshold"] == rgb_model.threshold
    conf = det["confidence"].values
    assert ((conf >= 0.5) == det["change"].values).all()


# ----------------------------------------------------------------------------------------------- training helpers


def test_counts_and_f1_match_a_direct_count() -> None:
    rng = np.random.default_rng(3)
    prob = rng.random((50, 40)).astype(np.float32)
    label = rng.random((50, 40)) < 0.2
    valid = rng.random((50, 40)) < 0.9
    c = T.counts(prob, label, valid)
    i = int(np.argmin(np.abs(T.THRESHOLDS - 0.3)))
    pred = (prob >= T.THRESHOLDS[i]) & valid
    assert c[i].tolist() == [int((pred & label).sum()), int((pred & ~label).sum()),
                             int((~pred & label & valid).sum())]
    # the cross-validation scores counts with the project's one F1 (evaluate.metrics), empty rule included
    assert T.f1_of_counts is f1_of_counts
    assert f1_of_counts(np.array([5, 5, 0])) == pytest.approx(10 / 15)


def test_nested_thresholds_never_use_the_citys_own_fold() -> None:
    n = len(T.THRESHOLDS)
    good_low = np.zeros((n, 3), np.int64)  # best F1 at the lowest threshold
    good_low[:, 2] = np.arange(n) * 10
    good_low[:, 0] = 1000 - good_low[:, 2]
    cc = {c: good_low for f in T.FOLDS for c in f}
    own = T.FOLDS[0][0]
    huge_high = np.zeros((n, 3), np.int64)  # a city whose own best threshold is the highest, by far
    huge_high[:, 0] = 10**6
    huge_high[:, 1] = (n - 1 - np.arange(n)) * 10**6
    cc[own] = huge_high
    nested = T.nested_thresholds(cc)
    assert nested[own] == T.THRESHOLDS[0]  # chosen on the other folds only
    assert nested[T.FOLDS[1][0]] == T.THRESHOLDS[-1]  # the other folds do see that city


def test_augmentation_keeps_shapes_range_and_labels_aligned() -> None:
    rng = np.random.default_rng(4)
    b = normalise(_scene(rng, (3, 120, 120)), percentile_stats(_scene(rng, (3, 120, 120))))
    label = np.zeros((120, 120), bool)
    label[40:80, 50:90] = True
    city = T.CityArrays("x", b, b.copy(), label, np.ones_like(label))
    recipe = T.Recipe(batch=12, crop=32, jpeg=True)
    bb, ab, lb, vb = T.sample_batch([city], rng, recipe)
    assert bb.shape == ab.shape == (12, 3, 32, 32) and lb.shape == vb.shape == (12, 32, 32)
    assert bb.dtype == np.float32 and lb.dtype == bool
    assert bb.min() >= -CLIP and bb.max() <= 1 + CLIP
    assert lb.any(axis=(1, 2)).sum() >= 3  # about half the crops are centred on change
    # without augmentation both dates are the same window of the city, untouched
    b0, a0, _, _ = T.sample_batch([city], np.random.default_rng(5), recipe, augment=False)
    np.testing.assert_array_equal(b0, a0)
    jp = T._jpeg(np.clip(b[:, :32, :32], 0, 1), 80)
    assert jp.shape == (3, 32, 32) and np.abs(jp - np.clip(b[:, :32, :32], 0, 1)).mean() < 0.05


def test_tiny_training_run_exports_an_onnx_model_equal_to_torch(tmp_path) -> None:
    torch = pytest.importorskip("torch", reason="torch is the optional 'train' extra")
    import onnxruntime as ort

    rng = np.random.default_rng(6)
    b = normalise(_scene(rng, (3, 96, 96)), percentile_stats(_scene(rng, (3, 96, 96))))
    a = b.copy()
    a[:, 30:60, 30:60] += 0.5
    label = np.zeros((96, 96), bool)
    label[30:60, 30:60] = True
    city = T.CityArrays("x", b, a, label, np.ones_like(label))
    recipe = T.Recipe(steps=3, batch=2, crop=32, widths=(4, 8))
    model = T.train_model([city], recipe, tmp_path / "ckpt.pt", log_every=1)
    assert (tmp_path / "ckpt.pt").is_file()
    T.export_onnx(model, 3, tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"))
    p_onnx = sess.run(["probability"], {"before": b[None], "after": a[None]})[0][0, 0]
    p_torch = T.predict_torch(model, b, a, multiple=2)
    np.testing.assert_allclose(p_onnx, p_torch, atol=1e-5)
    assert torch.load(tmp_path / "ckpt.pt", weights_only=False)["step"] == 3  # the last step checkpointed


def test_object_scores_count_components_of_half_a_hectare() -> None:
    label = np.zeros((100, 100), bool)
    label[10:20, 10:20] = True  # 100 px = 1 ha: found (half predicted)
    label[50:60, 50:60] = True  # 1 ha: missed (a fifth predicted)
    label[90:95, 90:95] = True  # 25 px: too small to be an object
    pred = np.zeros_like(label)
    pred[10:15, 10:20] = True
    pred[50:52, 50:60] = True
    pred[70:80, 0:10] = True  # a false object
    s = component_scores(pred, label, np.ones_like(label))
    assert s == {"true": 2, "found": 1, "predicted": 2, "correct": 1}


def test_a_space_to_depth_model_measures_its_receptive_field_and_blocks_with_that_halo_are_exact(tmp_path) -> None:
    torch = pytest.importorskip("torch", reason="torch is the optional 'train' extra")
    import onnxruntime as ort

    torch.manual_seed(0)
    widths = (4, 8, 16)
    plain, folded = T.build_model(3, widths), T.build_model(3, widths, stem=2)
    m1, m2 = T.pad_multiple(widths), T.pad_multiple(widths, stem=2)
    assert (m1, m2) == (4, 8)
    r1, r2 = T.receptive_radius(plain, 3, m1, side=128), T.receptive_radius(folded, 3, m2, side=128)
    # two 3x3 convs a level: 2 px at level 0, 4 at level 1, 8 at level 2, then 4 + 2 in the decoder (20),
    # plus the pooling and up-convolution offsets; the stem doubles every step
    assert 20 <= r1 <= 24
    assert r2 == 2 * r1
    assert T.halo_for(r2, m2) % m2 == 0 and r2 <= T.halo_for(r2, m2) < r2 + m2

    rng = np.random.default_rng(3)
    b = _scene(rng, (3, 200, 184))
    a = b.copy()
    a[:, 60:120, 40:150] += 0.2
    T.export_onnx(folded, 3, tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"))
    halo = T.halo_for(r2, m2)
    model = U.UnetModel("rgb", sess, {"bands": ["B04", "B03", "B02"], "threshold": 0.5, "pad_multiple": m2,
                                      "halo": halo})
    assert model.halo == halo and model.multiple == m2
    whole = U.unet_probability(model, b, a, block=208, halo=0)
    blocks = U.unet_probability(model, b, a, block=48)  # the model's own halo
    np.testing.assert_allclose(blocks, whole, atol=2e-5)
    np.testing.assert_allclose(whole, T.predict_torch(folded, normalise(b, percentile_stats(b)),
                                                      normalise(a, percentile_stats(a)), m2), atol=1e-5)
    short = U.unet_probability(model, b, a, block=48, halo=m2)
    assert np.abs(short - whole).max() > 1e-5
