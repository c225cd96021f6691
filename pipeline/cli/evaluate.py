"""``compoundwatch evaluate``: score the pipeline's flags (no subcommand) or benchmark on OSCD (``oscd``).

``compoundwatch evaluate [--params F]`` runs the pipeline's evaluate stage exactly as before
(:func:`pipeline.cli.stages.evaluate`); ``compoundwatch evaluate oscd [PATH]`` runs the OSCD harness of
:mod:`pipeline.oscd_eval`. Registered by :mod:`pipeline.cli` through :func:`register`; heavy libraries are
imported inside the commands so ``--help`` stays fast.
"""

from __future__ import annotations

import inspect
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from pipeline.cli import stages as _stages
from pipeline.cli._common import ParamsOpt, console
from pipeline.config import DEFAULT_PARAMS

if TYPE_CHECKING:
    from rich.table import Table

__all__ = ["evaluate_app", "register", "oscd", "Method", "result_table", "DEFAULT_OSCD"]

#: Where the shared OSCD copy sits relative to the project root.
DEFAULT_OSCD = Path("../shared/data/oscd")

evaluate_app = typer.Typer(
    name="evaluate",
    invoke_without_command=True,
    rich_markup_mode="markdown",
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


@evaluate_app.callback(
    help=inspect.cleandoc(_stages.evaluate.__doc__ or "")
    + "\n\n**Subcommand** `compoundwatch evaluate oscd [PATH]`: per-city scores on the labelled OSCD cities "
    "(naive CVA + Otsu baseline and the learned chain, leave-one-city-out); see `compoundwatch evaluate oscd "
    "--help`."
)
def evaluate(ctx: typer.Context, params: ParamsOpt = DEFAULT_PARAMS) -> None:
    """Without a subcommand: the pipeline's evaluate stage (help text above)."""
    if ctx.invoked_subcommand is None:
        _stages.evaluate(params)


class Method(str, Enum):
    """Chains ``evaluate oscd`` scores beside the baseline."""

    LEARNED = "learned"
    CVA = "cva"


_Path = Annotated[Path, typer.Argument(
    metavar="PATH", help="The OSCD folder holding images/ and train_labels/ (see its README).")]
_Out = Annotated[Path, typer.Option(
    "--out", "-o", metavar="JSON",
    help="Metrics file to write (JSON; top-level micro_f1, macro_f1, per_city).")]
_Plot = Annotated[Optional[Path], typer.Option(
    "--plot", metavar="PNG", show_default=False,
    help="Also draw the F1 per city (baseline vs learned) as a grouped bar chart (PNG).")]
_Method = Annotated[Method, typer.Option(
    "--method", help="learned: baseline + the learned chain leave-one-city-out (about 25-40 min for 10 "
    "cities on 2 cores); cva: the CVA + Otsu baseline only (about a minute).")]
_BandSet = Annotated[str, typer.Option(
    "--band-set", metavar="NAME", help="Band set of the learned chain: s2-13, s2-10, s2-6 or s2-4.")]
_Cities = Annotated[Optional[str], typer.Option(
    "--cities", metavar="A,B", show_default=False,
    help="Only these labelled cities, comma-separated (leave-one-city-out then runs among them). "
    "Default: every labelled city; hold-out cities are never read.")]
_FromReport = Annotated[Optional[Path], typer.Option(
    "--from-report", metavar="JSON", show_default=False,
    help="Take the learned scores from the LOCO section of a training report (python -m pipeline.train.oscd "
    "--report, e.g. pipeline/data/models/oscd_loco.json) instead of retraining the folds: the classifier "
    "alone, without the CVA union; fast, but the full run is the number to report.")]
_Trees = Annotated[int, typer.Option(
    "--trees", min=1, metavar="N",
    help="Boosting rounds per fold (default: the shipped recipe; fewer is faster but not what ships).")]


def oscd(
    path: _Path = DEFAULT_OSCD,
    out: _Out = Path("oscd_metrics.json"),
    plot: _Plot = None,
    method: _Method = Method.LEARNED,
    band_set: _BandSet = "s2-13",
    cities: _Cities = None,
    from_report: _FromReport = None,
    trees: _Trees = 250,
) -> None:
    """Score change detection on the labelled OSCD cities: naive CVA + Otsu baseline and the learned chain.

    Each city is read as **compoundwatch compare imgs_1/ imgs_2/** reads it (AFTER reprojected onto the
    imgs_1 10 m grid) and scored per pixel against its change map: precision, recall, F1 and IoU of the
    change class, the counts tp/fp/fn (pixels) and the wall seconds per city; micro scores pool the pixel
    counts over the cities, the macro F1 is the mean of the cities' F1.

    The learned chain is scored **leave-one-city-out**: each city is predicted by a model trained, with the
    shipped models' recipe, on the other cities only; the smoothing and per-image threshold rule are chosen on
    the pooled held-out predictions as for the shipped model, and extreme CVA changes are united as in
    compare. The strict score also takes each city's rule from the other cities only.

    **Writes** --out: the best chain at the top level (micro_f1, macro_f1, per_city) with baseline,
    ratio_micro_f1_vs_baseline and the learned chain's details; --plot: the per-city F1 chart. Prints the
    table. The DVC stage evaluate_oscd (frozen) runs this command; `dvc metrics show` lists its file.
    """
    from rich.progress import (
        BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn,
    )

    from pipeline import oscd_eval as ev
    from pipeline.detect.features import BAND_SETS
    from pipeline.errors import ConfigError

    learned = method is Method.LEARNED
    if learned and band_set not in BAND_SETS:
        raise ConfigError(f"--band-set {band_set!r} is unknown; choose one of {', '.join(BAND_SETS)}")
    if from_report is not None and not learned:
        raise ConfigError("--from-report gives the learned chain's scores; drop it or use --method learned")
    chosen = ev.pick_cities(path, cities.split(",") if cities else None)
    if learned and from_report is None and len(chosen) < 2:
        raise ConfigError(
            "leave-one-city-out needs at least 2 cities; name more with --cities or use --method cva"
        )

    result = ev.learned_from_report(from_report, band_set, chosen) if from_report is not None else None
    labels = {"baseline": "CVA + Otsu", "sample": "features", "loco": "LOCO folds"}
    columns = (SpinnerColumn(), TextColumn("[bold]{task.description:<11}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("{task.fields[city]}"))
    with Progress(*columns, console=console, transient=False) as bars:
        tasks: dict[str, TaskID] = {}

        def progress(phase: str, city: str, done: bool) -> None:
            if phase not in tasks:
                tasks[phase] = bars.add_task(labels.get(phase, phase), total=len(chosen), city="")
            bars.update(tasks[phase], advance=1 if done else 0, city=city if done else f"{city} …")

        base, strong = ev.evaluate_baseline(path, chosen, progress)
        if learned and result is None:
            result = ev.evaluate_learned(path, chosen, band_set, recipe=ev.Recipe(n_trees=trees),
                                         strong=strong, cva_seconds=base.seconds, progress=progress)
    doc = ev.build_document(base, result, band_set)
    ev.write_document(doc, out)
    if plot is not None:
        ev.write_plot(doc, plot)
    console.print(result_table(doc))
    where = f"{out}" + (f", plot {plot}" if plot is not None else "")
    versus = f" vs {doc['baseline']['micro_f1']:.3f} (baseline)" if result is not None else ""
    console.print(f"micro-F1 {doc['micro_f1']:.3f} ({doc['method']}){versus} → {where}")


def result_table(doc: dict[str, Any]) -> Table:
    """A rich table of a metrics document: per city the baseline (CVA + Otsu) F1 and detection seconds, and,
    when the learned chain ran, its F1, precision, recall, IoU, strict F1 and seconds; micro/macro rows."""
    from rich.table import Table

    base, per_city = doc["baseline"], doc["per_city"]
    learned = doc["method"] != base["method"]
    strict = doc.get("learned", {}).get("strict")
    table = Table(title=f"OSCD, {len(per_city)} labelled cities (change-class pixel scores)")
    table.add_column("city")
    table.add_column("CVA F1", justify="right")
    table.add_column("CVA s", justify="right")
    if learned:
        for name in ("LOCO F1", "P", "R", "IoU", *(("strict",) if strict else ()), "LOCO s"):
            table.add_column(name, justify="right")
    for c, row in per_city.items():
        b = base["per_city"][c]
        cells = [c, f"{b['f1']:.3f}", f"{b['seconds']:.1f}"]
        if learned:
            cells += [f"{row['f1']:.3f}", f"{row['precision']:.2f}", f"{row['recall']:.2f}",
                      f"{row['iou']:.3f}"]
            cells += [f"{strict['per_city'][c]['f1']:.3f}"] if strict else []
            cells += [f"{row['seconds']:.0f}"]
        table.add_row(*cells)
    table.add_section()
    for kind in ("micro", "macro"):
        cells = [kind, f"{base[f'{kind}_f1']:.3f}", ""]
        if learned:
            micro = kind == "micro"
            cells += [f"{doc[f'{kind}_f1']:.3f}", f"{doc['micro_precision']:.2f}" if micro else "",
                      f"{doc['micro_recall']:.2f}" if micro else "",
                      f"{doc['micro_iou']:.3f}" if micro else ""]
            cells += [f"{strict[f'{kind}_f1']:.3f}"] if strict else []
            cells += [""]
        table.add_row(*cells)
    if learned:
        rule = doc["learned"].get("decision_rule", {})
        ratio = doc.get("ratio_micro_f1_vs_baseline")
        cut = rule.get("adaptive_threshold") or rule.get("threshold")
        table.caption = (f"learned: {doc['band_set']}, {doc['learned'].get('source')}, smoothing "
                         f"{rule.get('smooth_sigma_px')} px, rule {cut}"
                         + (f"; micro-F1 ×{ratio:.2f} the baseline" if ratio else ""))
    return table


evaluate_app.command("oscd")(oscd)


def register(app: typer.Typer) -> None:
    """Add the ``evaluate`` group (the stage without a subcommand, ``oscd``) to ``app``."""
    app.add_typer(evaluate_app, name="evaluate", rich_help_panel="Single stages")
