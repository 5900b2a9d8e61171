"""The one clock of the service, and what it records about an upstream call.

Every duration the service reports is a difference of two `now()` readings. The upstream
client takes them where bytes cross the socket (see transport.py), so a latency belongs to the
upstream and not to the JSON parsing, validation or scheduling that happen around it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

now = time.perf_counter


@dataclass(slots=True)
class Timing:
    """One call to the upstream, retries included, in `now()` seconds.

    The caller creates it and the client fills it in, also when the call fails, so a failed
    benchmark request still records how long it took and how many attempts it made.
    """

    began: float = 0.0  # the call was made (before the first attempt)
    sent: float = 0.0  # the final attempt's request was handed to the socket
    first_content: float | None = None  # the bytes carrying the first content token arrived
    ended: float = 0.0  # the final attempt's last byte arrived (or it failed)
    attempts: int = 0
    # When a list, a stream adds the arrival of every chunk that carried content (for ITL).
    content_arrivals: list[float] | None = field(default=None)

    @property
    def latency(self) -> float:
        """The final attempt alone: request sent to last byte received."""
        return max(self.ended - self.sent, 0.0)

    @property
    def ttft(self) -> float | None:
        """The final attempt's time to first token, on the same clock as `latency`."""
        return None if self.first_content is None else max(self.first_content - self.sent, 0.0)

    @property
    def total(self) -> float:
        """The whole call: every attempt and every wait between them."""
        return max(self.ended - self.began, 0.0)


@dataclass(slots=True)
class UpstreamCall:
    """What a request's route learned of its upstream call, for its log line and metrics: the
    route fills it in as it goes, the request log reads it once the answer is sent."""

    model: str
    timing: Timing = field(default_factory=Timing)
    provider: str | None = None
    # An upstream failure after the answer's status was sent (a stream that broke mid-way).
    failure: BaseException | None = None
