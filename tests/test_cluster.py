"""The dask.distributed path (pipeline.scan.cluster): a real in-process scheduler and workers run a site."""

from __future__ import annotations

from pathlib import Path

import distributed
import numpy as np
import pytest
from shapely.geometry import box

from pipeline.config import Settings
from pipeline.errors import ConfigError
from pipeline.scan.aoi import scan
from pipeline.scan.cluster import DaskSettings, dask_client, dask_settings

AOI = box(81.300, 43.900, 81.310, 43.905)
KW = dict(tile_px=96, overlap_px=16)


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as c:
        yield c


def test_scan_on_a_running_cluster_equals_the_local_run(cluster, tmp_path: Path) -> None:
    local = scan(AOI, Settings(), resume_dir=tmp_path / "local", **KW)
    remote = scan(AOI, Settings(), scheduler=cluster.scheduler_address, resume_dir=tmp_path / "remote", **KW)
    cols = ["flag_id", "area_m2", "confidence", "rank"]
    assert len(remote) == len(local) > 0
    assert remote[cols].equals(local[cols])
    # the cluster did the work: its workers ran the tile tasks
    with distributed.Client(cluster.scheduler_address) as client:
        log = client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.task_prefixes))
    assert any(p.startswith("scan-tile") for p in log)


def test_chunked_site_detection_runs_through_the_cluster(cluster) -> None:
    """A site's dask-chunked detection computed by the distributed scheduler equals the in-memory one."""
    from pipeline.detect import detect_series
    from pipeline.fetch import FetchRequest
    from pipeline.fetch.synthetic import SyntheticFetcher
    from pipeline.grid import grid_for_geometry
    from pipeline.preprocess import preprocess_cube

    settings = Settings()
    grid = grid_for_geometry(box(81.30, 43.90, 81.3155, 43.9112))
    req = FetchRequest("cluster-site", grid, settings.fetch.start, settings.fetch.end, settings.fetch.bands)
    scenes = preprocess_cube(SyntheticFetcher().fetch(req), settings.preprocess)
    expected = detect_series(scenes["reflectance"], scenes["clear"], settings.detect)
    with distributed.Client(cluster.scheduler_address) as client:
        seen = client.run_on_scheduler(lambda dask_scheduler: set(dask_scheduler.task_prefixes))
        det = detect_series(scenes["reflectance"].chunk({"y": 64, "x": 64}),
                            scenes["clear"].chunk({"y": 64, "x": 64}), settings.detect)
        now = client.run_on_scheduler(lambda dask_scheduler: set(dask_scheduler.task_prefixes))
    assert now - seen  # the chunked per-pixel pass ran as tasks on the cluster
    assert expected["change"].values.any()
    np.testing.assert_array_equal(det["change"].values, expected["change"].values)
    assert det.attrs["threshold"] == pytest.approx(expected.attrs["threshold"])


def test_settings_and_local_default() -> None:
    assert dask_settings(Settings()) == DaskSettings()
    assert dask_settings(Settings(), "tcp://127.0.0.1:8786").scheduler == "tcp://127.0.0.1:8786"
    with pytest.raises(ConfigError):
        dask_settings(Settings(), "nonsense")
    with dask_client(DaskSettings()) as client:
        assert client is None  # dask's local scheduler, no cluster
    with pytest.raises(ConfigError, match="cannot reach"):
        with dask_client(DaskSettings(scheduler="tcp://127.0.0.1:1"), timeout_s=1):
            pass
