"""Resumable per-scene cache of downloaded bands, keyed by site, grid, source, date and band.

Layout (one folder per acquisition date, one ``.npy`` per band; all on the request's UTM grid)::

    {root}/{site_id}/{grid_key}/{source_key}/{YYYY-MM-DD}/meta.json      scene id, boa_add_offset, skipped …
                                                      /B04.npy, SCL.npy …  uint16 DN / uint8 SCL, (y, x)

``grid_key`` encodes EPSG, pixel size and a hash of transform + shape; ``source_key`` the source and its
query (collection, service URL). Every file is written to a temporary name and renamed, so an interrupted
fetch leaves only complete files and the next run fetches just what is missing. A changed band list
fetches only the new bands of cached dates; a changed date range only the new dates.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pipeline._files import atomic_path
from pipeline.errors import FetchError
from pipeline.grid import GridSpec

LOGGER = logging.getLogger(__name__)

__all__ = ["SceneCache", "grid_key", "source_key", "SCL_KEY"]

SCL_KEY = "SCL"


def _hash(obj: Any, n: int = 12) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:n]


def grid_key(grid: GridSpec) -> str:
    """``epsg32645_10m_<hash>``: the grid's CRS, pixel size (m) and a hash of transform + shape."""
    res = f"{grid.resolution:g}".replace(".", "p")
    return f"epsg{grid.epsg}_{res}m_{_hash([list(grid.transform), list(grid.shape)], 10)}"


def source_key(source: str, query: Mapping[str, Any]) -> str:
    """``<source>_<hash>`` of the source's query (never pass credentials here)."""
    return f"{source}_{_hash(dict(query), 10)}"


def _atomic_write(path: Path, write: Any) -> None:
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        write(fh)


class SceneCache:
    """Bands of scenes on disk for one (site, grid, source) combination.

    Parameters
    ----------
    root
        Cache root folder (created on first write).
    site_id, grid, source, query
        The key; ``query`` is any JSON-able mapping describing the source (no secrets).
    """

    def __init__(self, root: str | Path, site_id: str, grid: GridSpec, source: str, query: Mapping[str, Any]) -> None:
        self.grid = grid
        self.dir = Path(root) / site_id / grid_key(grid) / source_key(source, query)

    def __repr__(self) -> str:
        return f"SceneCache({str(self.dir)!r})"

    def _date_dir(self, date: dt.date) -> Path:
        return self.dir / date.isoformat()

    # -- queries --------------------------------------------------------------------------------------
    def meta(self, date: dt.date) -> dict[str, Any] | None:
        """The stored metadata of ``date`` (``None`` if the date was never fetched, or its metadata file is
        corrupt: then it is removed, with a warning, and the date is fetched again)."""
        p = self._date_dir(date) / "meta.json"
        if not p.is_file():
            return None
        try:
            meta = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            meta = None
            reason = str(err)
        else:
            reason = "not a JSON object"
        if not isinstance(meta, dict):
            LOGGER.warning("cached scene metadata %s is corrupt (%s); fetching that date again", p, reason)
            p.unlink(missing_ok=True)
            return None
        return meta

    def has(self, date: dt.date, band: str) -> bool:
        """Whether ``band`` (or ``"SCL"``) of ``date`` is on disk, complete and on the cache's grid.

        A corrupt file (truncated, overwritten, another shape) is removed with a warning, so the band is
        fetched again.
        """
        p = self._date_dir(date) / f"{band}.npy"
        if not p.is_file():
            return False
        try:
            arr = np.load(p, mmap_mode="r", allow_pickle=False)
            problem = "" if arr.shape == self.grid.shape else f"shape {arr.shape}, expected {self.grid.shape}"
        except (ValueError, OSError, EOFError) as err:
            problem = f"{type(err).__name__}: {err}"
        if problem:
            LOGGER.warning("cached band %s is corrupt (%s); fetching it again", p, problem)
            p.unlink(missing_ok=True)
            return False
        return True

    def missing(self, date: dt.date, bands: Iterable[str]) -> tuple[str, ...]:
        """The bands (and ``SCL``) of ``date`` still to fetch; empty for a date recorded as skipped."""
        meta = self.meta(date)
        if meta is None:  # never fetched, cut short before its metadata, or corrupt: fetch it whole
            return (*bands, SCL_KEY)
        if meta.get("skipped"):
            return ()
        return tuple(b for b in (*bands, SCL_KEY) if not self.has(date, b))

    def dates(self) -> list[dt.date]:
        """Dates with metadata on disk, sorted."""
        if not self.dir.is_dir():
            return []
        return sorted(dt.date.fromisoformat(p.name) for p in self.dir.iterdir() if (p / "meta.json").is_file())

    # -- I/O ------------------------------------------------------------------------------------------
    def put(self, date: dt.date, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        """Store band arrays ``(y, x)`` of ``date`` (on the cache's grid), then its metadata (last: a date
        counts as cached only once its metadata is written)."""
        shape = self.grid.shape
        for band, arr in arrays.items():
            if arr.shape != shape:
                raise FetchError(
                    f"the service returned band {band} of {date} with shape {arr.shape}, not the requested grid's "
                    f"{shape}; nothing was cached for that date, run again (report it if it persists)"
                )
            _atomic_write(self._date_dir(date) / f"{band}.npy", lambda fh, a=arr: np.save(fh, a, allow_pickle=False))
        old = self.meta(date) or {}
        merged = {**old, **dict(meta), "date": date.isoformat()}
        blob = json.dumps(merged, sort_keys=True, indent=1, default=str).encode()
        _atomic_write(self._date_dir(date) / "meta.json", lambda fh: fh.write(blob))

    def get(self, date: dt.date, band: str) -> np.ndarray:
        """One stored band ``(y, x)``."""
        return np.load(self._date_dir(date) / f"{band}.npy", allow_pickle=False)
