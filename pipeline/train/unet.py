"""Train the spatial change model (a small Siamese U-Net) on the labelled OSCD cities, on the CPU.

Usage::

    python -m pipeline.train.unet --data ../shared/data/oscd --band-set rgb \
        --work .cache/unet --out pipeline/data/unet --final [--steps 1000] [--threads 1] [--no-cv]

What it does, resumably (every finished piece is a file under ``--work``; a stopped run picks up where it
was, a checkpoint every :data:`CHECKPOINT_EVERY` steps):

1. **cache**: each labelled city read as ``compoundwatch compare imgs_1/ imgs_2/`` reads it, all 13 bands,
   as float32 arrays (``<work>/cities/<city>.npz``);
2. with ``--final``, the **shipped model** on all 10 cities first (so it can be tried while the
   cross-validation runs), exported to ONNX (``unet-<band set>.onnx``) with a sidecar ``unet-<band set>.json``
   (bands, normalisation, recipe, data hash; threshold 0.5 until step 4);
3. **grouped cross-validation**: :data:`FOLDS` (5 folds of 2 cities); each fold's model is trained on the
   other 8 cities and predicts its own 2 (out-of-fold probabilities ``<work>/<band set>/oof/<city>.npy``);
4. **decision**: the probability threshold of each fold is the one with the best pooled micro-F1 on the
   *other* folds' out-of-fold maps (no city is scored by a threshold that saw it); the shipped threshold is
   the best on all out-of-fold maps, written with the cross-validation report (:func:`cv_report`) into the
   sidecar.

Training recipe (:class:`Recipe`): random crops (half centred on a change pixel), flips and 90° turns,
0-1 px misregistration of AFTER, per-date radiometric augmentation (gain, offset, gamma, blur, noise,
8-bit quantisation as in display-stretched exports, JPEG for the RGB model), dates swapped half the time,
weighted BCE + dice, AdamW with a one-cycle cosine schedule. torch is needed only here (the ``train``
extra); inference runs on onnxruntime. Hold-out cities are never read.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import io
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from pipeline.detect.unet_input import CLIP, UNET_BAND_SETS, normalise, percentile_stats
from pipeline.evaluate.metrics import f1_of_counts, rate, threshold_counts
from pipeline.evaluate.objects import component_scores

__all__ = ["FOLDS", "Recipe", "CityArrays", "build_model", "pad_multiple", "train_model", "main"]

#: Grouped cross-validation folds over the 10 labelled cities (pairs mixing large and small change shares).
FOLDS: tuple[tuple[str, str], ...] = (
    ("abudhabi", "paris"),
    ("aguasclaras", "cupertino"),
    ("beihai", "bordeaux"),
    ("bercy", "mumbai"),
    ("rennes", "saclay_e"),
)
ALL_BANDS = UNET_BAND_SETS["s2-13"]
CHECKPOINT_EVERY = 100
THRESHOLDS = np.round(np.arange(0.05, 0.96, 0.01), 2)


@dataclass(frozen=True)
class Recipe:
    """Everything that decides a trained model, written into the sidecar."""

    steps: int = 1000
    batch: int = 16
    crop: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    pos_weight: float = 3.0
    dice_weight: float = 1.0
    change_centred: float = 0.5
    widths: tuple[int, ...] = (16, 32, 64, 128)
    stem: int = 1  # space-to-depth factor of the input: the U-Net runs on pixels ``stem`` times coarser
    max_shift_px: float = 1.0
    seed: int = 0
    jpeg: bool = False  # JPEG-compress the augmented dates (the RGB model: exports are JPEGs)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class CityArrays:
    """One city, normalised per date: ``before``/``after`` ``(band, y, x)`` float32, ``label`` bool."""

    name: str
    before: np.ndarray
    after: np.ndarray
    label: np.ndarray
    valid: np.ndarray

    @functools.cached_property
    def change_px(self) -> np.ndarray:
        """Flat indices of the change pixels (crops are centred on them), found once per city."""
        return np.flatnonzero(self.label)


# ----------------------------------------------------------------------------------------------- data


def cache_cities(root: Path, cache: Path, cities: list[str]) -> None:
    """Read each city once (13 bands, the ``compare`` path) into ``cache/<city>.npz``."""
    from pipeline.fetch.oscd import read_city

    cache.mkdir(parents=True, exist_ok=True)
    for city in cities:
        path = cache / f"{city}.npz"
        if path.is_file():
            continue
        t0 = time.perf_counter()
        oc = read_city(root, city, list(ALL_BANDS))
        assert oc.label is not None
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, before=oc.before.values.astype(np.float32), after=oc.after.values.astype(np.float32),
                 label=oc.label)
        tmp.replace(path)
        print(f"cache {city}: {oc.before.shape} in {time.perf_counter() - t0:.1f} s", flush=True)


def load_city(cache: Path, city: str, bands: tuple[str, ...]) -> CityArrays:
    """A cached city, the band set's bands, each date normalised on its own (as at inference)."""
    z = np.load(cache / f"{city}.npz")
    idx = [ALL_BANDS.index(b) for b in bands]
    b, a = z["before"][idx], z["after"][idx]
    valid = np.isfinite(b).all(0) & np.isfinite(a).all(0)
    nb = normalise(b, percentile_stats(b, valid))
    na = normalise(a, percentile_stats(a, valid))
    return CityArrays(city, nb, na, z["label"].astype(bool), valid)


def data_hash(cache: Path, cities: list[str]) -> str:
    """sha256 (first 16 hex) of the cached cities' arrays, in city order."""
    h = hashlib.sha256()
    for city in cities:
        z = np.load(cache / f"{city}.npz")
        for k in ("before", "after", "label"):
            h.update(np.ascontiguousarray(z[k]).tobytes())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------------------------- augmentation


def _jpeg(x: np.ndarray, quality: int) -> np.ndarray:
    """``x`` (3, y, x) in 0-1 through an 8-bit JPEG of ``quality`` and back."""
    from PIL import Image

    u8 = (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0)
    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return np.asarray(Image.open(buf), dtype=np.float32).transpose(2, 0, 1) / 255.0


def augment_date(x: np.ndarray, rng: np.random.Generator, recipe: Recipe) -> np.ndarray:
    """Radiometric augmentation of one normalised date ``(band, y, x)`` (a copy)."""
    x = x.copy()
    nb = x.shape[0]
    if rng.random() < 0.8:  # tone curve: gamma, then residual gain/offset (per band jitter)
        g = float(np.exp(rng.uniform(np.log(0.6), np.log(1.6))))
        x = np.clip(x, 0, 1 + CLIP) ** g
        gain = np.asarray(rng.uniform(0.8, 1.25) * rng.uniform(0.95, 1.05, nb), np.float32)
        off = np.asarray(rng.uniform(-0.1, 0.1) + rng.uniform(-0.02, 0.02, nb), np.float32)
        x = x * gain[:, None, None] + off[:, None, None]
    if rng.random() < 0.2:
        s = rng.uniform(0.3, 1.0)
        x = ndimage.gaussian_filter(x, (0, s, s), mode="nearest")
    if rng.random() < 0.3:  # a display-stretched 8-bit export: clipped to the stretch, quantised
        x = np.clip(x, 0, 1)
        if recipe.jpeg and nb == 3 and rng.random() < 0.6:
            x = _jpeg(x, int(rng.integers(35, 96)))
        else:
            x = np.round(x * 255) / 255
    if rng.random() < 0.3:
        x = x + rng.normal(0, rng.uniform(0.005, 0.03), x.shape)
    return np.clip(x, -CLIP, 1 + CLIP).astype(np.float32)


def sample_batch(
    cities: list[CityArrays], rng: np.random.Generator, recipe: Recipe, augment: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A batch: ``before``, ``after`` ``(n, band, crop, crop)``, ``label`` and ``valid`` ``(n, crop, crop)``."""
    s, m = recipe.crop, 2  # crop size and a margin for the sub-pixel shift
    sizes = np.array([c.label.size for c in cities], float)
    bs, as_, ls, vs = [], [], [], []
    for _ in range(recipe.batch):
        c = cities[rng.choice(len(cities), p=sizes / sizes.sum())]
        h, w = c.label.shape
        pos = c.change_px
        if pos.size and rng.random() < recipe.change_centred:
            cy, cx = divmod(int(pos[rng.integers(pos.size)]), w)
            y0 = int(np.clip(cy - s // 2 + rng.integers(-s // 4, s // 4 + 1), m, h - s - m))
            x0 = int(np.clip(cx - s // 2 + rng.integers(-s // 4, s // 4 + 1), m, w - s - m))
        else:
            y0 = int(rng.integers(m, h - s - m + 1))
            x0 = int(rng.integers(m, w - s - m + 1))
        rows, cols = slice(y0 - m, y0 + s + m), slice(x0 - m, x0 + s + m)
        b = c.before[:, rows, cols]
        a = c.after[:, rows, cols]
        lab = c.label[rows, cols]
        val = c.valid[rows, cols]
        if augment:
            if recipe.max_shift_px > 0:
                shift = rng.uniform(-recipe.max_shift_px, recipe.max_shift_px, 2)
                a = ndimage.shift(a, (0.0, float(shift[0]), float(shift[1])), order=1, mode="nearest")
            b = augment_date(b, rng, recipe)
            a = augment_date(a, rng, recipe)
            if rng.random() < 0.5:  # dates swapped: construction and demolition look alike to the label
                b, a = a, b
        core = slice(m, m + s)
        b, a, lab, val = b[:, core, core], a[:, core, core], lab[core, core], val[core, core]
        if augment:
            k = int(rng.integers(4))
            flip = rng.random() < 0.5
            b, a = np.rot90(b, k, (1, 2)), np.rot90(a, k, (1, 2))
            lab, val = np.rot90(lab, k), np.rot90(val, k)
            if flip:
                b, a, lab, val = b[:, :, ::-1], a[:, :, ::-1], lab[:, ::-1], val[:, ::-1]
        bs.append(np.ascontiguousarray(b))
        as_.append(np.ascontiguousarray(a))
        ls.append(np.ascontiguousarray(lab))
        vs.append(np.ascontiguousarray(val))
    return np.stack(bs), np.stack(as_), np.stack(ls), np.stack(vs)


# ----------------------------------------------------------------------------------------------- model


def pad_multiple(widths: tuple[int, ...], stem: int = 1) -> int:
    """The factor input sides (and block origins) must be multiples of: the stem times the pooling."""
    return stem * 2 ** (len(widths) - 1)


def build_model(in_ch: int, widths: tuple[int, ...] = (16, 32, 64, 128), stem: int = 1) -> Any:
    """A Siamese U-Net with difference skips (the FC-Siam-diff family): one encoder for both dates, the
    decoder sees ``|f_after - f_before|`` at every scale. With ``stem`` > 1 each date's ``stem`` × ``stem``
    pixel blocks are first folded into channels (space-to-depth, no information dropped), the U-Net runs on
    that ``stem`` times coarser grid (``stem ** 2`` times fewer pixels, twice the context per layer) and its
    logits are brought back to the input grid bilinearly. Input sides must be multiples of
    :func:`pad_multiple`. Returns logits ``(n, 1, y, x)``."""
    import torch
    from torch import nn

    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        )

    class SiamDiffUNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            chans = [in_ch * stem * stem, *widths]
            self.enc = nn.ModuleList(block(chans[i], chans[i + 1]) for i in range(len(widths)))
            self.pool = nn.MaxPool2d(2)
            self.up = nn.ModuleList(
                nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in range(len(widths) - 1)
            )
            self.dec = nn.ModuleList(block(2 * widths[i], widths[i]) for i in range(len(widths) - 1))
            self.head = nn.Conv2d(widths[0], 1, 1)

        def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
            feats = []
            for i, enc in enumerate(self.enc):
                x = enc(x if i == 0 else self.pool(x))
                feats.append(x)
            return feats

        def forward(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
            if stem > 1:
                before = nn.functional.pixel_unshuffle(before, stem)
                after = nn.functional.pixel_unshuffle(after, stem)
            fb, fa = self.encode(before), self.encode(after)
            diffs = [torch.abs(a - b) for a, b in zip(fa, fb)]
            x = diffs[-1]
            for i in range(len(widths) - 2, -1, -1):
                x = self.dec[i](torch.cat([self.up[i](x), diffs[i]], 1))
            x = self.head(x)
            if stem > 1:
                x = nn.functional.interpolate(x, scale_factor=stem, mode="bilinear", align_corners=False)
            return x

    return SiamDiffUNet()


def _loss(logits: Any, label: Any, valid: Any, recipe: Recipe) -> Any:
    import torch
    import torch.nn.functional as F

    w = valid * (1 + (recipe.pos_weight - 1) * label)
    bce = (F.binary_cross_entropy_with_logits(logits, label, reduction="none") * w).sum() / w.sum().clamp(min=1)
    p = torch.sigmoid(logits) * valid
    inter = (p * label).sum()
    dice = 1 - (2 * inter + 1) / (p.sum() + (label * valid).sum() + 1)
    return bce + recipe.dice_weight * dice


def train_model(cities: list[CityArrays], recipe: Recipe, ckpt: Path | None = None, log_every: int = 100) -> Any:
    """Train on ``cities`` with ``recipe``; resumes from ``ckpt`` (written every :data:`CHECKPOINT_EVERY`
    steps) when it exists. Returns the model in eval mode."""
    import torch

    torch.manual_seed(recipe.seed)
    in_ch = cities[0].before.shape[0]
    model = build_model(in_ch, recipe.widths, recipe.stem)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=recipe.lr, total_steps=recipe.steps, pct_start=0.05, anneal_strategy="cos"
    )
    rng = np.random.default_rng(recipe.seed)
    step = 0
    if ckpt is not None and ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        step = state["step"]
        print(f"resumed at step {step} from {ckpt}", flush=True)
    model.train()
    t0 = time.perf_counter()
    first = step
    run_loss = 0.0
    while step < recipe.steps:
        b, a, lab, val = sample_batch(cities, rng, recipe)
        tb, ta = torch.from_numpy(b), torch.from_numpy(a)
        tl = torch.from_numpy(lab[:, None].astype(np.float32))
        tv = torch.from_numpy(val[:, None].astype(np.float32))
        loss = _loss(model(tb, ta), tl, tv, recipe)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        run_loss += loss.item()
        if step % log_every == 0 or step == recipe.steps:
            rate = (time.perf_counter() - t0) / (step - first)
            print(f"step {step}/{recipe.steps} loss {run_loss / log_every:.4f} {rate:.2f} s/step "
                  f"eta {rate * (recipe.steps - step) / 60:.1f} min", flush=True)
            run_loss = 0.0
        if ckpt is not None and (step % CHECKPOINT_EVERY == 0 or step == recipe.steps):
            tmp = ckpt.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "step": step}, tmp)
            tmp.replace(ckpt)
    model.eval()
    return model


def predict_torch(model: Any, before: np.ndarray, after: np.ndarray, multiple: int = 8) -> np.ndarray:
    """Change probability ``(y, x)`` of a whole normalised pair (padded by reflection to ``multiple``)."""
    import torch

    h, w = before.shape[1:]
    ph, pw = (-h) % multiple, (-w) % multiple
    pad = ((0, 0), (0, ph), (0, pw))
    b = np.pad(before, pad, mode="reflect")[None]
    a = np.pad(after, pad, mode="reflect")[None]
    with torch.no_grad():
        logits = model(torch.from_numpy(b), torch.from_numpy(a))
    return torch.sigmoid(logits)[0, 0, :h, :w].numpy().astype(np.float32)


# ----------------------------------------------------------------------------------------------- decision


def counts(prob: np.ndarray, label: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``(threshold, 3)`` TP, FP, FN of ``prob >= t`` on valid pixels for each of :data:`THRESHOLDS`."""
    return threshold_counts(prob[valid], label[valid], THRESHOLDS)


def nested_thresholds(city_counts: dict[str, np.ndarray]) -> dict[str, float]:
    """Per city, the threshold with the best pooled micro-F1 over the cities of the *other* folds."""
    out = {}
    for fold in FOLDS:
        others = np.sum([c for k, c in city_counts.items() if k not in fold], axis=0)
        t = float(THRESHOLDS[int(np.argmax(f1_of_counts(others)))])
        for city in fold:
            out[city] = t
    return out


def cv_report(oof: Path, data: dict[str, CityArrays]) -> dict[str, Any]:
    """Cross-validation scores from the out-of-fold maps in ``oof``: per city the nested threshold, pixel
    F1 there and at 0.5, predicted vs true change fraction and object counts
    (:func:`pipeline.evaluate.objects.component_scores`); pooled micro/macro F1, object recall/precision,
    and the threshold the shipped model gets (best pooled micro-F1)."""
    cities = sorted(data)
    probs = {c: np.load(oof / f"{c}.npy") for c in cities}
    cc = {c: counts(probs[c], data[c].label, data[c].valid) for c in cities}
    nested = nested_thresholds(cc)
    i05 = int(np.argmin(np.abs(THRESHOLDS - 0.5)))
    per_city: dict[str, Any] = {}
    strict_total = np.zeros(3, np.int64)
    obj_total = {"true": 0, "found": 0, "predicted": 0, "correct": 0}
    for c in cities:
        ti = int(np.argmin(np.abs(THRESHOLDS - nested[c])))
        strict_total += cc[c][ti]
        v = data[c].valid
        pred = (probs[c] >= nested[c]) & v
        obj = component_scores(pred, data[c].label, v)
        for k in obj_total:
            obj_total[k] += obj[k]
        per_city[c] = {
            "threshold": nested[c], "f1": round(float(f1_of_counts(cc[c][ti])), 4),
            "precision": round(rate(int(cc[c][ti][0]), int(cc[c][ti][0] + cc[c][ti][1])), 4),
            "recall": round(rate(int(cc[c][ti][0]), int(cc[c][ti][0] + cc[c][ti][2])), 4),
            "f1_at_0.5": round(float(f1_of_counts(cc[c][i05])), 4),
            "predicted_fraction": round(float(pred[v].mean()), 4),
            "true_fraction": round(float(data[c].label[v].mean()), 4),
            "objects": obj,
        }
    pooled = np.sum([cc[c] for c in cities], axis=0)
    best = int(np.argmax(f1_of_counts(pooled)))
    return {
        "folds": [list(f) for f in FOLDS], "per_city": per_city,
        "micro_f1": round(float(f1_of_counts(strict_total)), 4),
        "macro_f1": round(float(np.mean([v["f1"] for v in per_city.values()])), 4),
        "micro_f1_at_0.5": round(float(f1_of_counts(pooled[i05])), 4),
        "object_recall": round(rate(obj_total["found"], obj_total["true"]), 4),
        "object_precision": round(rate(obj_total["correct"], obj_total["predicted"]), 4),
        "objects": obj_total,
        "threshold": float(THRESHOLDS[best]), "pooled_best_micro_f1": round(float(f1_of_counts(pooled[best])), 4),
    }


# ----------------------------------------------------------------------------------------------- export


def receptive_radius(model: Any, in_ch: int, multiple: int, side: int = 512) -> int:
    """The network's receptive-field radius in input pixels, measured: the largest distance from one output
    pixel of a random pair at which an input pixel has a non-zero gradient. Inference blocks need a halo of
    at least this (no seams, nothing to blend)."""
    import torch

    side = -(-side // multiple) * multiple
    gen = torch.Generator().manual_seed(0)
    before = torch.rand(1, in_ch, side, side, generator=gen, requires_grad=True)
    after = torch.rand(1, in_ch, side, side, generator=gen)
    model.eval()
    c = side // 2
    model(before, after)[0, 0, c, c].backward()
    assert before.grad is not None
    ys, xs = np.nonzero(before.grad.abs().sum((0, 1)).numpy())
    radius = int(max(c - ys.min(), ys.max() - c, c - xs.min(), xs.max() - c))
    if radius >= c - 1:  # the field reaches the probe's border: it may be wider still
        return receptive_radius(model, in_ch, multiple, side * 2)
    return radius


def halo_for(radius: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is at least ``radius`` pixels."""
    return -(-radius // multiple) * multiple


def export_onnx(model: Any, in_ch: int, path: Path) -> None:
    """The model with a sigmoid, inputs ``before``/``after`` ``(n, band, y, x)`` (dynamic n, y, x), output
    ``probability`` ``(n, 1, y, x)``, opset 17."""
    import torch

    class WithSigmoid(torch.nn.Module):
        def __init__(self, net: Any) -> None:
            super().__init__()
            self.net = net

        def forward(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.net(before, after))

    wrapped = WithSigmoid(model).eval()
    dummy = torch.zeros(1, in_ch, 64, 64)
    tmp = path.with_suffix(".tmp")
    dyn = {0: "n", 2: "y", 3: "x"}
    torch.onnx.export(
        wrapped, (dummy, dummy), str(tmp), input_names=["before", "after"], output_names=["probability"],
        dynamic_axes={"before": dyn, "after": dyn, "probability": dyn}, opset_version=17, dynamo=False,
    )
    tmp.replace(path)


# ----------------------------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    torch.set_num_threads(args.threads)
    from pipeline.fetch.oscd import labelled_cities

    root, work, out = Path(args.data), Path(args.work), Path(args.out)
    cities = labelled_cities(root)
    expected = sorted(c for f in FOLDS for c in f)
    if cities != expected:
        raise SystemExit(f"expected the 10 labelled cities {expected}, found {cities}")
    cache = work / "cities"
    cache_cities(root, cache, cities)
    bands = UNET_BAND_SETS[args.band_set]
    recipe = Recipe(steps=args.steps, jpeg=args.band_set == "rgb", seed=args.seed, stem=args.stem,
                    widths=tuple(args.widths), crop=args.crop)
    multiple = pad_multiple(recipe.widths, recipe.stem)
    bwork = work / args.band_set
    (bwork / "oof").mkdir(parents=True, exist_ok=True)
    data = {c: load_city(cache, c, bands) for c in cities}
    report: dict[str, Any] = {"band_set": args.band_set, "bands": list(bands), "recipe": asdict(recipe)}

    if args.final:
        model = train_model([data[c] for c in cities], recipe, bwork / "final.pt")
        out.mkdir(parents=True, exist_ok=True)
        onnx_path = out / f"unet-{args.band_set}.onnx"
        export_onnx(model, len(bands), onnx_path)
        radius = receptive_radius(model, len(bands), multiple)
        sidecar = {
            "format": "onnx", "model": onnx_path.name, "band_set": args.band_set, "bands": list(bands),
            "normalisation": {"method": "per-date percentiles", "low": 2.0, "high": 98.0, "clip": CLIP},
            "threshold": 0.5,
            "pad_multiple": multiple, "receptive_radius_px": radius, "halo": halo_for(radius, multiple),
            "recipe": asdict(recipe), "data_hash": data_hash(cache, cities), "cv": None,
            "torch": torch.__version__,
        }
        (out / f"unet-{args.band_set}.json").write_text(json.dumps(sidecar, indent=1) + "\n")
    if not args.no_cv:
        for k, fold in enumerate(FOLDS):
            if all((bwork / "oof" / f"{c}.npy").is_file() for c in fold):
                continue
            print(f"fold {k}: validating on {fold}", flush=True)
            model = train_model([data[c] for c in cities if c not in fold], recipe, bwork / f"fold{k}.pt")
            for c in fold:
                prob = predict_torch(model, data[c].before, data[c].after, multiple)
                np.save(bwork / "oof" / f"{c}.npy", prob)
        report["cv"] = cv_report(bwork / "oof", data)
        print(json.dumps(report["cv"], indent=1), flush=True)
        side = out / f"unet-{args.band_set}.json"
        if side.is_file():  # the shipped model's threshold and scores come from the cross-validation
            meta = json.loads(side.read_text())
            meta.update(threshold=report["cv"]["threshold"], cv=report["cv"])
            side.write_text(json.dumps(meta, indent=1) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.train.unet", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="the OSCD folder (images/, train_labels/)")
    ap.add_argument("--band-set", default="rgb", choices=list(UNET_BAND_SETS))
    ap.add_argument("--work", default=".cache/unet", help="resumable work folder (cache, checkpoints, oof)")
    ap.add_argument("--out", default="pipeline/data/unet", help="where the ONNX model and sidecar go")
    ap.add_argument("--steps", type=int, default=Recipe.steps)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--widths", type=int, nargs="+", default=list(Recipe.widths),
                    help="channels per U-Net level (default %(default)s)")
    ap.add_argument("--crop", type=int, default=Recipe.crop, help="training crop side (pixels, default 64)")
    ap.add_argument("--stem", type=int, default=Recipe.stem,
                    help="space-to-depth factor: the U-Net runs on a grid this many times coarser (default 1)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-cv", action="store_true", help="skip the grouped cross-validation")
    ap.add_argument("--final", action="store_true", help="train the shipped model on all cities and export it")
    ap.add_argument("--report", help="write the report JSON here")
    args = ap.parse_args(argv)
    report = run(args)
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
