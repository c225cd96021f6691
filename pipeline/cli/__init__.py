"""The ``compoundwatch`` command line (typer + rich).

``demo`` / ``run`` drive the whole pipeline through ``dvc repro``; ``fetch`` … ``evaluate`` run one stage
with the paths of ``dvc.yaml`` (``evaluate oscd``: the OSCD benchmark); ``compare`` flags change between two
scenes on disk.

Errors: every :class:`~pipeline.errors.CompoundwatchError` (and ``FileNotFoundError`` for a path the user
gave) is caught in one place, :meth:`_App.invoke`, and printed as one red ``error: <message>`` line on
stderr with exit code 1; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Annotated, Any

import typer
from rich.text import Text
from typer.core import TyperGroup

import pipeline
from pipeline.cli import demo as _demo
from pipeline.cli import evaluate as _evaluate
from pipeline.cli import scan as _scan
from pipeline.cli import stages as _stages
from pipeline.cli._common import err_console
from pipeline.errors import CompoundwatchError

__all__ = ["app", "main"]

_EXPECTED = (CompoundwatchError, FileNotFoundError)


def _message(err: BaseException) -> str:
    """One line for an expected error (OS errors: reason and file name)."""
    if isinstance(err, OSError) and not isinstance(err, CompoundwatchError) and err.strerror:
        text = f"{err.strerror}: {err.filename}" if err.filename else err.strerror
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())


def _unavailable(name: str, err: Exception) -> Any:
    """A stand-in command that reports why ``name`` could not be loaded."""

    def command() -> None:
        raise CompoundwatchError(f"the {name} command is unavailable ({type(err).__name__}: {err})")

    command.__doc__ = f"(unavailable: {type(err).__name__})"
    return command


def _placeholder(help_text: str) -> Any:
    def command() -> None:  # pragma: no cover - only listed, never invoked
        raise AssertionError("placeholder command invoked")

    command.__doc__ = help_text
    return command


def _command(name: str, func: Any, short_help: str) -> Any:
    """A click command for ``func`` built by typer (its own markup mode: rich)."""
    sub = typer.Typer(rich_markup_mode="rich")
    sub.command(name, rich_help_panel="Two scenes", short_help=short_help)(func)
    return typer.main.get_command(sub)


class _App(TyperGroup):
    """The root command group: lazy ``compare`` and the single place where expected errors are reported."""

    _LAZY = {"compare": ("pipeline.cli.compare", "compare")}
    _SHORT = {"compare": "Flag new construction between two scenes on disk (BEFORE and AFTER)."}

    def list_commands(self, ctx: Any) -> list[str]:
        names = list(super().list_commands(ctx))
        for name, (module, _) in self._LAZY.items():
            if name not in names and importlib.util.find_spec(module) is not None:
                names.append(name)
        return names

    _listing = False  # True while the root --help is drawn: lazy commands are listed, not imported

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False

    def get_command(self, ctx: Any, name: str) -> Any:
        cmd = super().get_command(ctx, name)
        if cmd is not None or name not in self._LAZY:
            return cmd
        module, attr = self._LAZY[name]
        if importlib.util.find_spec(module) is None:
            return None
        if self._listing:
            return _command(name, _placeholder(self._SHORT[name]), self._SHORT[name])
        try:
            func = getattr(importlib.import_module(module), attr)
        except Exception as err:  # a module being written must not break the rest of the CLI
            func = _unavailable(name, err)
        cmd = _command(name, func, self._SHORT[name])
        self.add_command(cmd, name)
        return cmd

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


_demo.register(app)
_stages.register(app)
_evaluate.register(app)
_scan.register(app)


def main() -> None:
    """Console-script entry point (``compoundwatch``)."""
    app(prog_name="compoundwatch")
