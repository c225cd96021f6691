"""The ``compoundwatch`` command line (typer + rich).

``demo`` / ``run`` drive the whole pipeline through ``dvc repro``; ``fetch`` … ``evaluate`` run one stage
with the paths of ``dvc.yaml`` (``evaluate oscd``: the OSCD benchmark); ``compare`` flags change between two
scenes on disk.

Errors: every :class:`~pipeline.errors.CompoundwatchError` (and any ``OSError``: a path the user gave that
is missing, unreadable or not writable) is caught in one place, :meth:`_App.invoke`, for every command,
and printed as one red ``error: <message>`` line on stderr with exit code 1; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import warnings
from typing import Annotated, Any

import typer
from rich.text import Text
from typer.core import TyperGroup

import pipeline
from pipeline.cli import compare as _compare
from pipeline.cli import demo as _demo
from pipeline.cli import evaluate as _evaluate
from pipeline.cli import scan as _scan
from pipeline.cli import sites as _sites
from pipeline.cli import stages as _stages
from pipeline.cli import watch as _watch
from pipeline.cli._common import err_console
from pipeline.errors import CompoundwatchError

__all__ = ["app", "main"]

_EXPECTED = (CompoundwatchError, OSError)


def _message(err: BaseException) -> str:
    """One line for an expected error (OS errors: reason and file name)."""
    if isinstance(err, OSError) and not isinstance(err, CompoundwatchError) and err.strerror:
        text = f"{err.strerror}: {err.filename}" if err.filename else err.strerror
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())


class _App(TyperGroup):
    """The root command group: the single place where expected errors are reported, for every command."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except _EXPECTED as err:
            if ctx.params.get("debug"):
                raise
            line = Text("error: ", style="bold red")
            line.append(_message(err))
            err_console.print(line, soft_wrap=True)
            ctx.exit(1)


app = typer.Typer(
    cls=_App,
    name="compoundwatch",
    help="Find and measure the expansion of walled compounds in Sentinel-2 time series.\n\n"
    "Start with **compoundwatch demo** (offline, synthetic scenes). Parameters live in params.yaml, "
    "paths in dvc.yaml; run commands from the project root.",
    rich_markup_mode="markdown",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"compoundwatch {pipeline.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the full traceback when a command fails.")
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Global options (they go before the command: compoundwatch --debug run)."""
    from pipeline.stages import configure_logging

    configure_logging()
    if not debug:
        # Libraries' own warnings (rasterio's NotGeoreferencedWarning, dask's, …) would precede our one-line
        # error or summary with lines of library internals; compoundwatch reports those problems itself.
        # --debug shows them all; the package's own warnings always show.
        warnings.filterwarnings("ignore")
        warnings.filterwarnings("default", module=r"pipeline(\.|$)")
        for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):  # for developers
            warnings.filterwarnings("ignore", category=category)


_demo.register(app)
_stages.register(app)
_evaluate.register(app)
_scan.register(app)
_compare.register(app)
_sites.register(app)
_watch.register(app)


def main() -> None:
    """Console-script entry point (``compoundwatch``)."""
    app(prog_name="compoundwatch")
