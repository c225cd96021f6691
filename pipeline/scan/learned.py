"""The spatial change model over two scenes on disk, block by block (a full granule in flat memory).

Blocks of ``tile_px`` pixels are read with a halo of ``halo`` pixels (larger than the network's receptive
field), each date is normalised with percentiles estimated once from a fixed budget of sample windows
spread over the scene, the model runs on the block (:func:`pipeline.detect.unet.unet_probability`), and the
block's flags are vectorised and clipped to its core; flags across block seams are merged once at the
end. Memory depends on the block size, not on the scene.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd

from pipeline.config import Settings
from pipeline.detect.threshold import probability_confidence
from pipeline.detect.unet import load_unet, unet_probability
from pipeline.detect.unet_input import NormStats, percentile_stats
from pipeline.errors import ConfigError, InputFileError
from pipeline.scan.tiling import TileSpec, tiles_for_grid

__all__ = ["scan_pair_files_unet", "SAMPLE_PX", "MAX_SAMPLE_WINDOWS"]

SAMPLE_PX = 512  # edge of a statistics window (pixels)
GDAL_CACHE_MB = 256  # GDAL's block cache (halos re-read neighbouring file blocks; the default is 5 % of RAM)
MAX_SAMPLE_WINDOWS = 9  # statistics windows per scene, spread evenly (a fixed budget whatever the area)


def scan_pair_files_unet(
    before: Mapping[str, str | Path],
    after: Mapping[str, str | Path],
    settings: Settings,
    band_set: str,
    *,
    dates: tuple[str, str] = ("NaT", "NaT"),
    scene_ids: tuple[str, str] = ("before", "after"),
    tile_px: int = 1024,
    halo: int | None = None,
    site_id: str = "compare",
    progress: Callable[[int, int], None] | None = None,
) -> gpd.GeoDataFrame:
    """Flags of the spatial model of ``band_set`` between two scenes given as single-band files.

    ``before``/``after``: ``{band: path}`` (DN, 0 = no data, same UTM CRS, 10 m finest grid); the model's
    bands must be present. ``tile_px`` and ``halo`` are multiples of the model's pooling factor; ``halo``
    defaults to the model's (above its receptive-field radius, so blocks need no blending). Each block runs
    the network once, on the block with its halo. Returns the ranked flags in EPSG:4326 (as
    :func:`pipeline.scan.pair_files.scan_pair_files`).
    """
    import rasterio

    from pipeline.flag import FLAG_COLUMNS, FlagLayers, flag_rows, flags_frame
    from pipeline.scan._memory import trim_heap
    from pipeline.scan.pair_files import _grid_of, _PairReader
    from pipeline.scan.seams import clip_rows_to_core, merge_flags

    model = load_unet(band_set)
    halo = model.halo if halo is None else halo
    m = model.multiple
    if tile_px % m or halo % m:
        raise ConfigError(f"tile_px ({tile_px}) and halo ({halo}) must be multiples of {m} pixels "
                             f"for the {band_set} model")
    bands = list(model.bands)
    missing = [b for b in bands if b not in before or b not in after]
    if missing:
        raise InputFileError(f"the {band_set} model needs bands {bands}; missing in a scene: {missing}")
    grids = {b: _grid_of(before[b]) for b in bands}
    grid = grids[min(bands, key=lambda b: grids[b].resolution)]
    reader = _PairReader(before, after, bands)
    method = f"pair-unet-{band_set}"

    def load(t: TileSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # the thread's reused buffers
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
            bv, av = reader.load(t.grid)
        valid = np.asarray((bv > 0).all(0) & (av > 0).all(0))
        return bv, av, valid

    # normalisation: per-band percentiles of each date over a fixed budget of windows spread evenly
    windows = tiles_for_grid(grid, SAMPLE_PX)
    pick = np.linspace(0, len(windows) - 1, min(MAX_SAMPLE_WINDOWS, len(windows))).round().astype(int)
    samples_b, samples_a = [], []
    for i in pick:
        bv, av, valid = load(windows[int(i)])
        samples_b.append(bv[:, valid].copy())  # copies: the buffers are reused by the next read
        samples_a.append(av[:, valid].copy())
    sb, sa = np.concatenate(samples_b, 1), np.concatenate(samples_a, 1)
    if sb.shape[1] < 100:
        raise InputFileError("fewer than 100 sampled pixels have data in both scenes; do they overlap?")
    stats: tuple[NormStats, NormStats] = (percentile_stats(sb[:, None, :]), percentile_stats(sa[:, None, :]))
    del samples_b, samples_a, sb, sa

    iso = list(pd.DatetimeIndex(np.array(dates, dtype="datetime64[ns]")).strftime("%Y-%m-%d"))
    columns = (*FLAG_COLUMNS[:-1], "tile_id", "epsg", "geometry")
    thr = model.threshold
    tiles = tiles_for_grid(grid, tile_px, overlap_px=halo)
    one_model_run = threading.Lock()

    def block(t: TileSpec) -> list[dict]:
        bv, av, valid = load(t)
        if not valid.any():
            return []
        with one_model_run:  # reads overlap, model runs do not: onnxruntime uses both cores within a run
            side = -(-max(valid.shape) // m) * m  # one window: the block read with its halo
            prob = unet_probability(model, bv, av, valid, stats=stats, block=side, halo=0)
        change = (prob >= thr) & valid
        if not change.any():
            return []
        layers = FlagLayers(
            change, prob, probability_confidence(prob, thr),
            break_index=np.broadcast_to(np.int16(1), change.shape),
            after_index=np.broadcast_to(np.int16(0), change.shape),
            clear_fraction=valid, clear=np.broadcast_to(valid, (2, *valid.shape)),
            dates=iso, scene_ids=scene_ids, method=method,
        )
        with rasterio.Env():
            found = flag_rows(layers, t.grid.affine, site_id=site_id, settings=settings, tile=True)
        return clip_rows_to_core(found, t)

    rows: list[dict] = []
    with ThreadPoolExecutor(max_workers=2) as pool:  # one block is read while another runs the model
        for i, block_rows in enumerate(pool.map(block, tiles), start=1):
            rows += block_rows
            trim_heap()  # freed block buffers go back to the OS: memory stays flat with the area
            if progress is not None:
                progress(i, len(tiles))
    return merge_flags([flags_frame(rows, grid.epsg, columns)], site_id=site_id, settings=settings)
