"""Block-wise scan of a scene pair on disk (pipeline.scan.pair_files.scan_pair_files): 10 m and 20 m band files,
a new roof across four block seams, the same flags whatever the block size."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from affine import Affine

from pipeline.config import Settings
from pipeline.scan.pair_files import BlockPlan, scan_pair_files
from pipeline.scan.seams import SCAN_COLUMNS
from tests.conftest import ROOF, SOIL, write_tif

EPSG = 32644
X0, Y0 = 500_000.0, 4_800_000.0
N = 192  # 10 m pixels a side
# planted roofs (rows, cols) on the 10 m grid, even edges so 20 m pixels are whole: one across the block
# corner (64, 64) of 64 px blocks, one inside a block
ROOFS = [(slice(50, 90), slice(40, 80)), (slice(140, 160), slice(130, 170))]


def _write_pair(root: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    rng = np.random.default_rng(7)
    paths: dict[str, dict[str, Path]] = {"before": {}, "after": {}}
    for band, soil in SOIL.items():
        coarse = band in ("B11", "B12")
        n, res = (N // 2, 20.0) if coarse else (N, 10.0)
        f = 2 if coarse else 1
        base = soil * (1 + 0.03 * rng.standard_normal((n, n)))
        for date in ("before", "after"):
            refl = base * (1 + 0.01 * rng.standard_normal((n, n)))
            if date == "after":
                for r, c in ROOFS:
                    refl[r.start // f:r.stop // f, c.start // f:c.stop // f] = ROOF[band]
            dn = np.clip(np.round(refl * 10000), 1, 65535).astype(np.uint16)
            dn[:4, :4] = 0  # a corner without data
            paths[date][band] = write_tif(root / date / f"{band}.tif", dn, EPSG,
                                          Affine(res, 0, X0, 0, -res, Y0), nodata=0)
    return paths["before"], paths["after"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], dict[str, Path]]:
    return _write_pair(tmp_path_factory.mktemp("pair"))


def _scan(pair: tuple[dict[str, Path], dict[str, Path]], tile_px: int, threads: int = 2) -> gpd.GeoDataFrame:
    before, after = pair
    return scan_pair_files(before, after, Settings(), dates=("2019-06-01", "2021-06-01"),
                           scene_ids=("S2_before", "S2_after"), plan=BlockPlan(tile_px=tile_px, threads=threads))


def test_roofs_are_flagged_once_with_their_area_across_block_seams(pair: tuple) -> None:
    flags = _scan(pair, tile_px=64)
    assert list(flags.columns) == list(SCAN_COLUMNS)
    assert flags.crs.to_epsg() == 4326
    assert len(flags) == 2
    big = flags.sort_values("area_m2", ascending=False).iloc[0]
    # 40 × 40 px of 10 m; the bilinear enlargement of the 20 m bands may add at most a 1 px ring
    assert 40 * 40 * 100.0 <= big["area_m2"] <= 42 * 42 * 100.0
    assert big["n_tiles"] == 4  # it crosses the corner of four 64 px blocks
    small = flags.sort_values("area_m2").iloc[0]
    assert 20 * 40 * 100.0 <= small["area_m2"] <= 22 * 42 * 100.0
    assert small["n_tiles"] == 1
    assert set(flags["appeared_after"]) == {"2019-06-01"}
    assert set(flags["appeared_before"]) == {"2021-06-01"}
    assert set(flags["pre_scenes"]) == {"S2_before"} and set(flags["post_scenes"]) == {"S2_after"}
    assert (flags["cloud_fraction"] == 0).all()
    # the outline is where the roof is: centroid of the big roof at rows 50-90, cols 40-80 (UTM 44N)
    c = flags.to_crs(EPSG).sort_values("area_m2").geometry.iloc[-1].centroid
    assert (c.x, c.y) == pytest.approx((X0 + 60 * 10.0, Y0 - 70 * 10.0))


def test_block_size_and_threads_do_not_change_the_flags(pair: tuple) -> None:
    a = _scan(pair, tile_px=64, threads=2)
    b = _scan(pair, tile_px=256, threads=1)  # one block: no seams at all
    assert list(a["area_m2"]) == list(b["area_m2"])
    assert list(a["flag_id"]) == list(b["flag_id"])
    # the same outlines (seam vertices aside): symmetric difference under 1 m² in UTM
    for ga, gb in zip(a.to_crs(EPSG).geometry, b.to_crs(EPSG).geometry):
        assert ga.symmetric_difference(gb).area < 1.0
    assert list(b["n_tiles"]) == [1, 1]


def test_sample_windows_inside_blocks_are_cut_from_the_block_reads(pair: tuple, monkeypatch) -> None:
    from pipeline.scan import pair_files

    before, after = pair
    kw = {"dates": ("2019-06-01", "2021-06-01"), "plan": BlockPlan(sample_px=32, sample_every=2, tile_px=64)}
    seen: list[int] = []
    from pipeline.detect.chunked import PairStats

    real = PairStats.from_samples.__func__
    monkeypatch.setattr(PairStats, "from_samples",
                        classmethod(lambda cls, m, s: seen.append(m.size) or real(cls, m, s)))
    hosted = scan_pair_files(before, after, Settings(), **kw)  # 32 px windows inside 64 px blocks
    monkeypatch.setattr(pair_files, "_sample_windows", lambda samples, *a: ({}, samples))
    alone = scan_pair_files(before, after, Settings(), **kw)  # the same windows, each read on its own
    # every 2nd window from the 2nd (all with data, past the empty corner): 9 of 32 × 32 px, both ways
    assert seen == [9 * 32 * 32] * 2
    assert len(hosted) == len(alone) == 2
    assert list(hosted["area_m2"]) == list(alone["area_m2"])
    assert list(hosted["flag_id"]) == list(alone["flag_id"])


def test_sample_window_hosts() -> None:
    from pipeline.grid import GridSpec
    from pipeline.scan.pair_files import _sample_windows
    from pipeline.scan.tiling import tiles_for_grid

    grid = GridSpec(epsg=EPSG, transform=(10.0, 0.0, X0, 0.0, -10.0, Y0), shape=(100, 70))
    samples = [t for t in tiles_for_grid(grid, 20) if t.index in {(0, 0), (1, 1), (4, 3), (2, 1)}]
    hosted, loose = _sample_windows(samples, 20, 40, grid.shape)
    # 20 px windows on 40 px blocks: (1, 1) sits in block (0, 0) at rows/cols 20-40; (4, 3) is the
    # clipped corner window (rows 80-100, cols 60-70) in block (2, 1); (2, 1) in block (1, 0)
    assert hosted == {(0, 0): [(slice(0, 20), slice(0, 20)), (slice(20, 40), slice(20, 40))],
                      (2, 1): [(slice(0, 20), slice(20, 30))],
                      (1, 0): [(slice(0, 20), slice(20, 40))]}
    assert loose == []
    hosted, loose = _sample_windows(samples, 20, 30, grid.shape)  # 30 px blocks: only (0, 0) is inside one
    assert [t.index for t in loose] == [(1, 1), (2, 1), (4, 3)]
    assert hosted == {(0, 0): [(slice(0, 20), slice(0, 20))]}


def test_scenes_without_common_data_fail_with_one_clear_error(tmp_path: Path, pair: tuple) -> None:
    from pipeline.errors import DetectionError

    before, _ = pair
    empty = {b: write_tif(tmp_path / f"{b}.tif", np.zeros((N // (2 if b in ("B11", "B12") else 1),) * 2,
                                                           np.uint16), EPSG,
                          Affine(20.0 if b in ("B11", "B12") else 10.0, 0, X0, 0,
                                 -(20.0 if b in ("B11", "B12") else 10.0), Y0), nodata=0) for b in before}
    with pytest.raises(DetectionError, match="overlap"):
        scan_pair_files(before, empty, Settings(), plan=BlockPlan(tile_px=128))


def test_block_plan_rejects_bad_values() -> None:
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="tile_px must be >= 1"):
        BlockPlan(tile_px=0)
    with pytest.raises(ConfigError, match="trim_every must be >= 0"):
        BlockPlan(trim_every=-1)
    assert BlockPlan().tile_px == 1024 and BlockPlan(threads=1).threads == 1


def test_compare_blockwise_reaches_the_block_scans(pair: tuple, tmp_path: Path, monkeypatch) -> None:
    """``compoundwatch compare --blockwise BEFORE/ AFTER/`` on 6-band folders is the spatial model's block
    scan (the 4-band model: the best cross-validated one these bands fit); with ``detect.pair_method: cva`` it is
    scan_pair_files. Folders above the in-memory limit take the block scan without ``--blockwise``."""
    from typer.testing import CliRunner

    import pipeline.compare
    from pipeline.cli import app
    from pipeline.scan.learned import scan_pair_files_unet

    before, after = pair
    monkeypatch.chdir(tmp_path)  # no params.yaml here: the built-in defaults, as Settings()
    folders = [str(before["B02"].parent), str(after["B02"].parent)]
    out = tmp_path / "flags.geojson"
    res = CliRunner().invoke(app, ["compare", *folders, "--out", str(out), "--blockwise"])
    assert res.exit_code == 0, res.output
    direct = scan_pair_files_unet(before, after, Settings(), "s2-4", site_id="compare")
    got = gpd.read_file(out)
    assert len(got) == len(direct) >= 2
    assert list(got["flag_id"]) == list(direct["flag_id"])
    assert list(got["area_m2"]) == list(direct["area_m2"])
    assert set(got["method"]) == {"pair-unet-s2-4"}
    assert f"{len(direct)} flag(s)" in res.output

    (tmp_path / "cva.yaml").write_text("detect:\n  pair_method: cva\n")
    res = CliRunner().invoke(app, ["compare", *folders, "--out", str(out), "--blockwise",
                                   "--params", str(tmp_path / "cva.yaml")])
    assert res.exit_code == 0, res.output
    cva = scan_pair_files(before, after, Settings(), site_id="compare")
    got = gpd.read_file(out)
    assert len(got) == len(cva) == 2
    assert list(got["flag_id"]) == list(cva["flag_id"])

    res = CliRunner().invoke(app, ["compare", *folders, "--out", str(out), "--blockwise",
                                   "--change-raster", str(tmp_path / "c.tif")])
    assert res.exit_code == 1
    assert "--change-raster is not written with --blockwise" in res.output

    assert pipeline.compare.too_large_for_memory(*folders) is None  # 192 x 192 px: held in memory
    monkeypatch.setattr(pipeline.compare, "IN_MEMORY_MAX_PX", 10_000)
    assert pipeline.compare.too_large_for_memory(*folders) == N * N
    assert pipeline.compare.too_large_for_memory(before["B02"], after["B02"]) is None  # files: not folders
    out.unlink()
    res = CliRunner().invoke(app, ["compare", *folders, "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "0.0 Mpx: more than compare holds in memory (0 Mpx); screening the band folders block by block" \
        in res.output
    assert list(gpd.read_file(out)["flag_id"]) == list(direct["flag_id"])
    res = CliRunner().invoke(app, ["compare", *folders, "--out", str(out), "--change-raster",
                                   str(tmp_path / "c.tif")])
    assert res.exit_code == 1 and "writes no change raster; drop --change-raster" in res.output
    assert not (tmp_path / "c.tif").exists()


def test_geographic_files_are_refused(tmp_path: Path) -> None:
    from pipeline.errors import InputFileError

    scene = {b: write_tif(tmp_path / f"{b}.tif", np.full((16, 16), 1000, np.uint16), 4326,
                          Affine(1e-4, 0, 88.0, 0, -1e-4, 43.0), nodata=0) for b in ("B02", "B03", "B04", "B08")}
    with pytest.raises(InputFileError, match="geographic EPSG:4326"):
        scan_pair_files(scene, scene, Settings())
