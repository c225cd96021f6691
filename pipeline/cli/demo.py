"""``compoundwatch demo`` and ``compoundwatch run``: the whole pipeline through ``dvc repro``, then a summary.

DVC decides what to (re)run from ``dvc.yaml``/``dvc.lock``; these commands stream its output, show the stage
being run and finish with a per-site table (flags, added area, precision/recall from ``metrics.json``).
DVC runs with this interpreter's ``bin`` folder first on ``PATH``, so ``python`` in the stage commands is
the one compoundwatch is installed in.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from pipeline._files import atomic_path
from pipeline.cli._common import DVC_FILE, Layout, console, err_console
from pipeline.cli._project import clear_stale_dvc_locks, project_lock
from pipeline.config import DEFAULT_PARAMS, load_settings
from pipeline.errors import CompoundwatchError, ConfigError, InputFileError
from pipeline.sites import load_sites

__all__ = ["repro", "summary_table", "demo", "run", "register"]

_RUNNING = re.compile(r"^Running stage '(?P<stage>[^']+)'")
_SKIPPED = re.compile(r"^Stage '(?P<stage>[^']+)' didn't change, skipping")
_ERROR = re.compile(r"^ERROR: (?P<msg>.+)")
# the one line a stage prints for an expected error (pipeline.stages.stage_main)
_STAGE_ERROR = re.compile(r"^error: python -m pipeline\.stages\.\w+: (?P<msg>.+)")

ProjectOpt = Annotated[
    Path,
    typer.Option("--project-dir", "-C", help="Project root: the folder with dvc.yaml, params.yaml and .dvc/.",
                 file_okay=False),
]
VerboseOpt = Annotated[
    bool, typer.Option("--verbose", "-v", help="Also print every line DVC and the stages write.")
]


def _check_project(project: Path) -> None:
    if not (project / DVC_FILE).is_file():
        raise InputFileError(
            f"{project.resolve()} has no {DVC_FILE}; run from the compoundwatch project root or pass -C"
        )
    if not (project / ".dvc").is_dir():
        raise InputFileError(
            f"{project.resolve()} is not a DVC project (no .dvc/ folder); restore it with "
            "`git checkout .dvc` or create it with `dvc init`"
        )


def _dvc_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def repro(project: Path, *, force: bool = False, verbose: bool = False) -> list[str]:
    """Run ``dvc repro`` in ``project``, showing the stage being run; return the stages that ran.

    Raises
    ------
    CompoundwatchError
        When DVC exits with an error (the message carries DVC's ``ERROR:`` line).
    """
    _check_project(project)
    cmd = [sys.executable, "-m", "dvc", "repro", *(["--force"] if force else [])]
    ran: list[str] = []
    skipped = 0
    tail: deque[str] = deque(maxlen=25)
    error = ""
    stage_error = ""
    current: str | None = None
    started = time.monotonic()

    def finish(ok: bool) -> None:
        if current is not None:
            mark = "[green]✓[/]" if ok else "[red]✗[/]"
            console.print(f"{mark} {current} [dim]({time.monotonic() - started:.1f} s)[/]")

    with console.status("[bold]dvc repro[/]: checking what changed …") as status:
        with subprocess.Popen(  # the with closes the pipe (no ResourceWarning) and waits
            cmd, cwd=project, env=_dvc_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, bufsize=1,
        ) as proc:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.rstrip()
                if verbose and line:
                    console.print(Text(line, style="dim"))
                if m := _RUNNING.match(line):
                    finish(True)
                    current, started = m["stage"], time.monotonic()
                    ran.append(current)
                    if not console.is_terminal and not verbose:  # a log: say what runs, not only what finished
                        console.print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} running {current} …", markup=False,
                                      highlight=False)
                    status.update(f"[bold]dvc repro[/]: running [cyan]{current}[/] ({len(ran)} so far) …")
                elif _SKIPPED.match(line):
                    skipped += 1
                else:
                    if m := _ERROR.match(line):
                        error = m["msg"]
                    elif m := _STAGE_ERROR.match(line):
                        stage_error = m["msg"]
                    if line:
                        tail.append(line)
            rc = proc.wait()
    finish(rc == 0)
    if rc != 0:
        if stage_error:  # a stage stopped on bad input or a failing service: its own line says it all
            raise CompoundwatchError(f"stage {current or '?'} failed: {stage_error}")
        if "Unable to acquire lock" in error:  # a live DVC process (not a compoundwatch run) holds the project
            raise CompoundwatchError(
                f"another DVC process is working in {project.resolve()} (DVC: {error.split('.')[0]}); wait for it "
                "to finish and run again (locks of killed processes are cleared by compoundwatch run itself)"
            )
        if not verbose:
            for line in tail:
                err_console.print(Text(line, style="dim"))
        raise CompoundwatchError(f"dvc repro failed (exit {rc}): {error or 'see the output above'}")
    if not ran:
        console.print(f"[green]✓[/] everything is up to date ({skipped} stage(s) unchanged)")
    else:
        console.print(f"[green]✓[/] ran {len(ran)} stage(s), {skipped} unchanged")
    return ran


def _layer_stats(path: Path) -> tuple[int, float]:
    if not path.is_file():
        return 0, 0.0
    feats = json.loads(path.read_text()).get("features", [])
    return len(feats), float(sum((f.get("properties") or {}).get("area_m2") or 0.0 for f in feats))


def _pct(v: Any) -> str:
    return f"{100 * v:.0f} %" if isinstance(v, (int, float)) else "—"


def summary_table(project: Path, params: Path) -> Table:
    """Per-site flags, added area (m²) and object precision/recall of the last run."""
    layout = Layout.load(project)
    settings = load_settings(params)
    metrics: dict[str, Any] = {}
    if layout.metrics.is_file():
        metrics = json.loads(layout.metrics.read_text())
    per_site = metrics.get("per_site", {})
    table = Table(title="compoundwatch: flags per site", title_justify="left")
    table.add_column("site")
    table.add_column("flags", justify="right")
    table.add_column("area added (m²)", justify="right")
    table.add_column("precision", justify="right")
    table.add_column("recall", justify="right")
    n_total, area_total = 0, 0.0
    for site_id in settings.sites:
        n, area = _layer_stats(layout.published_site(site_id))
        n_total, area_total = n_total + n, area_total + area
        m = per_site.get(site_id, {})
        control = bool(m.get("control"))
        name = f"{site_id} [dim](control)[/]" if control else site_id
        flags = f"[red]{n}[/]" if control and n else str(n)
        recall = "—" if control or not m.get("n_truth") else _pct(m.get("object_recall"))
        # without truth (real imagery) precision is not measurable; on control sites every flag is false
        scored = n and (control or m.get("n_truth"))
        table.add_row(name, flags, f"{area:,.0f}", _pct(m.get("object_precision")) if scored else "—", recall)
    table.add_section()
    has_truth = any(m.get("n_truth") for m in per_site.values())
    table.add_row("[bold]all sites[/]", f"[bold]{n_total}[/]", f"[bold]{area_total:,.0f}[/]",
                  _pct(metrics.get("object_precision")) if has_truth else "—",
                  _pct(metrics.get("object_recall")) if has_truth else "—")
    if metrics and not has_truth:
        table.caption = "no ground truth for these sites: flags are candidates to review, not scored"
    elif "pixel_f1" in metrics:
        table.caption = (f"pixel F1 {metrics['pixel_f1']:.2f} (non-control sites) · "
                         f"{metrics.get('control_site_flags', 0)} flag(s) on control sites")
    return table


def _report(project: Path) -> None:
    layout = Layout.load(project)
    console.print()
    console.print(summary_table(project, project / DEFAULT_PARAMS))
    console.print(f"\nflags (GeoJSON layer): [cyan]{layout.merged_flags}[/]")
    console.print(f"map page (open in a browser, works offline): [cyan]{layout.out / 'index.html'}[/]")
    console.print(f"metrics: [cyan]{layout.metrics}[/]  ·  PR curve: [cyan]{layout.pr_curve}[/] "
                  "([dim]dvc plots show[/])")


def _validate(project: Path, params: Path | None = None) -> None:
    """Fail in one line, before anything is written or DVC starts, on a bad parameters file (``params``,
    default the project's params.yaml): settings, the sites file it names (read relative to the project, as
    DVC will) and its site ids."""
    _check_project(project)
    params = project / DEFAULT_PARAMS if params is None else params
    settings = load_settings(params)
    if not settings.sites:
        raise ConfigError(f"{params}: sites: the list is empty; add site ids from sites_file")
    sites_file = project / settings.sites_file  # an absolute sites_file stays absolute
    all_sites = load_sites(sites_file)
    known = [s.site_id for s in all_sites]
    for site in all_sites:
        if site.site_id in settings.sites:
            site.grid(settings.fetch.resolution_m)  # refuses a site too large to hold, before DVC starts
    unknown = [s for s in settings.sites if s not in known]
    if unknown:
        raise ConfigError(
            f"{params}: sites: {', '.join(unknown)} not in {settings.sites_file} (known: {', '.join(known)})"
        )


def _install_params(project: Path, params: Path) -> None:
    """Validate ``params`` completely, then make it the project's params.yaml (atomically; the old one is kept
    as params.yaml.bak). Nothing is written when validation fails, and the user's ``params`` is only read."""
    target = project / DEFAULT_PARAMS
    _validate(project, params)
    if target.exists() and params.resolve() == target.resolve():
        return
    text = params.read_bytes()
    old = target.read_bytes() if target.exists() else None
    if old == text:
        return
    # both files are written in full under temporary names before either is renamed into place (the .bak
    # first): a full disk or a kill leaves the project as it was
    with atomic_path(target) as new_tmp:
        new_tmp.write_bytes(text)
        if old is not None:
            with atomic_path(target.with_name(target.name + ".bak")) as bak_tmp:
                bak_tmp.write_bytes(old)
    console.print(f"parameters: {params} → {target}")


def _repro_cleared(project: Path, *, force: bool = False, verbose: bool = False) -> None:
    """``repro`` after clearing the DVC lock entries of killed runs (call it holding :func:`project_lock`)."""
    note = clear_stale_dvc_locks(project)
    if note:
        err_console.print(Text(f"note: {note}", style="yellow"))
    repro(project, force=force, verbose=verbose)


def demo(project: ProjectOpt = Path("."), verbose: VerboseOpt = False) -> None:
    """Run the offline demo: the whole pipeline on the built-in synthetic sites, then a summary.

    Runs `dvc repro` in the project: fetch (synthetic Sentinel-2 scenes), tile, detect, flag, publish and
    evaluate for every site in params.yaml. Stages whose inputs, code and parameters did not change are
    skipped. Ends with a table per site: flags, area added (m²), object precision and recall, and the path of
    data/out/flags.geojson (all flags, WGS84 GeoJSON, ranked by confidence).
    """
    _validate(project)
    console.print("[bold]compoundwatch demo[/]: synthetic Sentinel-2 series of the sites in params.yaml")
    with project_lock(project):
        _repro_cleared(project, verbose=verbose)
    _report(project)


def run(
    project: ProjectOpt = Path("."),
    params: Annotated[
        Path | None,
        typer.Option("--params", "-p", help="Use this parameters file: it is validated, then copied to "
                     "params.yaml (the file DVC tracks); the old params.yaml is kept as params.yaml.bak.",
                     dir_okay=False),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", "-f", help="Rerun every stage, even unchanged ones.")
    ] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Run the pipeline with `dvc repro` (only stages whose inputs changed), then print the summary.

    Outputs: data/out/flags.geojson (ranked flags, WGS84), data/out/sites/SITE.geojson, metrics.json and
    data/eval/pr_curve.csv. Paths are those of dvc.yaml; parameters those of params.yaml.
    """
    _check_project(project)
    with project_lock(project):  # a second run on this project stops here, before writing anything
        if params is not None:
            _install_params(project, params)  # validated completely first: never installs a broken file
        _validate(project)
        _repro_cleared(project, force=force, verbose=verbose)
    _report(project)


def register(app: typer.Typer) -> None:
    """Add ``demo`` and ``run`` to ``app``."""
    app.command("demo", rich_help_panel="Pipeline")(demo)
    app.command("run", rich_help_panel="Pipeline")(run)
