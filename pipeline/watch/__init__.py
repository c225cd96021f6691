"""Watch mode: rerun the sites on newer imagery and publish only what is new or has grown.

:mod:`~pipeline.watch.diff` compares two published flag layers (new / grown / gone),
:mod:`~pipeline.watch.state` keeps the published runs (versioned folders + a ``LATEST`` pointer),
:mod:`~pipeline.watch.report` writes the Markdown digest and the Atom feed, and
:func:`~pipeline.watch.record.record_watch` ties them together for ``compoundwatch watch`` (which first moves
``fetch.end`` forward and reruns the pipeline: :mod:`pipeline.watch.params_text`).
"""

from pipeline.watch.diff import ALERT_COLUMNS, AlertKind, GrowthRule, compare_flags, gone_flags
from pipeline.watch.params_text import with_fetch_end
from pipeline.watch.record import WatchResult, imagery_until, record_watch
from pipeline.watch.report import RunAlerts, atom_feed, digest_markdown
from pipeline.watch.state import last_snapshot

__all__ = ["ALERT_COLUMNS", "AlertKind", "GrowthRule", "compare_flags", "gone_flags", "with_fetch_end",
           "WatchResult", "imagery_until", "record_watch", "RunAlerts", "atom_feed", "digest_markdown",
           "last_snapshot"]
