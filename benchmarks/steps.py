"""One measured benchmark step per process: ``python -m benchmarks.steps STEP [ARGS]`` prints one JSON line.

Each step runs in its own process so its peak RSS (``ru_maxrss``: everything the process held at its
worst moment, Python and libraries included) is its own. ``seconds`` is the wall time of the work only
(imports and the one-off load of the compiled kernels from numba's cache excluded, reported as
``import_and_kernel_load_seconds``). GDAL's block cache is capped with ``GDAL_CACHEMAX`` (set by
:mod:`benchmarks.run`) for every step alike.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks.data import BANDS_10M, BANDS_20M, DATES, band_paths


def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux


def _files(root: Path, vrt: Path | None = None) -> tuple[dict, dict]:
    if vrt is not None:
        d = {date: {b: vrt / f"{date.replace('-', '')}_{b}.vrt" for b in (*BANDS_10M, *BANDS_20M)}
             for date in DATES}
        return d[DATES[0]], d[DATES[1]]
    return band_paths(root, DATES[0]), band_paths(root, DATES[1])


def floor(root: Path, threads: int = 2) -> dict:
    """Fastest plain read of all 12 files: threads over (file, block-row window) or over whole files."""
    import rasterio
    from rasterio.windows import Window

    paths = [str(p) for d in DATES for p in band_paths(root, d).values()]

    def whole(p: str) -> int:
        with rasterio.open(p) as src:
            return int(src.read(1).shape[0])

    def rows(job: tuple[str, int]) -> int:
        p, r = job
        with rasterio.open(p) as src:
            h = min(512, src.height - r)
            return int(src.read(1, window=Window(0, r, src.width, h)).shape[0])

    jobs = []
    for p in paths:
        with rasterio.open(p) as src:
            jobs += [(p, r) for r in range(0, src.height, 512)]
    times = {}
    with ThreadPoolExecutor(threads) as pool:
        t = time.perf_counter()
        list(pool.map(whole, paths))
        times["per_file"] = time.perf_counter() - t
        t = time.perf_counter()
        list(pool.map(rows, jobs))
        times["per_block_row"] = time.perf_counter() - t
    t = time.perf_counter()
    for p in paths:
        whole(p)
    times["single_thread"] = time.perf_counter() - t
    best = min(times["per_file"], times["per_block_row"])
    return {"seconds": best, "strategies": times, "peak_rss_gib": _rss_gib()}


def _load_kernels() -> float:
    """Import the lazily imported modules and load the compiled kernels from numba's disk cache (once per
    process, like an import: not part of the timing of ``ours`` and ``naive``); returns the seconds taken."""
    t = time.perf_counter()
    from affine import Affine

    from pipeline.detect._kernels import upsample2_kernel
    from pipeline.detect.chunked import PairStats, pair_magnitude, score_magnitude
    from pipeline.flag._blobs import label_blobs, trace

    tiny = np.ones((6, 4, 4), np.float32)
    mag = pair_magnitude(tiny, tiny, ["B02", "B03", "B04", "B08", "B11", "B12"], 0.1)
    score_magnitude(*mag, PairStats(0.0, 1.0, 1.0, 16))
    upsample2_kernel(np.ones((2, 2), np.uint16), np.empty((4, 4), np.float32))
    trace(label_blobs(np.ones((2, 2), bool)).labels == 1, Affine.identity())
    return time.perf_counter() - t


def ours(root: Path, out: Path, vrt: Path | None = None, threads: int = 2, tile_px: int = 1024) -> dict:
    """The pipeline: files → block-wise two-date detection → flags merged across seams → GeoJSON."""
    load_s = _load_kernels()
    from pipeline.config import Settings
    from pipeline.publish.geojson import write_geojson
    from pipeline.scan.pair_files import BlockPlan, scan_pair_files

    before, after = _files(root, vrt)
    t = time.perf_counter()
    flags = scan_pair_files(before, after, Settings(), dates=DATES, scene_ids=("T44TNP_" + DATES[0],
                            "T44TNP_" + DATES[1]), plan=BlockPlan(tile_px=tile_px, threads=threads),
                            site_id="bench")
    write_geojson(flags, out)
    secs = time.perf_counter() - t
    return {"seconds": secs, "n_flags": len(flags), "area_m2": float(flags["area_m2"].sum()),
            "peak_rss_gib": _rss_gib(), "import_and_kernel_load_seconds": load_s}


def learned(root: Path, out: Path) -> dict:
    """The spatial model block by block, as ``compare`` runs it on the granule's 6 bands: the best
    cross-validated model they cover (:func:`pipeline.detect.unet.choose_band_set`), files → model per
    block with the model's halo → flags merged across seams → GeoJSON."""
    load_s = _load_kernels()
    from pipeline.config import Settings
    from pipeline.detect.unet import choose_band_set, load_unet
    from pipeline.publish.geojson import write_geojson
    from pipeline.scan.learned import scan_pair_files_unet

    band_set = choose_band_set([*BANDS_10M, *BANDS_20M])
    assert band_set is not None
    load_unet(band_set)  # onnxruntime session: loaded once, like the kernels
    before, after = _files(root)
    t = time.perf_counter()
    flags = scan_pair_files_unet(before, after, Settings(), band_set, dates=DATES,
                                 scene_ids=("T44TNP_" + DATES[0], "T44TNP_" + DATES[1]), site_id="bench")
    write_geojson(flags, out)
    secs = time.perf_counter() - t
    return {"seconds": secs, "n_flags": len(flags), "area_m2": float(flags["area_m2"].sum()),
            "band_set": band_set, "peak_rss_gib": _rss_gib(), "import_and_kernel_load_seconds": load_s}


def naive(root: Path, out: Path) -> dict:
    """Reference: both dates fully loaded into numpy in one process, the same detector on the whole scene
    (global median/MAD/Otsu over every pixel, exactly as detect_pair), vectorise on the whole grid."""
    import rasterio
    import xarray as xr
    from rasterio.enums import Resampling

    from pipeline.config import Settings
    from pipeline.detect.chunked import PairStats, detect_pair_block, pair_magnitude
    from pipeline.detect.pair import METHOD
    from pipeline.flag import to_wgs84, vectorise
    from pipeline.grid import GridSpec
    from pipeline.publish.geojson import write_geojson

    load_s = _load_kernels()
    settings = Settings()
    bands = [*BANDS_10M, *BANDS_20M]
    t = time.perf_counter()
    scenes = []
    for date in DATES:
        paths = band_paths(root, date)
        with rasterio.open(paths["B02"]) as ref:
            shape, transform, epsg = (ref.height, ref.width), ref.transform, ref.crs.to_epsg()
        stack = np.empty((len(bands), *shape), np.float32)
        for i, b in enumerate(bands):
            with rasterio.open(paths[b]) as src:
                dn = src.read(1, out_shape=shape, resampling=Resampling.bilinear)
            stack[i] = dn
            stack[i][dn == 0] = np.nan
            stack[i] /= 10000.0
            del dn
        scenes.append(stack)
    t_read = time.perf_counter() - t
    mag, valid, _ = pair_magnitude(scenes[0], scenes[1], bands, settings.detect.max_ndvi_gain)
    stats = PairStats.from_samples(mag[valid], settings.detect)
    del mag, valid
    res = detect_pair_block(scenes[0], scenes[1], bands, stats, settings.detect)
    del scenes
    grid = GridSpec(epsg=epsg, transform=tuple(transform)[:6], shape=shape)
    y, x = grid.coords()
    change, valid = res["change"], res["valid"]
    det = xr.Dataset(
        {"change": (("y", "x"), change), "score": (("y", "x"), res["score"]),
         "confidence": (("y", "x"), res["confidence"]),
         "break_index": (("y", "x"), np.where(change, 1, -1).astype(np.int16)),
         "after_index": (("y", "x"), np.where(change, 0, -1).astype(np.int16)),
         "clear_fraction": (("y", "x"), valid.astype(np.float32)),
         "clear": (("time", "y", "x"), np.broadcast_to(valid, (2, *valid.shape)))},
        coords={"time": np.array(DATES, dtype="datetime64[ns]"),
                "scene_id": ("time", ["T44TNP_" + d for d in DATES]), "y": y, "x": x},
        attrs={"threshold": stats.threshold, "method": METHOD},
    ).rio.write_crs(epsg)
    flags = to_wgs84(vectorise(det, site_id="bench", settings=settings))
    write_geojson(flags, out)
    secs = time.perf_counter() - t
    return {"seconds": secs, "read_seconds": t_read, "n_flags": len(flags),
            "area_m2": float(flags["area_m2"].sum()), "threshold": stats.threshold, "peak_rss_gib": _rss_gib(),
            "import_and_kernel_load_seconds": load_s}


def sites(n_workers: int, n_sites: int = 20, tile_px: int = 128) -> dict:
    """``n_sites`` synthetic sites (tile_px + 2×16 px, 38 dates) on a LocalCluster of ``n_workers``
    single-threaded worker processes: wall time of the whole batch (cluster already started)."""
    from distributed import Client, LocalCluster, wait
    from shapely.geometry import box

    from pipeline.config import Settings
    from pipeline.scan.aoi import process_tile
    from pipeline.scan.tiling import tiles_for_aoi

    settings = Settings()
    tiles = tiles_for_aoi(box(81.30, 43.90, 81.40, 43.95), tile_px=tile_px, overlap_px=16)[:n_sites]
    assert len(tiles) == n_sites
    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        client.run(lambda: __import__("pipeline.scan.aoi"))  # imports are not part of the timing
        warm = client.map(process_tile, tiles[:n_workers], settings=settings, site_id="warm", pure=False)
        wait(warm)
        t = time.perf_counter()
        futures = client.map(process_tile, tiles, settings=settings, site_id="bench", pure=False)
        results = client.gather(futures)
        secs = time.perf_counter() - t
    return {"seconds": secs, "n_sites": n_sites, "n_pieces": int(sum(len(r) for r in results))}


def main(argv: list[str]) -> None:
    step, *args = argv
    if step == "floor":
        res = floor(Path(args[0]))
    elif step == "ours":
        res = ours(Path(args[0]), Path(args[1]), Path(args[2]) if len(args) > 2 and args[2] else None)
    elif step == "naive":
        res = naive(Path(args[0]), Path(args[1]))
    elif step == "learned":
        res = learned(Path(args[0]), Path(args[1]))
    elif step == "sites":
        res = sites(int(args[0]))
    else:
        raise SystemExit(f"unknown step {step}")
    print("RESULT " + json.dumps(res))


if __name__ == "__main__":
    main(sys.argv[1:])
