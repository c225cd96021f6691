"""Compiled per-pixel kernels of the block-wise CVA chain (:mod:`pipeline.detect.chunked`).

numba-compiled loops that do in one pass over a block what the xarray CVA chain does in many (feature
stacks, differences, squares, sums, indices, gates), without temporaries. They release the GIL, so
callers run several blocks in threads. The definitions are those of :mod:`pipeline.detect.cva`
(``tests/test_chunked.py`` checks them against ``detect_pair_cva``). Compiled on first use and cached on
disk (``cache=True``) next to this file.

Pure: arrays in, arrays out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

__all__ = ["pair_kernel", "score_kernel", "upsample2_kernel"]


# numpy error model: x/0 is inf/NaN, no checks
_JIT: dict[str, Any] = {"cache": True, "nogil": True, "error_model": "numpy"}


@njit(**_JIT)
def _nd(p: float, q: float) -> float:
    s = p + q
    r = (p - q) / s
    return r if s != 0 else np.float32(np.nan)


@njit(**_JIT)
def pair_kernel(before, after, i02, i04, i08, i11, weight, gain, scale, zero_is_nodata, median, mad, threshold,
                mag, valid, greened, change, conf):
    """Change magnitude (``mag``), validity and NDVI-gain gate of one block, written in place; with
    ``mad > 0`` also the robust z score (``mag`` then holds ``max((magnitude − median) / mad, 0)``, 0 where
    the magnitude is NaN), ``change = score ≥ threshold & valid & ~greened`` and ``conf``, the confidence of
    changed pixels (0 elsewhere): ``confidence_from_score(score, threshold, 1)`` of
    :mod:`pipeline.detect.persistence`, in float64 as there (``threshold`` is a Python float here).

    ``before``/``after``: ``(band, y, x)`` float32 or uint16 values (e.g. L2A DN as read), reflectance =
    value × ``scale``; a NaN (or a 0 when ``zero_is_nodata``) is no data. ``i02 … i11``: band positions of
    B02, B04, B08, B11 (``i11 < 0``: no NDBI/BSI terms).
    ``mag`` = sqrt(Σ (after − before)² + Σ (weight·index_after − weight·index_before)²)
    over bands and NDBI/BSI (NaN where not valid or an index is undefined); ``greened`` = NDVI rose by more
    than ``gain``. Loops run along rows (contiguous x) so the compiler vectorises them.
    """
    nb, ny, nx = before.shape
    nan = np.float32(np.nan)
    zero = np.float32(0.0)
    for y in range(ny):
        m = mag[y]
        m[:] = 0
        for k in range(nb):
            brow = before[k, y]
            arow = after[k, y]
            for x in range(nx):
                bv = np.float32(brow[x])
                av = np.float32(arow[x])
                d = (av - bv) * scale
                d = nan if zero_is_nodata & ((bv == 0) | (av == 0)) else d  # branch-free: vectorises
                m[x] += d * d  # NaN (no data in some band) propagates
        b02, b04, b08 = before[i02, y], before[i04, y], before[i08, y]
        a02, a04, a08 = after[i02, y], after[i04, y], after[i08, y]
        for x in range(nx):
            s = m[x]
            ok = not np.isnan(s)
            vb02, vb04, vb08 = np.float32(b02[x]), np.float32(b04[x]), np.float32(b08[x])
            va02, va04, va08 = np.float32(a02[x]), np.float32(a04[x]), np.float32(a08[x])
            if i11 >= 0:
                vb11 = np.float32(before[i11, y, x])
                va11 = np.float32(after[i11, y, x])
                d1 = np.float32(weight * _nd(va11, va08) - weight * _nd(vb11, vb08))
                d2 = np.float32(weight * _nd(va11 + va04, va08 + va02) - weight * _nd(vb11 + vb04, vb08 + vb02))
                s = s + d1 * d1 + d2 * d2
            mg = np.sqrt(s) if ok else nan
            gr = ok and (_nd(va08, va04) - _nd(vb08, vb04) > gain)
            valid[y, x] = ok
            greened[y, x] = gr
            m[x] = mg
        if mad > 0:
            _score_row(m, valid[y], greened[y], median, mad, threshold, change[y], conf[y])
        else:
            change[y, :] = False
            conf[y, :] = zero


@njit(**_JIT)
def _score_row(m, ok, gr, median, mad, threshold, ch, cf):
    """One row: magnitude ``m`` → robust z score in place, ``ch`` = change, ``cf`` = its confidence."""
    zero = np.float32(0.0)
    thr32 = np.float32(threshold)
    for x in range(m.size):
        mg = m[x]
        z = np.float32((mg - median) / mad)
        z = z if mg > median else zero  # NaN compares False
        m[x] = z
        ch[x] = (z >= thr32) & ok[x] & ~gr[x]
    # confidence in a second, scalar pass: an exp() inside the loop above would stop it vectorising;
    # confidence_from_score(score, threshold, n_obs=1) of pipeline.detect.persistence, in float64 as there
    spread = 0.6 + 0.4 * (1.0 / (1.0 + 2.0))
    for x in range(m.size):
        c = zero
        if ch[x]:
            ratio = np.float64(m[x]) / threshold
            if ratio >= 1.0:
                c = np.float32((1.0 - 0.5 * np.exp(-2.0 * max(ratio - 1.0, 0.0))) * spread)
            else:
                c = np.float32(0.5 * min(max(ratio, 0.0), 1.0))
        cf[x] = c


@njit(**_JIT)
def score_kernel(mag, valid, greened, median, mad, threshold, change, conf):
    """The scoring tail of :func:`pair_kernel` on its ``mad = 0`` outputs (``mag``, ``valid``, ``greened``,
    2-D): ``mag`` becomes the robust z score in place, ``change`` and ``conf`` are written (same values as
    one :func:`pair_kernel` call with ``mad > 0``)."""
    for y in range(mag.shape[0]):
        _score_row(mag[y], valid[y], greened[y], median, mad, threshold, change[y], conf[y])


@njit(**_JIT)
def upsample2_kernel(raw, out):
    """Bilinear ×2 enlargement of ``raw`` (2-D) into ``out`` (float ``2h × 2w``), pixel edges aligned, edge
    pixels extended (``scipy.ndimage.zoom(raw, 2, order=1, mode="nearest", grid_mode=True)``); an output
    pixel that any 0-valued (no-data) source pixel contributes to is 0. Separable: rows, then columns."""
    h, w = raw.shape
    near, far = np.float32(0.75), np.float32(0.25)
    v = np.empty(w, np.float32)
    z = np.empty(w, np.bool_)
    for oy in range(2 * h):
        y = oy // 2
        y2 = min(max(y - 1 if oy % 2 == 0 else y + 1, 0), h - 1)
        r0 = raw[y]
        r1 = raw[y2]
        for x in range(w):
            a = np.float32(r0[x])
            b = np.float32(r1[x])
            v[x] = near * a + far * b
            z[x] = (a == 0) | (b == 0)
        o = out[oy]
        for x in range(w):
            xl = max(x - 1, 0)
            xr = min(x + 1, w - 1)
            left = near * v[x] + far * v[xl]
            right = near * v[x] + far * v[xr]
            o[2 * x] = np.float32(0) if z[x] | z[xl] else left
            o[2 * x + 1] = np.float32(0) if z[x] | z[xr] else right
