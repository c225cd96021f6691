"""``compoundwatch watch``: rerun the sites on newer imagery, then publish only what is new or has grown.

Argument parsing and output only: it moves ``fetch.end`` (:func:`pipeline.watch.with_fetch_end`, installed
like ``run --params``), runs the pipeline through ``dvc repro`` (:mod:`pipeline.cli.demo`) and records the
published layer with :func:`pipeline.watch.record_watch`.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path
from typing import Annotated

import typer
import yaml

from pipeline.cli._common import Layout, console
from pipeline.cli._project import project_lock
from pipeline.cli.demo import ProjectOpt, VerboseOpt, _check_project, _install_params, _repro_cleared, _validate
from pipeline.config import DEFAULT_PARAMS, load_settings, settings_from_dict
from pipeline.errors import ConfigError

__all__ = ["watch", "register", "DEFAULT_STATE"]

#: The watch state folder, relative to the project root.
DEFAULT_STATE = Path("published")

_EXAMPLES = """

**Examples**

    compoundwatch watch --end today              # cron, once a day: new scenes up to today (real sources)

    compoundwatch watch --end 2023-09-30         # move the run's end date to 2023-09-30 and rerun

    compoundwatch watch --no-run                 # only compare data/out (after compoundwatch run) with the last watch

Outputs (under --state-dir): LATEST (the last run id), RUN/alerts.geojson, RUN/digest.md, RUN/flags.geojson,
RUN/manifest.json and feed.atom (Atom 1.0: point a feed reader or a chat bot at it).
"""


def _parse_end(text: str) -> dt.date:
    if text.strip().lower() == "today":
        return dt.datetime.now(dt.timezone.utc).date()
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError as err:
        raise ConfigError(f"--end {text!r} is not a date; give YYYY-MM-DD or 'today'") from err


def _move_end(project: Path, end: dt.date) -> None:
    """Set fetch.end in the project's params.yaml (validated first; never moved backwards)."""
    from pipeline.watch import with_fetch_end

    params = project / DEFAULT_PARAMS
    settings = load_settings(params)
    if end < settings.fetch.end:
        raise ConfigError(f"--end {end} is before fetch.end {settings.fetch.end} of the last run; watch only moves "
                          "forward (to look back, edit params.yaml and use compoundwatch run)")
    if end == settings.fetch.end:
        return
    text = with_fetch_end(params.read_text(encoding="utf-8"), end)
    settings_from_dict(yaml.safe_load(text) or {}, origin=f"{params} with fetch.end {end}")  # errors name params.yaml
    with tempfile.TemporaryDirectory() as tmp:
        new = Path(tmp) / DEFAULT_PARAMS.name
        new.write_text(text, encoding="utf-8")
        _install_params(project, new)


def watch(
    project: ProjectOpt = Path("."),
    end: Annotated[str | None, typer.Option(
        "--end", help="Move fetch.end forward to this date (YYYY-MM-DD or 'today') before rerunning: the "
        "newer imagery to look at. Default: keep params.yaml's end.", show_default=False)] = None,
    state_dir: Annotated[Path, typer.Option(
        "--state-dir", help="Folder of the published watch runs (relative to the project).",
        file_okay=False)] = DEFAULT_STATE,
    min_growth_m2: Annotated[float, typer.Option(
        "--min-growth-m2", help="A flag counts as grown when its area rose by at least this many m² …")] = 1000.0,
    min_growth_fraction: Annotated[float, typer.Option(
        "--min-growth-fraction", help="… and by at least this fraction of its previous area.")] = 0.2,
    no_run: Annotated[bool, typer.Option(
        "--no-run", help="Do not rerun the pipeline: compare the layer already published in data/out.")] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Rerun the sites on newer imagery and publish only what is new or has grown since the last watch.

    Compares the freshly published flags (data/out/flags.geojson) with the last published watch run: a flag
    that overlaps no earlier flag is **new**; one whose area grew by --min-growth-m2 and --min-growth-fraction
    is **grown** (its previous and new area are in the alerts). Writes a new run folder, the Atom feed and
    the LATEST pointer; when nothing changed (no newer imagery, same layer) it writes nothing at all.
    """
    from pipeline.watch import GrowthRule, record_watch

    _check_project(project)
    rule = GrowthRule(min_growth_m2, min_growth_fraction)
    new_end = _parse_end(end) if end is not None else None
    if no_run and new_end is not None:
        raise ConfigError("--no-run compares what is already published; drop --end (or --no-run to rerun)")
    state = state_dir if state_dir.is_absolute() else project / state_dir
    with project_lock(project):
        if new_end is not None:
            _move_end(project, new_end)
        _validate(project)
        if not no_run:
            _repro_cleared(project, verbose=verbose)
        layout = Layout.load(project)
        settings = load_settings(project / DEFAULT_PARAMS)
        result = record_watch(layout.merged_flags, layout.out / "site_summary.geojson", state, rule=rule,
                              feed_key=f"{settings.sites_file.name}:{','.join(sorted(settings.sites))}")
    if not result.changed:
        console.print(f"nothing new since watch run {result.previous_run_id}: same layer, no newer imagery; "
                      "no file changed", markup=False, highlight=False)
        return
    run = result.run
    assert run is not None and result.folder is not None
    since = f"since {run.previous_run_id}" if run.previous_run_id else "(first watch: every flag is new)"
    console.print(f"watch run {run.run_id} (imagery up to {run.imagery_until or 'unknown'}): {result.n_new} new, "
                  f"{result.n_grown} grown flag(s) {since}", markup=False, highlight=False)
    for _, row in run.alerts.iterrows():
        prev = f" (was {row['previous_area_m2']:,.0f} m²)" if row["alert"] == "grown" else ""
        console.print(f"  {row['alert']:5s} {row['site_id']} {row['flag_id']} {row['area_m2']:,.0f} m²{prev}",
                      markup=False, highlight=False)
    console.print(f"alerts: {result.folder / 'alerts.geojson'}  digest: {result.folder / 'digest.md'}  "
                  f"feed: {state / 'feed.atom'}", markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``watch`` to ``app``."""
    app.command("watch", rich_help_panel="Pipeline", epilog=_EXAMPLES)(watch)
