"""Keep credentials and OAuth tokens out of log records.

``requests_oauthlib`` logs the token request body (with the client secret) and the token response at
DEBUG level. :func:`redacting_logs` installs, for the duration of a fetch, a filter on the loggers that
create such records which rewrites them with every known secret and anything that looks like a token
replaced by ``***``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

__all__ = ["MASK", "redact", "redacting_logs"]

MASK = "***"
_TOKEN_RE = re.compile(
    r"(?P<key>access_token|refresh_token|id_token|client_secret|client_id|Authorization)"
    r"(?P<sep>['\"]?\s*[:=]\s*['\"]?(?:Bearer\s+)?)(?P<val>[^'\"&,\s}]+)",
    re.IGNORECASE,
)
_BEARER_RE = re.compile(r"Bearer\s+[A-Za-z0-9._~+/=-]+")
# loggers (and their children) whose records can carry secrets
_PREFIXES = ("requests_oauthlib", "oauthlib", "urllib3", "sentinelhub", "requests", "pystac_client", "pipeline")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with the given secrets, ``key=value`` token fields and bearer tokens masked."""
    for s in secrets:
        if s:
            text = text.replace(s, MASK)
    text = _TOKEN_RE.sub(lambda m: f"{m.group('key')}{m.group('sep')}{MASK}", text)
    return _BEARER_RE.sub(f"Bearer {MASK}", text)


class _RedactFilter(logging.Filter):
    def __init__(self, secrets: tuple[str, ...]) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # a broken format string: keep only the template
            msg = str(record.msg)
        clean = redact(msg, self.secrets)
        if clean != msg or record.args:
            record.msg, record.args = clean, ()
        return True


def _target_loggers() -> list[logging.Logger]:
    names = [n for n in logging.root.manager.loggerDict if n.split(".")[0] in _PREFIXES]
    names += list(_PREFIXES) + ["requests_oauthlib.oauth2_session", "sentinelhub.download.session"]
    return [logging.getLogger(n) for n in sorted(set(names))]


@contextmanager
def redacting_logs(secrets: Iterable[str] = ()) -> Iterator[None]:
    """Mask ``secrets`` and token-like values in records of HTTP/OAuth loggers while the block runs."""
    filt = _RedactFilter(tuple(s for s in secrets if s))
    loggers = _target_loggers()
    for lg in loggers:
        lg.addFilter(filt)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeFilter(filt)
