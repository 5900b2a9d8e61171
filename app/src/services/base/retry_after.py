"""Retry-After: parsing (delta-seconds or an HTTP-date, RFC 9110 §10.2.3) and the header we send.

An upstream's value is capped at MAX_RETRY_AFTER_SECONDS: passed on verbatim, a value such as
86400000 or a number of 301 digits would be a promise nobody can keep, and a burden on every
client that parses it.
"""

import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

# A day: the longest wait an upstream's limits plausibly ask for (a daily quota).
MAX_RETRY_AFTER_SECONDS = 86_400


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait, between 0 and MAX_RETRY_AFTER_SECONDS, or None when the header is
    absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = (moment - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def retry_after_header(seconds: float | None) -> str:
    """Whole seconds, from 1 to MAX_RETRY_AFTER_SECONDS. Rounded up: telling a client to come
    back early only earns it another refusal."""
    if seconds is None or seconds != seconds:
        return "1"
    return str(
        min(max(1, math.ceil(min(seconds, MAX_RETRY_AFTER_SECONDS))), MAX_RETRY_AFTER_SECONDS)
    )
