"""A generated Sentinel-2-sized granule pair for the benchmarks (kept under data/bench, git-ignored).

10980 × 10980 px at 10 m (B02 B03 B04 B08) and 5490 × 5490 px at 20 m (B11 B12), two dates, one
single-band GeoTIFF per band and date (uint16 L2A DN, 0 = no data), DEFLATE with horizontal predictor,
512 × 512 internal tiles, EPSG:32644 with the origin of a real granule corner. Texture: a patchwork of
fields (400-600 m), arid ground, towns, water and roads, each with smooth brightness variation and
per-pixel noise, so the files compress like real imagery (≈ 1.5-2×) rather than like flat colour. Between
the dates: signal-dependent noise (σ = 0.003 + 3 % of the reflectance) and a 1 % illumination change
everywhere, some fields change crop state (greening is
gated by the detector, harvest is not), and ~300 compounds of 1.5-25 ha are built (concrete + roofs).

Generated strip by strip (512 rows), so generating uses < 1 GB.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

__all__ = ["BANDS_10M", "BANDS_20M", "DATES", "SIZE", "generate", "band_paths", "make_mosaic_vrts"]

BANDS_10M = ("B02", "B03", "B04", "B08")
BANDS_20M = ("B11", "B12")
DATES = ("2022-06-03", "2023-06-08")
SIZE = 10980
EPSG = 32644
ORIGIN = (600000.0, 4900020.0)
BLOCK = 512
#: Spacing of the granule copies in the mosaic VRTs (10 m px): 10980 rounded up to whole 1024 px scan blocks
#: (2 file blocks; 20 m: half), so every mosaic window covers whole blocks of one copy (as on the granule)
#: and no stored block is decoded twice; the 284 px strips between copies hold no data.
PITCH_10M = -(-SIZE // (2 * BLOCK)) * 2 * BLOCK
VERSION = 5
_CELL = 48  # field lattice (pixels of 10 m)

# reflectance per class: arid, field soil, crop, town, water, road, concrete, roof
_SPEC = {
    "B02": (0.15, 0.09, 0.035, 0.14, 0.07, 0.10, 0.27, 0.24),
    "B03": (0.19, 0.11, 0.07, 0.15, 0.06, 0.11, 0.30, 0.23),
    "B04": (0.24, 0.13, 0.04, 0.17, 0.04, 0.12, 0.33, 0.20),
    "B08": (0.29, 0.18, 0.42, 0.21, 0.02, 0.15, 0.37, 0.22),
    "B11": (0.36, 0.24, 0.20, 0.24, 0.01, 0.17, 0.40, 0.20),
    "B12": (0.32, 0.20, 0.10, 0.22, 0.01, 0.16, 0.37, 0.17),
}
ARID, SOIL, CROP, TOWN, WATER, ROAD, CONCRETE, ROOF = range(8)


def band_paths(root: Path, date: str) -> dict[str, Path]:
    """``{band: path}`` of one date."""
    d = date.replace("-", "")
    return {b: root / d / f"T44TNP_{d}_{b}.tif" for b in (*BANDS_10M, *BANDS_20M)}


def _classes(seed: int) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int, int, int]]]:
    """Cell classes (before, after) on the field lattice and the compounds (r0, r1, c0, c1 in 10 m px)."""
    rng = np.random.default_rng(seed)
    n = SIZE // _CELL + 2
    u = rng.random((n, n))
    cls = np.where(u < 0.45, ARID, np.where(u < 0.70, SOIL, np.where(u < 0.88, CROP, np.where(u < 0.97, TOWN,
                                                                                         WATER))))
    after = cls.copy()
    flip = rng.random((n, n))
    after[(cls == SOIL) & (flip < 0.05)] = CROP  # greening (gated)
    after[(cls == CROP) & (flip < 0.02)] = SOIL  # harvest (a confuser the detector does flag)
    compounds = []
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(12, 50, 2))
        r0, c0 = (int(v) for v in rng.integers(0, SIZE - 60, 2))
        compounds.append((r0, r0 + h, c0, c0 + w))
    return cls.astype(np.uint8), after.astype(np.uint8), compounds


def _smooth(rng: np.random.Generator, shape: tuple[int, int], step: int) -> np.ndarray:
    """Smooth field: coarse noise bilinearly upsampled by ``step`` (float32, std ~1)."""
    ch, cw = shape[0] // step + 2, shape[1] // step + 2
    coarse = rng.standard_normal((ch, cw), dtype=np.float32)
    y = np.arange(shape[0], dtype=np.float32) / step
    x = np.arange(shape[1], dtype=np.float32) / step
    y0, x0 = y.astype(np.int32), x.astype(np.int32)
    fy, fx = (y - y0)[:, None], (x - x0)[None, :]
    a = coarse[y0][:, x0]
    b = coarse[y0][:, x0 + 1]
    c = coarse[y0 + 1][:, x0]
    d = coarse[y0 + 1][:, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def _strip(row0: int, rows: int, res_px: int, seed: int, cls: np.ndarray, compounds: list, date_i: int,
           bands: tuple[str, ...]) -> dict[str, np.ndarray]:
    """DN arrays of ``bands`` for rows ``row0 … row0+rows`` of a grid with ``res_px`` 10 m px per pixel."""
    n = SIZE // res_px
    r = (np.arange(row0, row0 + rows) * res_px)[:, None]
    c = (np.arange(n) * res_px)[None, :]
    k = cls[r // _CELL, c // _CELL]
    # roads along some lattice lines
    k = np.where(((r % (_CELL * 7)) < res_px * 2) | ((c % (_CELL * 9)) < res_px), ROAD, k)
    if date_i == 1:
        for r0, r1, c0, c1 in compounds:
            if r1 <= row0 * res_px or r0 >= (row0 + rows) * res_px:
                continue
            rr = slice(max(r0 // res_px - row0, 0), max(min(r1 // res_px - row0, rows), 0))
            cc = slice(c0 // res_px, c1 // res_px)
            blk = k[rr, cc]
            yy, xx = np.indices(blk.shape)
            k[rr, cc] = np.where((yy % 4 < 2) & (xx % 5 < 3), ROOF, CONCRETE)
    srng = np.random.default_rng([seed, row0, res_px])  # same texture on both dates
    tex = 1.0 + 0.08 * _smooth(srng, (rows, n), 64 // res_px) + 0.04 * _smooth(srng, (rows, n), 8 // res_px)
    tex += 0.03 * srng.standard_normal((rows, n), dtype=np.float32)
    nrng = np.random.default_rng([seed, row0, res_px, date_i + 10])
    gain = np.float32(1.0 if date_i == 0 else 1.01)
    out = {}
    for b in bands:
        spec = np.asarray(_SPEC[b], np.float32)
        refl = spec[k] * tex * gain
        refl += (np.float32(0.003) + np.float32(0.03) * refl) * nrng.standard_normal((rows, n), dtype=np.float32)
        out[b] = np.clip(refl * 10000, 1, 65535).astype(np.uint16)
    return out


def _profile(res: int) -> dict:
    n = SIZE * 10 // res
    return dict(driver="GTiff", width=n, height=n, count=1, dtype="uint16", nodata=0, crs=f"EPSG:{EPSG}",
                transform=Affine(res, 0, ORIGIN[0], 0, -res, ORIGIN[1]), tiled=True, blockxsize=BLOCK,
                blockysize=BLOCK, compress="deflate", predictor=2, num_threads="ALL_CPUS")


def generate(root: str | Path = "data/bench/s2", seed: int = 7, force: bool = False) -> Path:
    """Write the pair under ``root`` (skipped when a matching manifest is there); returns ``root``."""
    root = Path(root)
    manifest = root / "manifest.json"
    want = {"version": VERSION, "seed": seed, "size": SIZE, "dates": DATES}
    if not force and manifest.exists() and json.loads(manifest.read_text()).get("spec") == want:
        return root
    t0 = time.perf_counter()
    before, after, compounds = _classes(seed)
    for di, date in enumerate(DATES):
        paths = band_paths(root, date)
        paths[BANDS_10M[0]].parent.mkdir(parents=True, exist_ok=True)
        cls = before if di == 0 else after
        for res_px, bands in ((1, BANDS_10M), (2, BANDS_20M)):
            n = SIZE // res_px
            dsts = {b: rasterio.open(paths[b], "w", **_profile(10 * res_px)) for b in bands}
            try:
                for row0 in range(0, n, BLOCK):
                    rows = min(BLOCK, n - row0)
                    arrs = _strip(row0, rows, res_px, seed, cls, compounds, di, bands)
                    for b in bands:
                        dsts[b].write(arrs[b], 1, window=Window(0, row0, n, rows))
            finally:
                for d in dsts.values():
                    d.close()
    size = sum(p.stat().st_size for d in DATES for p in band_paths(root, d).values())
    manifest.write_text(json.dumps({"spec": want, "bytes": size, "seconds": round(time.perf_counter() - t0, 1),
                                    "n_compounds": len(compounds)}, indent=2) + "\n")
    return root


def make_mosaic_vrts(root: Path, out: Path, n: int = 2) -> dict[str, dict[str, Path]]:
    """``n × n`` mosaics of the same granule as VRTs (an ``n²`` times larger area reading the same files),
    copies :data:`PITCH_10M` apart.

    Returns ``{date: {band: vrt path}}``.
    """
    out.mkdir(parents=True, exist_ok=True)
    res_of = {b: 10 for b in BANDS_10M} | {b: 20 for b in BANDS_20M}
    result: dict[str, dict[str, Path]] = {}
    for date in DATES:
        result[date] = {}
        for b, src in band_paths(root, date).items():
            px = SIZE * 10 // res_of[b]
            pitch = PITCH_10M * 10 // res_of[b]
            sources = "".join(
                f'<SimpleSource><SourceFilename relativeToVRT="0">{src.resolve()}</SourceFilename>'
                f"<SourceBand>1</SourceBand>"
                f'<SrcRect xOff="0" yOff="0" xSize="{px}" ySize="{px}"/>'
                f'<DstRect xOff="{j * pitch}" yOff="{i * pitch}" xSize="{px}" ySize="{px}"/>'
                f"</SimpleSource>"
                for i in range(n) for j in range(n)
            )
            gt = f"{ORIGIN[0]}, {res_of[b]}, 0, {ORIGIN[1]}, 0, {-res_of[b]}"
            xml = (
                f'<VRTDataset rasterXSize="{pitch * (n - 1) + px}" rasterYSize="{pitch * (n - 1) + px}">'
                f"<SRS>EPSG:{EPSG}</SRS><GeoTransform>{gt}</GeoTransform>"
                f'<VRTRasterBand dataType="UInt16" band="1" blockXSize="{BLOCK}" blockYSize="{BLOCK}">'
                f"<NoDataValue>0</NoDataValue>{sources}</VRTRasterBand></VRTDataset>"
            )
            path = out / f"{date.replace('-', '')}_{b}.vrt"
            path.write_text(xml)
            result[date][b] = path
    return result
