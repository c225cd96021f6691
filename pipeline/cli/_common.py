"""Shared pieces of the command line: consoles, option types, the project layout and per-site progress.

The paths of the pipeline are declared once, in ``dvc.yaml`` (``vars: paths``); :class:`Layout` reads them
from there so ``compoundwatch fetch`` and ``dvc repro`` write the same files.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from pipeline.config import DEFAULT_PARAMS, Settings, load_settings
from pipeline.errors import ConfigError, InputFileError

__all__ = [
    "progress_bars",
    "console",
    "err_console",
    "Layout",
    "ParamsOpt",
    "SitesArg",
    "settings_for",
    "pick_sites",
    "SiteBar",
    "site_progress",
    "DVC_FILE",
    "check_out_path",
    "LogProgress",
    "LineBar",
]

#: stdout / stderr consoles (they look up sys.stdout / sys.stderr when printing, so test runners see them).
#: Long lines are not broken (soft wrap): a log line stays one line; tables still fit the width.
console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

DVC_FILE = "dvc.yaml"
_PATH_KEYS = ("raw", "truth", "tiles", "detect", "flags", "out", "eval", "metrics")

ParamsOpt = Annotated[
    Path,
    typer.Option(
        "--params",
        "-p",
        help="Parameters file (YAML; sections fetch, tile, preprocess, detect, flag, evaluate).",
        show_default=True,
    ),
]
SitesArg = Annotated[
    list[str] | None,
    typer.Argument(
        help="Site ids from sites_file (see params.yaml). Default: every site listed under `sites`.",
        show_default=False,
    ),
]


@dataclass(frozen=True)
class Layout:
    """Where each stage reads and writes, relative to the project root (from ``dvc.yaml`` ``vars: paths``)."""

    root: Path
    raw: Path
    truth: Path
    tiles: Path
    detect: Path
    flags: Path
    out: Path
    eval: Path
    metrics: Path

    @classmethod
    def load(cls, root: str | Path = ".") -> Layout:
        """Read the paths from ``<root>/dvc.yaml``."""
        root = Path(root)
        path = root / DVC_FILE
        if not path.is_file():
            raise InputFileError(
                f"{path} not found; run compoundwatch from the project root (the folder with dvc.yaml)"
            )
        try:
            doc = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path} is not valid YAML ({err})") from err
        paths: dict[str, Any] = {}
        for entry in doc.get("vars", []) or []:
            if isinstance(entry, dict) and isinstance(entry.get("paths"), dict):
                paths.update(entry["paths"])
        missing = [k for k in _PATH_KEYS if not isinstance(paths.get(k), str)]
        if missing:
            raise ConfigError(
                f"{path}: vars.paths lacks {', '.join(missing)}; restore dvc.yaml from the repository"
            )
        return cls(root=root, **{k: root / paths[k] for k in _PATH_KEYS})

    # per-site files, named as in dvc.yaml
    def raw_cube(self, site_id: str) -> Path:
        return self.raw / f"{site_id}.zarr"

    def truth_file(self, site_id: str) -> Path:
        return self.truth / f"{site_id}.geojson"

    def tile_cube(self, site_id: str) -> Path:
        return self.tiles / f"{site_id}.zarr"

    def detect_cube(self, site_id: str) -> Path:
        return self.detect / f"{site_id}.zarr"

    def flags_file(self, site_id: str) -> Path:
        return self.flags / f"{site_id}.geojson"

    @property
    def pr_curve(self) -> Path:
        return self.eval / "pr_curve.csv"

    @property
    def merged_flags(self) -> Path:
        from pipeline.stages.publish import MERGED_NAME

        return self.out / MERGED_NAME

    def published_site(self, site_id: str) -> Path:
        from pipeline.stages.publish import SITES_DIR

        return self.out / SITES_DIR / f"{site_id}.geojson"


def settings_for(params: Path = DEFAULT_PARAMS) -> Settings:
    """Validated settings from ``params`` (errors name the file and the bad key)."""
    return load_settings(params)


def pick_sites(settings: Settings, sites: Sequence[str] | None) -> list[str]:
    """``sites`` if given (checked against ``sites_file``), else ``settings.sites``."""
    from pipeline.sites import load_sites

    known = [s.site_id for s in load_sites(settings.sites_file)]
    chosen = list(sites) if sites else list(settings.sites)
    if not chosen:
        raise ConfigError("no sites given and `sites` in the parameters is empty; name a site id")
    unknown = [s for s in chosen if s not in known]
    if unknown:
        raise ConfigError(
            f"unknown site(s) {', '.join(unknown)}; {settings.sites_file} has: {', '.join(known)}"
        )
    return chosen


class SiteBar:
    """Handle of :func:`site_progress`: ``bar.working(site)`` before a site, ``bar(site)`` when it is done."""

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self._progress, self._task = progress, task

    def working(self, site_id: str) -> None:
        self._progress.update(self._task, site=f"{site_id} …")

    def __call__(self, site_id: str) -> None:
        self._progress.update(self._task, advance=1, site=site_id)


class LogProgress(Progress):
    """A :class:`rich.progress.Progress` for output that is not a terminal (cron, CI, a log file): it draws no
    bar, and prints one plain timestamped line each time a task's count moves (``description done/total
    field``), so long work says what it does as it goes."""

    def __init__(self, field: str) -> None:
        super().__init__(console=console, disable=True)
        self._field = field
        self._shown: dict[TaskID, float] = {}
        self._t0 = time.monotonic()

    def _log(self, task_id: TaskID) -> None:
        with self._lock:
            task = self._tasks[task_id]
        if self._shown.get(task_id) == task.completed:
            return
        self._shown[task_id] = task.completed
        total = f"/{task.total:g}" if task.total is not None else ""
        extra = task.fields.get(self._field, "")
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        console.print(f"{stamp} [{time.monotonic() - self._t0:7.1f} s] {task.description} {task.completed:g}{total}"
                      f"{' ' + str(extra) if extra else ''}", markup=False, highlight=False, soft_wrap=True)

    def update(self, task_id: TaskID, *, total: float | None = None, completed: float | None = None,
               advance: float | None = None, description: str | None = None, visible: bool | None = None,
               refresh: bool = False, **fields: Any) -> None:
        super().update(task_id, total=total, completed=completed, advance=advance, description=description,
                       visible=visible, refresh=refresh, **fields)
        self._log(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._log(task_id)


def progress_bars(field: str, label_width: int = 0) -> Progress:
    """The commands' rich progress display: spinner, task description (padded to ``label_width``), bar,
    done/total, elapsed time and the task's ``field`` (e.g. the site or city at work). Without a terminal:
    :class:`LogProgress` (one plain line per step)."""
    if not console.is_terminal:
        return LogProgress(field)
    label = f"[bold]{{task.description:<{label_width}}}" if label_width else "[bold]{task.description}"
    return Progress(SpinnerColumn(), TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn(f"{{task.fields[{field}]}}"), console=console, transient=False)


class LineBar(SiteBar):
    """:class:`SiteBar` without a terminal (cron, CI, a log file): one plain timestamped line per event."""

    def __init__(self, label: str, total: int) -> None:
        self._label, self._total, self._done = label, total, 0
        self._started = time.monotonic()

    def _line(self, text: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        console.print(f"{stamp} {self._label} [{time.monotonic() - self._started:7.1f} s] {text}", markup=False,
                      highlight=False, soft_wrap=True)

    def working(self, site_id: str) -> None:
        self._line(f"{self._done}/{self._total} done, working on {site_id}")

    def __call__(self, site_id: str) -> None:
        self._done += 1
        self._line(f"{self._done}/{self._total} done: {site_id}")


@contextmanager
def site_progress(label: str, total: int) -> Iterator[SiteBar]:
    """A rich progress bar over ``total`` sites (plain lines when stdout is not a terminal); the handle is also
    a ``progress`` callback for ``run()``."""
    if not console.is_terminal:
        yield LineBar(label, total)
        return
    with progress_bars("site") as progress:
        yield SiteBar(progress, progress.add_task(label, total=total, site=""))


def check_out_path(path: Path, option: str, inputs: Sequence[tuple[str, Path]] = ()) -> None:
    """Refuse, before any work, an output path that cannot be written as a file: a folder, one whose folder
    is missing or is a file, or one of the command's ``inputs`` (``(label, path)``, never overwritten)."""
    if path.is_dir():
        raise ConfigError(f"{option} {path} is a folder; give a file name, e.g. {path / 'flags.geojson'}")
    parent = path.parent
    for up in (parent, *parent.parents):
        if up.exists():
            if not up.is_dir():
                raise ConfigError(f"{option} {path}: {up} is a file, not a folder; choose another path")
            break
    if not parent.exists():
        raise ConfigError(f"{option} {path}: the folder {parent} does not exist; create it first "
                          f"(mkdir -p {parent}) or fix the path")
    resolved = path.resolve()
    for label, other in inputs:
        if resolved == other.resolve():
            raise ConfigError(f"{option} {path} is the {label} scene; choose another file for the output")
