"""Tiny, hand-controlled DETECTION datasets for tests, notebooks and examples.

:func:`make_detection` builds a dataset that follows the detection contract of
:func:`pipeline.detect.detect_series` (its docstring's Returns) without running any detector: you say
where the change blocks are, when they appear and how strong they are, and get exactly that back. Every
value is deterministic, so tests can assert on areas, dates and ids computed by hand.

The grid is north-up with square pixels of ``resolution`` metres whose top-left corner is ``origin``
(metres in ``epsg``); pixel ``(row, col)`` covers ``x0 + col*res .. x0 + (col+1)*res`` and
``y0 - (row+1)*res .. y0 - row*res``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from affine import Affine

from pipeline.errors import ConfigError

__all__ = ["Block", "make_detection", "default_dates", "DEFAULT_ORIGIN"]

#: Top-left corner (x, y) of the default test grid, metres. In EPSG:32645 this is on the zone's central
#: meridian (87° E) at about 43.3° N, close to the demo sites.
DEFAULT_ORIGIN = (500_000.0, 4_800_000.0)


@dataclass(frozen=True)
class Block:
    """A planted change: pixel rows ``[r0, r1)`` and cols ``[c0, c1)`` changing from date index ``start``.

    ``score`` (robust z units) and ``confidence`` (0-1) are written to every pixel of the block.
    ``break_index`` is the first *clear* date at or after ``start``; ``after_index`` the last clear date
    before ``start`` (-1 where there is none).
    """

    rows: tuple[int, int]
    cols: tuple[int, int]
    start: int
    score: float = 12.0
    confidence: float = 0.9


def default_dates(n: int = 12, first: str = "2021-01-15", step_days: int = 30) -> list[dt.date]:
    """``n`` acquisition dates ``step_days`` apart from ``first`` (ISO date)."""
    d0 = dt.date.fromisoformat(first)
    return [d0 + dt.timedelta(days=step_days * i) for i in range(n)]


def _as_block(b: Block | Mapping[str, Any] | Sequence[Any]) -> Block:
    if isinstance(b, Block):
        return b
    if isinstance(b, Mapping):
        return Block(**b)
    return Block(*b)


def make_detection(
    shape: tuple[int, int] = (64, 64),
    epsg: int = 32645,
    blocks: Sequence[Block | Mapping[str, Any] | Sequence[Any]] = (),
    dates: Sequence[dt.date | str | np.datetime64] | None = None,
    *,
    resolution: float = 10.0,
    origin: tuple[float, float] = DEFAULT_ORIGIN,
    cloudy: Sequence[tuple[int, tuple[int, int], tuple[int, int]]] = (),
    clear: np.ndarray | None = None,
    background_score: float = 1.0,
    threshold: float = 6.0,
    method: str = "persistent-cva",
    site_id: str = "test-site",
) -> xr.Dataset:
    """A DETECTION dataset with the given change ``blocks`` planted on an empty background.

    Parameters
    ----------
    shape
        ``(rows, cols)`` in pixels.
    epsg
        CRS of the grid (a UTM zone, metres).
    blocks
        :class:`Block` objects, or tuples / mappings with the same fields
        (``(rows, cols, start[, score[, confidence]])``). Later blocks overwrite earlier ones.
    dates
        Acquisition dates (default: :func:`default_dates`, 12 dates 30 days apart).
    resolution
        Pixel size in metres.
    origin
        ``(x, y)`` of the grid's top-left corner, metres in ``epsg``.
    cloudy
        ``(time_index, (r0, r1), (c0, c1))`` rectangles that are *not* clear on that date.
    clear
        Full ``(time, y, x)`` bool clear mask; overrides ``cloudy``.
    background_score
        Score of unchanged pixels (their confidence is 0).
    threshold, method
        Written to the dataset attrs like the detector does.
    site_id
        Used in the synthetic ``scene_id`` values.

    Returns
    -------
    xarray.Dataset
        ``change``, ``score``, ``confidence``, ``break_index``, ``after_index``, ``clear_fraction`` on
        ``(y, x)``; ``clear`` on ``(time, y, x)``; coords ``time``, ``scene_id``, ``y``/``x`` (pixel centres)
        and the rioxarray CRS / transform.
    """
    h, w = shape
    if dates is None:
        dates = default_dates()
    times = pd.DatetimeIndex([pd.Timestamp(d) for d in dates]).normalize()
    nt = len(times)
    if clear is None:
        clear_arr = np.ones((nt, h, w), bool)
        for t, (r0, r1), (c0, c1) in cloudy:
            clear_arr[t, r0:r1, c0:c1] = False
    else:
        clear_arr = np.asarray(clear, bool)
        if clear_arr.shape != (nt, h, w):
            raise ConfigError(f"clear must have shape {(nt, h, w)} (dates, rows, cols), got {clear_arr.shape}")

    change = np.zeros((h, w), bool)
    score = np.full((h, w), background_score, np.float32)
    conf = np.zeros((h, w), np.float32)
    brk = np.full((h, w), -1, np.int16)
    aft = np.full((h, w), -1, np.int16)
    idx = np.arange(nt)[:, None, None]
    for raw in blocks:
        b = _as_block(raw)
        (r0, r1), (c0, c1) = b.rows, b.cols
        if not (0 <= b.start < nt):
            raise ConfigError(f"block start {b.start} is outside the {nt} dates (0 … {nt - 1})")
        cl = clear_arr[:, r0:r1, c0:c1]
        after_start = cl & (idx >= b.start)
        before_start = cl & (idx < b.start)
        has_break = after_start.any(axis=0)
        first = np.where(has_break, np.argmax(after_start, axis=0), -1)
        last = np.where(before_start.any(axis=0), nt - 1 - np.argmax(before_start[::-1], axis=0), -1)
        change[r0:r1, c0:c1] = has_break
        score[r0:r1, c0:c1] = np.where(has_break, b.score, background_score)
        conf[r0:r1, c0:c1] = np.where(has_break, b.confidence, 0.0)
        brk[r0:r1, c0:c1] = first
        aft[r0:r1, c0:c1] = np.where(has_break, last, -1)

    transform = Affine(resolution, 0.0, origin[0], 0.0, -resolution, origin[1])
    x = origin[0] + resolution * (np.arange(w) + 0.5)
    y = origin[1] - resolution * (np.arange(h) + 0.5)
    scene_ids = [f"TEST_MSIL2A_{t:%Y%m%d}T050000_N0400_{site_id}" for t in times]
    ds = xr.Dataset(
        {
            "change": (("y", "x"), change),
            "score": (("y", "x"), score),
            "confidence": (("y", "x"), conf),
            "break_index": (("y", "x"), brk),
            "after_index": (("y", "x"), aft),
            "clear_fraction": (("y", "x"), clear_arr.mean(axis=0).astype(np.float32)),
            "clear": (("time", "y", "x"), clear_arr),
        },
        coords={
            "time": times.values.astype("datetime64[ns]"),
            "y": y,
            "x": x,
            "scene_id": ("time", np.array(scene_ids, dtype=str)),
        },
        attrs={"threshold": float(threshold), "method": method},
    )
    ds = ds.rio.write_crs(epsg)
    return ds.rio.write_transform(transform)
