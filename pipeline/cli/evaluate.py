"""``compoundwatch evaluate``: score the pipeline's flags (no subcommand), benchmark on OSCD (``oscd``) or
on the real-imagery case studies (``dabancheng``, ``taizhou``).

``compoundwatch evaluate [--params F]`` runs the pipeline's evaluate stage exactly as before
(:func:`pipeline.cli.stages.evaluate`); ``compoundwatch evaluate oscd [PATH]`` runs the OSCD harness of
:mod:`pipeline.evaluate.oscd`; ``evaluate dabancheng [PATH]`` and ``evaluate taizhou [PATH]`` run
:func:`pipeline.evaluate.cases.evaluate_dabancheng` and :func:`pipeline.evaluate.cases.evaluate_taizhou`.
Registered by :mod:`pipeline.cli` through :func:`register`; heavy libraries are imported inside the commands
so ``--help`` stays fast.
"""

from __future__ import annotations

import inspect
import json
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pipeline.cli import stages as _stages
from pipeline.cli._common import ParamsOpt, console, progress_bars
from pipeline.config import DEFAULT_PARAMS

if TYPE_CHECKING:
    from rich.progress import Progress
    from rich.table import Table

__all__ = [
    "evaluate_app",
    "register",
    "oscd",
    "Method",
    "result_table",
    "dabancheng",
    "dabancheng_table",
    "taizhou",
    "taizhou_document",
    "taizhou_table",
    "DEFAULT_OSCD",
    "DEFAULT_DABANCHENG",
    "DEFAULT_TAIZHOU",
]

#: Where the shared OSCD copy sits relative to the project root.
DEFAULT_OSCD = Path("../shared/data/oscd")
#: Where the shared case-study folders sit relative to the project root.
DEFAULT_DABANCHENG = Path("../shared/data/xinjiang_dabancheng")
DEFAULT_TAIZHOU = Path("../shared/data/landsat_taizhou")

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
    "--help`.\n\n**Subcommands** `compoundwatch evaluate dabancheng [PATH]` and `compoundwatch evaluate "
    "taizhou [PATH]`: the real-imagery case studies (the ASPI Dabancheng facilities among the ranked flags "
    "of one AOI; the Landsat Taizhou pair on its labelled pixels, chain vs CVA + Otsu)."
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
_Plot = Annotated[Path | None, typer.Option(
    "--plot", metavar="PNG", show_default=False,
    help="Also draw the F1 per city (baseline vs learned) as a grouped bar chart (PNG).")]
_Method = Annotated[Method, typer.Option(
    "--method", help="learned: baseline + the learned chain leave-one-city-out (about 8 min for 10 "
    "cities on 2 idle cores); cva: the CVA + Otsu baseline only (about a minute).")]
_BandSet = Annotated[str, typer.Option(
    "--band-set", metavar="NAME", help="Band set of the learned chain: s2-13, s2-10, s2-6 or s2-4.")]
_Cities = Annotated[str | None, typer.Option(
    "--cities", metavar="A,B", show_default=False,
    help="Only these labelled cities, comma-separated (leave-one-city-out then runs among them). "
    "Default: every labelled city; hold-out cities are never read.")]
_FromReport = Annotated[Path | None, typer.Option(
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
    from rich.progress import TaskID

    from pipeline.detect.features import BAND_SETS
    from pipeline.errors import ConfigError
    from pipeline.evaluate import oscd as ev

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
    with progress_bars("city", label_width=17) as bars:
        tasks: dict[str, TaskID] = {}

        def progress(phase: str, city: str, done: bool) -> None:
            if phase not in tasks:
                step, _, bs = phase.partition(" ")
                label = f"{labels.get(step, step)} {bs}".strip()
                tasks[phase] = bars.add_task(label, total=len(chosen), city="")
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


# -- the real-imagery case studies (pipeline.evaluate.cases) ------------------------------------------------

_CaseOut = Annotated[Path, typer.Option("--out", "-o", metavar="JSON", help="Metrics file to write (JSON).")]
_Pairs = Annotated[bool, typer.Option(
    "--pairs/--no-pairs", help="Also run the data README's two bi-temporal tests through the compare chain "
    "(2017-03-02 → 2018-10-11, 2018-10-11 → 2020-06-02; about 3 s more).")]


def _data_folder(path: Path, what: str, holds: str) -> Path:
    """``path`` when it is a folder, else an :class:`~pipeline.errors.InputFileError` (before any work)."""
    from pipeline.errors import InputFileError

    if not path.is_dir():
        raise InputFileError(f"{path} is not a folder; give the {what} folder holding {holds} "
                             "(../shared/data)")
    return path


def _steps() -> Progress:
    """A rich progress display, one spinner line per step (the studies report no finer progress)."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    return Progress(SpinnerColumn(finished_text="[green]✓"), TextColumn("[bold]{task.description:<32}"),
                    TimeElapsedColumn(), console=console, transient=False)


def _write_json(doc: dict[str, Any], path: Path) -> None:
    from pipeline._files import write_text_atomic

    write_text_atomic(path, json.dumps(doc, indent=1) + "\n")


def dabancheng(
    path: Annotated[Path, typer.Argument(
        metavar="PATH", help="The xinjiang_dabancheng folder (s2_l1c_truecolor_georef/, s2_l2a_2020-06-02/)."
    )] = DEFAULT_DABANCHENG,
    out: _CaseOut = Path("dabancheng_metrics.json"),
    pairs: _Pairs = True,
) -> None:
    """Dabancheng case study: are both ASPI facilities among the 5 highest-confidence flags of the AOI?

    Runs **compoundwatch run --params configs/dabancheng.yaml** in memory on PATH (13 Sentinel-2 dates
    2017-2020, one AOI holding both facilities), ranks the flags as the published layer does and matches each
    ASPI point to the best-ranked flag within 100 m. With --pairs, also the README's two bi-temporal tests
    through the compare chain.

    **Prints** per facility (and pair): flagged, rank, area, dates, confidence, distance; the number of flags
    and whether both facilities are in the top 5. **Writes** --out: the full result (top-level both_in_top5,
    facilities, n_flags, top, pairs, ...). The DVC stage evaluate_cases (frozen) runs this command.
    """
    from pipeline.evaluate import cases as cs

    path = _data_folder(path, "Dabancheng", "s2_l1c_truecolor_georef/ and s2_l2a_2020-06-02/")
    with _steps() as steps:
        step = steps.add_task("AOI run (13 dates) + flags", total=1)
        result = cs.evaluate_dabancheng(path, pairs=False)
        steps.update(step, completed=1)
        if pairs:
            step = steps.add_task("compare pairs (2)", total=1)
            result["pairs"] = cs.dabancheng_pairs(path)
            steps.update(step, completed=1)
    doc = cs.jsonable(result)
    _write_json(doc, out)
    console.print(dabancheng_table(doc))
    top5 = "yes" if doc["both_in_top5"] else "no"
    console.print(f"both facilities in the top 5: {top5} ({doc['n_flags']} flags, {doc['seconds']:.1f} s) "
                  f"→ {out}")


def dabancheng_table(doc: dict[str, Any]) -> Table:
    """A rich table of a Dabancheng result: per facility its best-matching flag (flagged, rank, area, dates,
    confidence, distance) in the AOI run and, when they ran, in each compare pair; 80 columns wide."""
    from rich.table import Table

    table = Table(title="Dabancheng: ASPI facilities among the ranked flags")
    for name in ("chain", "ASPI", "flagged", "rank", "area ha", "dates", "conf.", "dist. m"):
        table.add_column(name, justify="left" if name in ("chain", "ASPI", "flagged", "dates") else "right",
                         min_width=12 if name == "dates" else None)
    pairs = doc.get("pairs", [])
    runs = [("AOI run", doc)] + [(f"pair {i}", p) for i, p in enumerate(pairs, start=1)]
    for i, (label, run) in enumerate(runs):
        if i:
            table.add_section()
        for k, (key, f) in enumerate(run["facilities"].items()):
            hit = f["flagged"]
            nearest = "-" if f["nearest_m"] is None else f"({f['nearest_m']:.0f})"
            table.add_row(
                f"{label}\n{run['n_flags']} flags" if k == 0 else "", key.replace("facility_", "#"),
                "yes" if hit else "[red]no", str(f["rank"]) if hit else "-",
                f"{f['area_m2'] / 1e4:.1f}" if hit else "-",
                f"{f['appeared_after']}\n→ {f['appeared_before']}" if hit else "-",
                f"{f['confidence']:.3f}" if hit else "-",
                f"{f['distance_m']:.0f}" if hit else nearest,
            )
    notes = [f"AOI run: {doc['n_dates']} dates"]
    notes += [f"pair {i}: compare {p['before']} → {p['after']} ({p['name']})"
              for i, p in enumerate(pairs, start=1)]
    notes.append(f"match: the best-ranked flag within {doc['tolerance_m']:.0f} m of the ASPI point; "
                 "(m): the nearest flag when none is within")
    table.caption = "\n".join(notes)
    return table


def taizhou(
    path: Annotated[Path, typer.Argument(
        metavar="PATH", help="The landsat_taizhou folder (2000TM, 2003TM, change.bmp, unchanged.bmp)."
    )] = DEFAULT_TAIZHOU,
    out: _CaseOut = Path("taizhou_metrics.json"),
) -> None:
    """Taizhou case study: the compare chain vs the CVA + Otsu baseline on a labelled Landsat-7 pair.

    Reads the 2000 and 2003 ETM+ scenes of PATH as approximate TOA reflectance named as Sentinel-2 bands,
    runs the **compoundwatch compare** chain (default settings) and the naive CVA + Otsu baseline, and scores
    both on the labelled pixels only (change.bmp / unchanged.bmp; the rest is unlabelled).

    **Prints** precision, recall, F1, IoU, kappa and seconds per method. **Writes** --out: the chain's scores
    at the top level (f1, precision, recall, iou, ...) with baseline {same keys} and ratio_f1_vs_baseline.
    The DVC stage evaluate_cases (frozen) runs this command.
    """
    from pipeline.evaluate import cases as cs

    path = _data_folder(path, "Taizhou", "2000TM, 2003TM, change.bmp and unchanged.bmp")
    with _steps() as steps:
        step = steps.add_task("chain + CVA baseline (2 dates)", total=1)
        result = cs.evaluate_taizhou(path)
        steps.update(step, completed=1)
    doc = taizhou_document(cs.jsonable(result))
    _write_json(doc, out)
    console.print(taizhou_table(doc))
    console.print(f"F1 {doc['f1']:.3f} ({doc['method']}) vs {doc['baseline']['f1']:.3f} (baseline) → {out}")


def taizhou_document(result: dict[str, Any]) -> dict[str, Any]:
    """The metrics document of :func:`pipeline.evaluate.cases.evaluate_taizhou`'s result: the chain's scores at
    the top level, ``baseline`` beside them, the label counts and ``ratio_f1_vs_baseline``."""
    return {
        **result["chain"],
        "n_changed": result["n_changed"],
        "n_unchanged": result["n_unchanged"],
        "baseline": result["baseline"],
        "ratio_f1_vs_baseline": result["f1_ratio"],
    }


def taizhou_table(doc: dict[str, Any]) -> Table:
    """A rich table of a Taizhou metrics document: chain and baseline, one row each."""
    from rich.table import Table

    table = Table(title=f"Taizhou (Landsat-7): {doc['n_changed']:,} changed + {doc['n_unchanged']:,} "
                        "unchanged labelled px")
    table.add_column("")
    for name in ("precision", "recall", "F1", "IoU", "kappa", "seconds"):
        table.add_column(name, justify="right")
    for label, row in (("chain", doc), ("baseline", doc["baseline"])):
        table.add_row(label, f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}",
                      f"{row['iou']:.3f}", f"{row['kappa']:.3f}", f"{row['seconds']:.1f}")
    ratio = doc.get("ratio_f1_vs_baseline")
    notes = [f"chain: {doc['method']} ({doc['n_flags']} flags); baseline: {doc['baseline']['method']}",
             "change class, labelled pixels only" + (f"; F1 ×{ratio:.2f} the baseline" if ratio else "")]
    table.caption = "\n".join(notes)
    return table


evaluate_app.command("dabancheng")(dabancheng)
evaluate_app.command("taizhou")(taizhou)


def register(app: typer.Typer) -> None:
    """Add the ``evaluate`` group (the stage without a subcommand, ``oscd``, ``dabancheng``, ``taizhou``) to
    ``app``."""
    app.add_typer(evaluate_app, name="evaluate", rich_help_panel="Single stages")
