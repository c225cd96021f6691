"""DVC stage entry points: ``python -m pipeline.stages.<name> ARGS``.

Each module reads its parameters with :func:`pipeline.config.load_settings` (``--params``, default
``params.yaml``), takes every path from ``argv`` (``dvc.yaml`` is the one place that names them) and exposes a
``run(...)`` function that the command line (:mod:`pipeline.cli`) calls too.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pipeline.config import DEFAULT_PARAMS, SITE_ID_PATTERN
from pipeline.errors import CompoundwatchError, ConfigError, InvalidAOIError

__all__ = ["Progress", "site_path", "stage_parser", "stage_main", "configure_logging", "LOG_ENV"]

#: Environment variable naming a log level (DEBUG, INFO, …): stages and the CLI then log to stderr.
LOG_ENV = "COMPOUNDWATCH_LOG"


def configure_logging() -> None:
    """Log to stderr at the level named by ``$COMPOUNDWATCH_LOG`` (one timestamped line per record, for cron and
    CI logs); nothing when it is unset. Secrets are redacted by the fetchers' log filters."""
    level = os.environ.get(LOG_ENV, "").strip().upper()
    if not level:
        return
    if not isinstance(logging.getLevelName(level), int):
        raise ConfigError(f"{LOG_ENV}={level!r} is not a log level; use DEBUG, INFO, WARNING or ERROR")
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

#: Optional per-site progress callback: called with a site id once that site is done.
Progress = Callable[[str], None] | None


def site_path(folder: str | Path, site_id: str, suffix: str) -> Path:
    """``<folder>/<site_id><suffix>``: how the aggregate stages find one site's file in a stage's folder.

    The per-site stages get full paths from ``dvc.yaml``, which names them the same way. A site id that is
    not a plain id (``../x``, ``a/b``) raises :class:`~pipeline.errors.InvalidAOIError`: no path built from
    it may leave ``folder``.
    """
    if not SITE_ID_PATTERN.match(site_id):
        raise InvalidAOIError(f"site id {site_id!r} is not lowercase letters, digits and hyphens; it cannot name a "
                              f"file in {folder}")
    return Path(folder) / f"{site_id}{suffix}"


def stage_parser(name: str, description: str) -> argparse.ArgumentParser:
    """An argument parser with the ``--params`` option every stage shares."""
    parser = argparse.ArgumentParser(prog=f"python -m pipeline.stages.{name}", description=description)
    parser.add_argument(
        "--params", type=Path, default=DEFAULT_PARAMS, help="parameters file (default: %(default)s)"
    )
    return parser


def stage_main(func: Callable[[argparse.Namespace], object], parser: argparse.ArgumentParser,
               argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, call ``func(args)``; an expected error becomes one ``error:`` line, exit code 1."""
    args = parser.parse_args(argv)
    try:
        configure_logging()
        func(args)
    except (CompoundwatchError, FileNotFoundError) as err:
        print(f"error: {parser.prog}: {err}", file=sys.stderr)
        return 1
    return 0
