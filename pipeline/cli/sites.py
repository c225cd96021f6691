"""``compoundwatch sites import``: a facility list (ASPI's CSV, GeoJSON points, OSM polygons, any lon/lat
table) → a sites file the pipeline runs on. Argument parsing and output only: the work is
:func:`pipeline.watchlist.import_sites`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli._common import check_out_path, console, err_console
from pipeline.errors import ConfigError

__all__ = ["sites_app", "import_list", "register"]

sites_app = typer.Typer(
    name="sites",
    help="Watchlists: turn facility lists into sites files (**compoundwatch sites import --help**).",
    rich_markup_mode="markdown",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

_EXAMPLES = """

**Examples**

    compoundwatch sites import ../shared/data/xinjiang_facilities/CampDataset_v1.csv --out configs/aspi.geojson

    compoundwatch sites import CampDataset_v1.csv --out aspi-t34.geojson --where "Tier >= 3" --size-m 1500

    compoundwatch sites import CampDataset_v1.csv --out kashgar.geojson --where "Prefecture = 'Kashgar'"
      --where "`Number of Buildings in 2019` > 20"

    compoundwatch sites import osm_reeducation_camps.geojson --out configs/osm.geojson --buffer-m 100
      --within aoi.geojson

Then point `sites_file` in params.yaml at the new file, list the site ids to run under `sites`, and run
**compoundwatch run**.
"""


@sites_app.command("import", epilog=_EXAMPLES)
def import_list(
    file: Annotated[Path, typer.Argument(
        help="Facility list: CSV with longitude/latitude columns (Long/Lat, lon/lat, longitude/latitude, x/y), "
             "or GeoJSON of Points (buffered to squares) or Polygons (footprints).", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Sites file to write (GeoJSON, WGS84).",
                                      show_default=False)],
    size_m: Annotated[float, typer.Option(
        "--size-m", help="Side of the square area of interest around each point, in metres (snapped to the "
                         "10 m pixels of the point's UTM zone).")] = 2000.0,
    buffer_m: Annotated[float, typer.Option(
        "--buffer-m", help="Buffer around polygon footprints, in metres.")] = 0.0,
    where: Annotated[list[str] | None, typer.Option(
        "--where", "-w", help="Keep rows where this holds, e.g. \"Tier >= 3\"; repeat to require several. "
        "Operators = != < <= > >=, 'is null', 'in (…)', and/or/not; `backticks` around names with spaces.",
        show_default=False)] = None,
    within: Annotated[Path | None, typer.Option(
        "--within", help="Keep facilities inside this area (GeoJSON polygons, WGS84).", show_default=False,
        dir_okay=False)] = None,
    id_col: Annotated[str | None, typer.Option(
        "--id-col", help="Make site ids from this column (default: from the name).", show_default=False)] = None,
    name_col: Annotated[str | None, typer.Option(
        "--name-col", help="Name column (default: Name_Code, name:en, name, title or label).",
        show_default=False)] = None,
    lon: Annotated[str | None, typer.Option("--lon", help="Longitude column of a CSV (default: found by name).",
                                            show_default=False)] = None,
    lat: Annotated[str | None, typer.Option("--lat", help="Latitude column of a CSV (default: found by name).",
                                            show_default=False)] = None,
    skip_invalid: Annotated[bool, typer.Option(
        "--skip-invalid", help="Leave out rows without a usable location (listed as notes) instead of "
                               "stopping at the first.")] = False,
) -> None:
    """Turn a facility list into a sites file: one site per row, ids safe and unique, attributes kept.

    Points become squares of --size-m metres on the site's UTM grid; polygons (e.g. OSM compound outlines)
    stay footprints (optionally buffered). Each site keeps the source's id, name and every column
    (`source_properties`), plus `tier`, `buildings_<year>` and `construction_ongoing_<year>` where the list
    has them (ASPI's Xinjiang Data Project does): the per-site summary shows them beside the flags.
    """
    from pipeline.watchlist import ImportOptions, import_sites, read_within, write_sites_file

    check_out_path(out, "--out")
    if out.exists() and out.resolve() == file.resolve():
        raise ConfigError(f"--out {out} is the facility list itself; choose another file for the sites")
    options = ImportOptions(
        size_m=size_m, buffer_m=buffer_m, where=tuple(where or ()),
        within=read_within(within) if within is not None else None,
        id_column=id_col, name_column=name_col, lon=lon, lat=lat, skip_invalid=skip_invalid,
    )
    result = import_sites(file, options)
    write_sites_file(result, out)
    for reason in result.skipped:
        err_console.print(f"note: skipped {reason}", markup=False, highlight=False, soft_wrap=True)
    kinds = []
    if result.n_points:
        kinds.append(f"{result.n_points} from points ({size_m:g} m squares)")
    if result.n_footprints:
        kinds.append(f"{result.n_footprints} footprints" + (f" (+{buffer_m:g} m)" if buffer_m else ""))
    left_out = []
    if result.n_filtered:
        left_out.append(f"{result.n_filtered} filtered out")
    if result.skipped:
        left_out.append(f"{len(result.skipped)} skipped")
    console.print(f"{len(result.site_ids)} site(s) from {result.n_rows} row(s): {', '.join(kinds)}"
                  f"{'; ' + ', '.join(left_out) if left_out else ''} → {out}", markup=False, highlight=False)
    ids = result.site_ids
    console.print(f"next: set sites_file: {out} in params.yaml and list ids under sites, e.g. "
                  f"[{', '.join(ids[:3])}{', …' if len(ids) > 3 else ''}]", markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    """Add the ``sites`` group to ``app``."""
    app.add_typer(sites_app, name="sites", rich_help_panel="Watchlists")
