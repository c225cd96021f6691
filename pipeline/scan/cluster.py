"""Dask scheduler handling: dask's local scheduler by default, or a ``dask.distributed`` cluster.

``params.yaml`` key (:class:`pipeline.config.DaskSettings`)::

    dask:
      scheduler: null      # address of a running dask.distributed scheduler, e.g. tcp://10.0.0.5:8786
      n_workers: null      # null: dask's local threaded scheduler; N: start a LocalCluster of N workers

Precedence: ``--scheduler ADDRESS`` on the command line > ``dask.scheduler`` > ``dask.n_workers`` > local.
Joining an existing cluster only opens (and at the end closes) a client: the cluster stays up. A
LocalCluster started here is closed when the context ends.

``distributed`` is imported only when a cluster is asked for, so the default path needs only ``dask``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pipeline.config import DaskSettings, Settings
from pipeline.errors import ConfigError

__all__ = ["DaskSettings", "dask_settings", "dask_client"]


def dask_settings(settings: Settings, scheduler: str | None = None) -> DaskSettings:
    """The :class:`DaskSettings` of a run: ``settings.dask``, overridden by ``scheduler`` (``--scheduler``)."""
    base = settings.dask
    if scheduler:
        try:
            base = DaskSettings(scheduler=scheduler, n_workers=base.n_workers,
                                threads_per_worker=base.threads_per_worker)
        except ValueError as err:
            raise ConfigError(f"--scheduler: {err}") from err
    return base


@contextmanager
def dask_client(
    cfg: DaskSettings | None = None, *, processes: bool = True, timeout_s: float = 30.0
) -> Iterator[Any]:
    """A ``distributed.Client`` for ``cfg`` while the context lasts, or ``None`` for dask's local scheduler.

    Parameters
    ----------
    cfg
        Where to run (default: local scheduler).
    processes
        For a LocalCluster: worker processes (True, parallel Python) or threads in this process (False).
    timeout_s
        Seconds to wait for an existing scheduler before giving up with a :class:`ConfigError`.
    """
    cfg = cfg or DaskSettings()
    if cfg.scheduler is None and cfg.n_workers is None:
        yield None
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError as err:  # pragma: no cover - distributed is installed with the project
        raise ConfigError(
            f"dask.distributed is needed for a scheduler or n_workers ({err}); pip install distributed"
        ) from err
    if cfg.scheduler is not None:
        try:
            client = Client(cfg.scheduler, timeout=timeout_s)
        except (OSError, TimeoutError) as err:
            raise ConfigError(
                f"cannot reach the dask scheduler at {cfg.scheduler} ({err}); is it running? "
                "Start one with `dask scheduler` or drop --scheduler to run locally"
            ) from err
        try:
            yield client
        finally:
            client.close()
        return
    cluster = LocalCluster(
        n_workers=cfg.n_workers, threads_per_worker=cfg.threads_per_worker, processes=processes,
        dashboard_address=None,
    )
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()
