"""One pair of scenes on disk (e.g. two Sentinel-2 granules) screened block by block: memory flat with area.

:func:`scan_pair_files` is the wide-area scan's idea (:mod:`pipeline.scan.aoi`) for two dates given as
single-band files: block-aligned windowed reads, the CVA chain of ``compoundwatch compare``
(:func:`pipeline.detect.pair.detect_pair_cva`: CVA + robust z + Otsu + vegetation gate) run block by block
(:mod:`pipeline.detect.chunked`) with its three global numbers (magnitude median, MAD, Otsu threshold)
estimated on a fixed budget of sample windows cut from the blocks' own reads, each block's flags kept as
plain rows (:func:`pipeline.flag.flag_rows`, no GeoDataFrame per block) and merged across block seams at the
end (:func:`pipeline.scan.seams.merge_flags`). Its memory does not grow with the scene size.

It is how a user screens two whole granules: ``compoundwatch compare BEFORE/ AFTER/ --blockwise`` (folders
of ``*_Bxx`` band files), and what ``make bench`` measures. How the work is cut and scheduled is one frozen
:class:`BlockPlan`; reading is one :class:`_PairReader` (per-thread dataset handles and buffers) and one
:class:`_PairScan` per call (the block steps sharing the statistics).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd

from pipeline.config import DetectSettings, Settings
from pipeline.detect.chunked import PairStats, detect_pair_block, pair_magnitude, score_magnitude
from pipeline.detect.pair import METHOD, MIN_BANDS
from pipeline.errors import ConfigError, InputFileError
from pipeline.flag import FLAG_COLUMNS, FlagLayers, flag_rows, flags_frame
from pipeline.grid import GridSpec
from pipeline.scan._memory import trim_heap
from pipeline.scan.seams import clip_rows_to_core, merge_flags
from pipeline.scan.tiling import TileSpec, tiles_for_grid

__all__ = ["BlockPlan", "scan_pair_files"]

_DN_SCALE = 1 / 10000.0  # blocks hold DN as read (0 = no data): reflectance = DN × this


@dataclass(frozen=True)
class BlockPlan:
    """How :func:`scan_pair_files` cuts and schedules the work (pixels of the finest grid, 10 m for S2).

    ``tile_px``: processing block edge; a multiple of the files' block size decodes every stored block once.
    ``threads``: blocks processed at the same time (GDAL decoding and numpy release the GIL).
    ``sample_every``, ``sample_px``, ``max_sample_blocks``: the global statistics come from every
    ``sample_every``-th window of ``sample_px`` pixels along rows and columns (1/``sample_every``² of the
    scene), at most ``max_sample_blocks`` windows spread evenly over it (a fixed budget, so this costs the
    same time and memory on a granule or a mosaic of four); they estimate the magnitude median/MAD and the
    Otsu threshold, so they shape the flags. The blocks holding these windows are read first and the windows
    cut from those reads (no block is decoded twice); a window across a block seam is read on its own.
    ``trim_every``: every this many blocks, freed heap memory goes back to the OS
    (:func:`pipeline.scan._memory.trim_heap`; 0 = never): on a 4x mosaic this cut peak memory from 1.22 to
    1.09 GiB for ~3 % more CPU.
    """

    tile_px: int = 1024
    threads: int = 2
    sample_every: int = 8
    sample_px: int = 512
    max_sample_blocks: int = 9
    trim_every: int = 16

    def __post_init__(self) -> None:
        for name in ("tile_px", "threads", "sample_every", "sample_px", "max_sample_blocks"):
            if getattr(self, name) < 1:
                raise ConfigError(f"BlockPlan.{name} must be >= 1, got {getattr(self, name)}")
        if self.trim_every < 0:
            raise ConfigError(f"BlockPlan.trim_every must be >= 0 (0 = never), got {self.trim_every}")


class _Buffers(threading.local):
    """One set of open rasterio datasets (handles are not thread-safe) and read buffers per thread."""

    def __init__(self) -> None:
        self.handles: dict[str, Any] = {}
        self.buffers: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = {}
        self.coarse: dict[tuple[int, int], np.ndarray] = {}  # native-resolution reads before enlarging


def _grid_of(path: str | Path) -> GridSpec:
    import rasterio

    with rasterio.open(path) as src:
        epsg = src.crs.to_epsg() if src.crs is not None else None
        if epsg is None:
            raise InputFileError(f"{path} has no EPSG CRS; scan_pair_files needs projected (UTM) files")
        if src.crs.is_geographic:  # pixel areas would be in square degrees: no flag would pass min_area_m2
            raise InputFileError(f"{path} is in geographic EPSG:{epsg}; the block-wise scan needs projected (UTM) "
                                 "files (reproject them, or compare without --blockwise)")
        return GridSpec(epsg=epsg, transform=tuple(src.transform)[:6], shape=(src.height, src.width))


def _read_window(local: _Buffers, path: str, bounds: tuple[float, float, float, float],
                 out: np.ndarray) -> np.ndarray:
    """Band 1 of ``path`` over ``bounds`` (metres) into ``out`` (float32 DN on the window's grid, 0 = no data).

    A band twice as coarse whose window is whole source pixels is read at its own resolution and enlarged
    here (bilinear, pixel edges aligned, edge pixels extended; no-data spreads to every pixel it touches),
    so only the blocks under the window are decoded and files and VRTs give the same values; other
    windows fall back to GDAL's bilinear resampling.
    """
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.windows import Window, from_bounds

    from pipeline.detect._kernels import upsample2_kernel

    src = local.handles.get(path)
    if src is None:
        src = local.handles[path] = rasterio.open(path)
    tr = src.transform
    if tr.b == 0 and tr.d == 0:  # north-up: the window is plain arithmetic (from_bounds costs ~0.4 ms a call)
        left, bottom, right, top = bounds
        win = Window((left - tr.c) / tr.a, (top - tr.f) / tr.e, (right - left) / tr.a, (bottom - top) / tr.e)
    else:
        win = from_bounds(*bounds, transform=tr)
    h, w = win.height, win.width
    whole = all(abs(v - round(v)) < 1e-6 for v in (win.row_off, win.col_off, h, w))
    fy, fx = out.shape[0] / h, out.shape[1] / w
    if whole and abs(fy - 1) < 1e-9 and abs(fx - 1) < 1e-9:
        src.read(1, window=win.round_offsets().round_lengths(), out=out)
    elif whole and abs(fy - 2) < 1e-9 and abs(fx - 2) < 1e-9:
        shape = (out.shape[0] // 2, out.shape[1] // 2)
        raw = local.coarse.get(shape)
        if raw is None:  # reused read after read, like the block buffers (no page faults per read)
            if len(local.coarse) > 4:
                local.coarse.clear()
            raw = local.coarse[shape] = np.empty(shape, src.dtypes[0])
        upsample2_kernel(src.read(1, window=win.round_offsets().round_lengths(), out=raw), out)
    else:
        src.read(1, window=win, out=out, resampling=Resampling.bilinear)
    return out


class _PairReader:
    """Reads one block of both dates, every band, as float32 DN into buffers reused block after block.

    Each thread has its own dataset handles and one pair of buffers (``_Buffers``): fresh 50 MB arrays per
    block cost page faults (kernel time) on every block; a block's inputs are dropped before its thread
    loads again. float32, because GDAL converts while decoding and the kernel is ~2x faster on it than on
    uint16. Call :meth:`load` inside a ``rasterio.Env``.
    """

    def __init__(self, before: Mapping[str, str | Path], after: Mapping[str, str | Path],
                 bands: list[str]) -> None:
        self.bands = bands
        self._paths = [(str(before[b]), str(after[b])) for b in bands]
        self._local = _Buffers()

    def load(self, g: GridSpec) -> tuple[np.ndarray, np.ndarray]:
        """``(before, after)``: ``(band, y, x)`` float32 DN over ``g`` (0 = no data)."""
        shape = (len(self.bands), *g.shape)
        bufs = self._local.buffers.get(shape)
        if bufs is None:
            self._local.buffers.clear()  # at most one size per thread (edge blocks are smaller)
            bufs = self._local.buffers[shape] = (np.empty(shape, np.float32), np.empty(shape, np.float32))
        bv, av = bufs
        for i, (b_path, a_path) in enumerate(self._paths):
            _read_window(self._local, b_path, g.bounds, bv[i])
            _read_window(self._local, a_path, g.bounds, av[i])
        return bv, av


def _sample_windows(
    samples: list[TileSpec], sample_px: int, tile_px: int, shape: tuple[int, int]
) -> tuple[dict[tuple[int, int], list[tuple[slice, slice]]], list[TileSpec]]:
    """Sample windows (tiles of ``sample_px`` of a grid of ``shape``) that lie inside one processing block
    (tiles of ``tile_px``, no overlap): ``{block index: [(rows, cols) slices in the block]}``, and the rest."""
    hosted: dict[tuple[int, int], list[tuple[slice, slice]]] = {}
    loose = []
    for s in samples:
        r0, c0 = s.index[0] * sample_px, s.index[1] * sample_px
        r1, c1 = min(r0 + sample_px, shape[0]), min(c0 + sample_px, shape[1])
        i, j = r0 // tile_px, c0 // tile_px
        if (r1 - 1) // tile_px == i and (c1 - 1) // tile_px == j:
            hosted.setdefault((i, j), []).append(
                (slice(r0 - i * tile_px, r1 - i * tile_px), slice(c0 - j * tile_px, c1 - j * tile_px)))
        else:
            loose.append(s)
    return hosted, loose


def _sample_tiles(grid: GridSpec, plan: BlockPlan) -> list[TileSpec]:
    """The statistics' sample windows: a regular subsample, at most ``plan.max_sample_blocks`` of them."""
    every, px = plan.sample_every, plan.sample_px
    tiles = [t for t in tiles_for_grid(grid, px)
             if t.index[0] % every == every // 2 and t.index[1] % every == every // 2] or tiles_for_grid(grid, px)[:1]
    if len(tiles) > plan.max_sample_blocks:  # a fixed budget: memory must not grow with the area
        pick = np.linspace(0, len(tiles) - 1, plan.max_sample_blocks).round().astype(int)
        tiles = [tiles[i] for i in pick]
    return tiles


#: :func:`pipeline.detect.chunked.pair_magnitude`'s output for one block: magnitude, valid, greened.
_Magnitude = tuple[np.ndarray, np.ndarray, np.ndarray]


class _PairScan:
    """The block steps of one :func:`scan_pair_files` call, sharing the reader and the global statistics.

    ``stats`` is set once the sample windows are in; blocks read their inputs meanwhile and wait for it
    (``stats.result()`` raises in every block when the statistics failed).
    """

    def __init__(self, reader: _PairReader, settings: Settings, hosted: dict[tuple[int, int],
                 list[tuple[slice, slice]]], dates: list[str], scene_ids: tuple[str, str], site_id: str) -> None:
        self.reader, self.settings, self.hosted = reader, settings, hosted
        self.dates, self.scene_ids, self.site_id = dates, scene_ids, site_id
        self.stats: Future[PairStats] = Future()

    @property
    def _detect(self) -> DetectSettings:
        return self.settings.detect

    def _magnitude(self, t: TileSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        import rasterio

        with rasterio.Env():
            bv, av = self.reader.load(t.grid)
        return pair_magnitude(bv, av, self.reader.bands, self._detect.max_ndvi_gain, scale=_DN_SCALE,
                              zero_is_nodata=True)

    def sample(self, t: TileSpec) -> np.ndarray:
        """A sample window read on its own: the magnitudes of its valid pixels."""
        mag, valid, _ = self._magnitude(t)
        return mag[valid]

    def host(self, t: TileSpec) -> tuple[list[np.ndarray], _Magnitude]:
        """A block holding sample windows: their valid magnitudes now, the block's magnitude kept to score."""
        mag, valid, greened = self._magnitude(t)
        return [mag[w][valid[w]] for w in self.hosted[t.index]], (mag, valid, greened)

    def block(self, t: TileSpec, magnitude: _Magnitude | None = None) -> list[dict[str, Any]]:
        """Flag rows of one block (clipped to its core); ``magnitude``: kept by :meth:`host`, else read."""
        import rasterio

        with rasterio.Env():  # one GDAL environment per block, not one per read and per traced blob
            if magnitude is not None:
                return self._flag(t, score_magnitude(*magnitude, self.stats.result()))
            bv, av = self.reader.load(t.grid)
            stats = self.stats.result()  # raises here too when the statistics failed
            return self._flag(t, detect_pair_block(bv, av, self.reader.bands, stats, self._detect, scale=_DN_SCALE,
                                                   zero_is_nodata=True))

    def _flag(self, t: TileSpec, out: dict[str, np.ndarray]) -> list[dict[str, Any]]:
        change, valid = out["change"], out["valid"]  # flag_rows returns [] at once when nothing changed
        layers = FlagLayers(
            change, out["score"], out["confidence"],
            break_index=np.broadcast_to(np.int16(1), change.shape),  # a pair: every change broke at AFTER
            after_index=np.broadcast_to(np.int16(0), change.shape),  # … and was last unchanged at BEFORE
            clear_fraction=valid, clear=np.broadcast_to(valid, (2, *valid.shape)),
            dates=self.dates, scene_ids=self.scene_ids, method=METHOD,
        )
        found = flag_rows(layers, t.grid.affine, site_id=self.site_id, settings=self.settings, tile=True)
        return clip_rows_to_core(found, t)


def scan_pair_files(
    before: Mapping[str, str | Path],
    after: Mapping[str, str | Path],
    settings: Settings,
    *,
    dates: tuple[str, str] = ("NaT", "NaT"),
    scene_ids: tuple[str, str] = ("before", "after"),
    plan: BlockPlan = BlockPlan(),
    site_id: str = "compare",
    progress: Callable[[int, int], None] | None = None,
) -> gpd.GeoDataFrame:
    """Two-date change flags between two scenes given as single-band files, block by block.

    Parameters
    ----------
    before, after
        ``{band name: path}`` of single-band GeoTIFFs (L2A DN, 0 = no data; 10/20/60 m, same UTM CRS); at
        least B02, B03, B04, B08. Coarser bands are bilinearly upsampled onto the finest grid window by
        window (see :func:`_read_window`).
    settings
        ``detect`` (threshold / min_score, max_ndvi_gain) and ``flag`` (min_area_m2, simplify_m).
    dates, scene_ids
        ISO dates and ids of BEFORE and AFTER (written to the flags).
    plan
        Block size, threads, statistics sample and heap trimming (:class:`BlockPlan`).
    site_id
        ``site_id`` of the flags (hashed into their ids).
    progress
        Called with ``(done, total)`` after every block.

    Returns
    -------
    geopandas.GeoDataFrame
        Ranked flags in EPSG:4326 (columns :data:`pipeline.scan.seams.SCAN_COLUMNS`).
    """
    bands = [b for b in before if b in after]
    missing = [b for b in MIN_BANDS if b not in bands]
    if missing:
        raise InputFileError(f"both scenes need bands {list(MIN_BANDS)}; missing: {missing}")
    grids = {b: _grid_of(before[b]) for b in bands}
    grid = grids[min(bands, key=lambda b: grids[b].resolution)]  # the finest grid

    tiles = tiles_for_grid(grid, plan.tile_px)
    hosted, loose = _sample_windows(_sample_tiles(grid, plan), plan.sample_px, plan.tile_px, grid.shape)
    hosts = [t for t in tiles if t.index in hosted]
    others = [t for t in tiles if t.index not in hosted]
    iso = list(pd.DatetimeIndex(np.array(dates, dtype="datetime64[ns]")).strftime("%Y-%m-%d"))  # as vectorise
    columns = (*FLAG_COLUMNS[:-1], "tile_id", "epsg", "geometry")
    job = _PairScan(_PairReader(before, after, bands), settings, hosted, iso, scene_ids, site_id)

    rows: list[dict[str, Any]] = []
    with ThreadPoolExecutor(max_workers=plan.threads) as pool:
        hosting = [pool.submit(job.host, t) for t in hosts]
        alone = [pool.submit(job.sample, t) for t in loose]
        queued = pool.map(job.block, others)  # the first of these are read while the statistics are computed
        try:
            try:
                hosted_out = [f.result() for f in hosting]
                samples = [m for ms, _ in hosted_out for m in ms] + [f.result() for f in alone]
                job.stats.set_result(PairStats.from_samples(np.concatenate(samples), settings.detect))
            except BaseException as err:
                job.stats.set_exception(err)
                raise
            later = [pool.submit(job.block, t, mag) for t, (_, mag) in zip(hosts, hosted_out)]  # scored now
            del hosted_out, samples
            done = (f.result() for f in later)
            for i, block_rows in enumerate(itertools.chain(queued, done), start=1):
                rows += block_rows
                if plan.trim_every and i % plan.trim_every == 0:  # peak memory flat with the area
                    trim_heap()
                if progress is not None:
                    progress(i, len(tiles))
        except BaseException:  # bad statistics, a failed block, Ctrl-C in progress: drop the queued blocks
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return merge_flags([flags_frame(rows, grid.epsg, columns)], site_id=site_id, settings=settings)
