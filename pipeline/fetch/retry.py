"""Retrying HTTP calls to imagery services: 429/5xx backoff with jitter, ``Retry-After``, bounded attempts.

Only temporary failures are retried: HTTP 429 (rate limit), 500, 502, 503, 504 and connection errors /
timeouts. Other 4xx answers fail at once. After ``max_attempts`` the caller gets **one**
:class:`~pipeline.errors.FetchError` naming the service, the URL and the last HTTP status.

Delays (seconds) grow as ``backoff_s * factor**k`` with ±``jitter`` (fraction) randomisation, capped at
``max_delay_s``; a ``Retry-After`` header is honoured as a lower bound (seconds, or an HTTP date; Sentinel
Hub sends milliseconds, see ``retry_after_unit``).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import requests

from pipeline.errors import ConfigError, FetchError

__all__ = ["RETRYABLE_STATUS", "RetryPolicy", "parse_retry_after", "send_with_retry"]

LOGGER = logging.getLogger(__name__)

RETRYABLE_STATUS: frozenset[int] = frozenset({429, 500, 502, 503, 504})
"""HTTP statuses treated as temporary."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait between attempts.

    ``max_attempts`` counts every request sent (1 = no retry). ``retry_after_unit`` is ``"s"`` (RFC 9110)
    or ``"ms"`` (Sentinel Hub's rate-limit header). ``sleep`` is injectable for tests.
    """

    max_attempts: int = 5
    backoff_s: float = 1.0
    factor: float = 2.0
    max_delay_s: float = 60.0
    jitter: float = 0.25
    retry_after_unit: str = "s"
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError(f"retries: max_attempts must be at least 1, got {self.max_attempts}")
        if self.retry_after_unit not in ("s", "ms"):
            raise ConfigError(f"retries: retry_after_unit must be 's' or 'ms', got {self.retry_after_unit!r}")

    def delay(self, retry_index: int, retry_after: str | None = None) -> float:
        """Seconds to wait before retry number ``retry_index`` (0-based), honouring ``Retry-After``."""
        base = min(self.backoff_s * self.factor**retry_index, self.max_delay_s)
        if self.jitter and base > 0:
            base *= 1 + random.uniform(-self.jitter, self.jitter)
        hinted = parse_retry_after(retry_after, millis=self.retry_after_unit == "ms")
        if hinted is not None:
            return max(base, min(hinted, self.max_delay_s * 10))
        return max(base, 0.0)


def parse_retry_after(value: str | None, *, millis: bool = False) -> float | None:
    """A ``Retry-After`` header value in seconds (number, or HTTP date), or ``None`` if absent/unreadable."""
    if value is None or not str(value).strip():
        return None
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.timezone.utc)
        return max((when - dt.datetime.now(dt.timezone.utc)).total_seconds(), 0.0)
    return max(number / 1000.0 if millis else number, 0.0)


def _server_message(resp: requests.Response) -> str:
    """A short, single-line server message (JSON ``error.message``/``message``/``detail`` or text)."""
    try:
        body = resp.json()
    except ValueError:
        text = (resp.text or "").strip().replace("\n", " ")
        return text[:200]
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            for key in ("message", "detail", "error_description", "reason"):
                if err.get(key):
                    return str(err[key])[:200]
        elif isinstance(err, str):
            return err[:200]
    return str(body)[:200]


def send_with_retry(
    send: Callable[[], requests.Response],
    *,
    service: str,
    url: str,
    policy: RetryPolicy,
    on_unauthorized: Callable[[], None] | None = None,
) -> requests.Response:
    """Call ``send()`` until it answers 2xx/3xx, retrying temporary failures under ``policy``.

    Parameters
    ----------
    send
        Sends one request and returns the response (must not raise for HTTP errors).
    service, url
        Named in log lines and in the error (never include credentials in ``url``).
    policy
        Attempts and delays.
    on_unauthorized
        Called once on the first HTTP 401 (e.g. to drop an expired OAuth token); the request is then sent
        again without counting as a retry. A second 401 fails.

    Raises
    ------
    FetchError
        A non-temporary HTTP error, or temporary errors on every one of ``policy.max_attempts`` attempts.
    """
    refreshed = False
    attempt = 0
    last: str = ""
    while attempt < policy.max_attempts:
        try:
            resp = send()
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError) as exc:  # unreachable, or cut mid-download
            last = f"{type(exc).__name__}"
            attempt += 1
            if attempt >= policy.max_attempts:
                raise FetchError(
                    f"{service}: the connection to {url} failed on {attempt} attempt(s) ({last}: unreachable, "
                    "or the download was cut short); check the network and the service URL, then run again "
                    "(finished scenes are cached)"
                ) from exc
            wait = policy.delay(attempt - 1)
            LOGGER.warning("%s: %s on %s, retry %d/%d in %.2fs", service, last, url, attempt,
                           policy.max_attempts - 1, wait)
            policy.sleep(wait)
            continue
        status = resp.status_code
        if status < 400:
            return resp
        if status == 401 and on_unauthorized is not None and not refreshed:
            refreshed = True
            LOGGER.info("%s: HTTP 401 on %s, refreshing the access token", service, url)
            on_unauthorized()
            continue
        message = _server_message(resp)
        if status not in RETRYABLE_STATUS:
            hint = {
                400: "the request was rejected; check bands, collection and dates",
                401: "authentication failed; check SH_CLIENT_ID / SH_CLIENT_SECRET or the sentinelhub profile",
                403: "access denied; check the account's permissions and quota",
                404: "not found; check the base URL and collection name",
            }.get(status, "check the request and the service URL")
            raise FetchError(f"{service} answered HTTP {status} for {url}: {message or resp.reason}; {hint}")
        attempt += 1
        if attempt >= policy.max_attempts:
            raise FetchError(
                f"{service} answered HTTP {status} ({message or resp.reason}) for {url} on all {attempt} "
                f"attempt(s); the service is overloaded or failing: wait and run again (finished scenes are "
                "cached), or raise max_retries/backoff"
            )
        wait = policy.delay(attempt - 1, resp.headers.get("Retry-After"))
        LOGGER.warning(
            "%s: HTTP %d on %s, retry %d/%d in %.2fs", service, status, url, attempt, policy.max_attempts - 1, wait
        )
        policy.sleep(wait)
    raise FetchError(f"{service}: no attempt left for {url}")  # pragma: no cover (loop always returns/raises)
