"""What one request of a bench recorded: times, token counts, the server's own timings, or
the kind of error that ended it."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

# Error kinds: "http_<status>" for an HTTP error answer, or one of these.
TIMEOUT = "timeout"
CONNECTION = "connection"
MALFORMED = "malformed"  # the answer was not the stream the API promises
SERVER_ERROR = "server_error"  # the stream itself carried an error object
EMPTY = "empty"  # the answer completed without one output token


def http_error(status: int) -> str:
    """The error kind of an HTTP status answer."""
    return f"http_{status}"


@dataclass(frozen=True)
class ServerTimings:
    """llama-server's own `timings` from its last chunk (validated on reading)."""

    prompt_n: int
    prompt_ms: float
    prompt_per_second: float
    predicted_per_second: float


@dataclass(frozen=True)
class RequestSample:
    """One request: seconds on the runner's monotonic clock, relative to the level's start."""

    start_s: float
    end_s: float
    first_token_s: float | None = None  # the first chunk with content
    token_times_s: tuple[float, ...] = field(default=())  # every chunk with content
    output_tokens: int = 0  # from usage, else the chunks with content
    prompt_tokens: int | None = None  # from usage
    timings: ServerTimings | None = None
    error: str | None = None  # None: the request completed

    @property
    def ok(self) -> bool:
        """Completed, with at least one output token."""
        return self.error is None and self.first_token_s is not None

    @property
    def ttft_s(self) -> float | None:
        """Time to first token."""
        return None if self.first_token_s is None else self.first_token_s - self.start_s

    @property
    def e2e_s(self) -> float:
        """End-to-end seconds."""
        return self.end_s - self.start_s

    def inter_token_s(self) -> list[float]:
        """Gaps between consecutive content chunks."""
        t = self.token_times_s
        return [b - a for a, b in itertools.pairwise(t)]

    def stream_tokens_per_s(self) -> float | None:
        """Decode speed this stream saw: tokens after the first over the time after it."""
        if self.first_token_s is None or self.output_tokens < 2:
            return None
        last = self.token_times_s[-1] if self.token_times_s else self.end_s
        span = (last if last > self.first_token_s else self.end_s) - self.first_token_s
        return (self.output_tokens - 1) / span if span > 0 else None
