"""Relative radiometric normalisation of every date of a series onto the series' own median composite.

A series assembled from several products (for example 8-bit display-stretched true-colour exports of L1C
next to an 8-bit "raw" L2A export, or scenes from two processing chains) differs between dates by roughly a
gain and an offset per band: display stretch (×2.5 in EO Browser's true colour), top-of-atmosphere vs
surface reflectance (haze adds an offset, mostly in blue), sun angle. A fixed DN scale cannot fix that, since
it differs per image. :func:`normalise_series` estimates it per date and band:

1. **Reference.** The per-pixel median over the clear dates (the series composite). It carries the
   radiometry of the majority of dates, so a single odd date is mapped onto the others, not the reverse.
2. **Likely-unchanged pixels.** Per date, the pixels whose standardised multi-band difference to the
   composite is in the lower ``keep`` fraction (:func:`pipeline.preprocess.normalise.invariant_mask`,
   iterated; the standardisation is per image, so it works before any gain is known).
3. **Linear map.** Per band, a reduced-major-axis fit (gain = ratio of spreads, offset = difference of means)
   of the date onto the composite over those pixels; gains are bounded to ``[1/MAX_GAIN, MAX_GAIN]`` and a
   date with fewer than ``MIN_PIXELS`` usable pixels is left unchanged.

The fits use a regular subsample of at most ``max_pixels`` pixels, so a dask-backed cube is read only at
that stride; the maps are then applied lazily. Construction that changes a minority of the pixels does not
bias the fit (it is not in the likely-unchanged set), so real change survives the normalisation.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import xarray as xr

from pipeline.preprocess.normalise import invariant_mask

__all__ = ["normalise_series", "series_gains", "MAX_GAIN", "MIN_PIXELS"]

#: Largest per-band gain (and smallest, as its inverse) accepted between a date and the composite.
MAX_GAIN = 5.0
#: Fewest likely-unchanged pixels needed to fit a date's map (else the date is left as it is).
MIN_PIXELS = 100


def series_gains(
    refl: np.ndarray, clear: np.ndarray, *, keep: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Per-date, per-band ``(gains, offsets)`` mapping each date of ``refl`` onto the series composite.

    Parameters
    ----------
    refl
        Reflectance ``(time, band, y, x)`` (any consistent unit), NaN = no data.
    clear
        ``(time, y, x)`` bool, True where the observation is usable.
    keep
        Fraction of the valid pixels of each date kept as likely unchanged.

    Returns
    -------
    gains, offsets
        float32 ``(time, band)``; ``gains * refl + offsets`` is on the composite's radiometry. Dates or bands
        that cannot be fitted get gain 1 and offset 0.
    """
    refl = np.asarray(refl, np.float32)
    nt, nb = refl.shape[:2]
    masked = np.where(np.asarray(clear, bool)[:, None], refl, np.nan)
    gains = np.ones((nt, nb), np.float32)
    offs = np.zeros((nt, nb), np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # pixels never clear give NaN medians: expected
        composite = np.nanmedian(masked, axis=0)
    for t in range(nt):
        date = masked[t]
        if np.isfinite(date).all(0).sum() < MIN_PIXELS:
            continue
        mask = invariant_mask(composite, date, keep)
        if mask.sum() < MIN_PIXELS:
            continue
        for b in range(nb):
            xa = date[b][mask].astype(np.float64)
            xc = composite[b][mask].astype(np.float64)
            sa, sc = xa.std(), xc.std()
            if not (sa > 0 and sc > 0):
                continue
            g = float(np.clip(sc / sa, 1.0 / MAX_GAIN, MAX_GAIN))
            gains[t, b] = g
            offs[t, b] = float(xc.mean() - g * xa.mean())
    return gains, offs


def normalise_series(
    refl: xr.DataArray, clear: xr.DataArray, *, keep: float = 0.5, max_pixels: int = 250_000
) -> xr.DataArray:
    """``refl`` with every date mapped linearly (per band) onto the series' median composite.

    Parameters
    ----------
    refl
        Reflectance ``(time, band, y, x)``, NaN = no data; may be dask-backed (read once at a stride).
    clear
        ``(time, y, x)`` clear mask; only clear observations shape the composite and the fits.
    keep
        Fraction of each date's valid pixels used as likely unchanged (see the module docstring).
    max_pixels
        The fits use a regular subsample of at most this many pixels.

    Returns
    -------
    xarray.DataArray
        Same dims, coords and attrs (float32; lazy if ``refl`` is), with attrs ``normalise_gains`` and
        ``normalise_offsets`` (flat lists, ``time``-major) recording the maps.
    """
    refl = refl.transpose("time", "band", "y", "x")
    clear = clear.transpose("time", "y", "x")
    ny, nx = refl.sizes["y"], refl.sizes["x"]
    step = max(1, math.ceil(math.sqrt(ny * nx / max_pixels)))
    sub = dict(y=slice(None, None, step), x=slice(None, None, step))
    sample = np.asarray(refl.isel(sub).values, np.float32)
    sample_clear = np.asarray(clear.isel(sub).values, bool)
    gains, offs = series_gains(sample, sample_clear, keep=keep)
    g = xr.DataArray(gains, dims=("time", "band"), coords={"time": refl["time"], "band": refl["band"]})
    o = xr.DataArray(offs, dims=("time", "band"), coords={"time": refl["time"], "band": refl["band"]})
    out = (refl * g + o).astype("float32").transpose("time", "band", "y", "x")
    out.attrs = {
        **refl.attrs,
        "normalise_gains": [round(float(v), 6) for v in gains.ravel()],
        "normalise_offsets": [round(float(v), 6) for v in offs.ravel()],
    }
    return out
