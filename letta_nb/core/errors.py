"""letta_nb's errors: each one reads as one clear line, never carries a secret.

Front ends print ``str(err)`` instead of a traceback for any `LettaNbError`.
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime


class LettaNbError(Exception):
    """Base class: a problem the user can act on, described in one line."""

    hint: str = ""

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        if hint:
            self.hint = hint

    def __str__(self) -> str:
        text = " ".join(str(self.args[0]).split()) if self.args else type(self).__name__
        return f"{text} ({self.hint})" if self.hint else text


class ConfigurationError(LettaNbError):
    """Bad arguments, unknown options, missing connection."""


class ServerUnavailable(LettaNbError):
    """The server cannot be reached (down, wrong URL, timed out)."""


class Unreachable(ServerUnavailable):
    """Nothing answered at the server's address: no request reached it, so re-sending is safe."""


class RateLimited(ServerUnavailable):
    """429: the server refused the request for now (Letta Cloud's rate limits).

    Nothing was started, so the same request may be sent again after `retry_after` seconds
    (the server's `Retry-After`, None when it gave none).
    """

    def __init__(self, message: str, *, retry_after: float | None = None, hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.retry_after = retry_after


#: The longest `Retry-After` honoured (a server asking for more is waited on in steps).
MAX_RETRY_AFTER = 300.0


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """A `Retry-After` header (delay-seconds or an HTTP date) as seconds from `now` (epoch s).

    None when absent or unreadable; never negative; capped at `MAX_RETRY_AFTER`.
    """
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(text).timestamp() - now
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if seconds != seconds:  # NaN
        return None
    return min(MAX_RETRY_AFTER, max(0.0, seconds))


class Unauthorized(LettaNbError):
    """401/403: the API key (or embedded-server token) was refused."""


class NotFound(LettaNbError):
    """404: unknown agent, run or resource."""


class Conflict(LettaNbError):
    """409: the agent is busy or waiting for an approval."""


class PendingApproval(Conflict):
    """409 PENDING_APPROVAL: answer the pending tool call before sending a new message."""


class ConversationBusy(Conflict):
    """409: another run holds the conversation (one run at a time); `run_id` is that run's.

    The run chain attaches to that run instead of failing (the message is not sent)."""

    def __init__(self, message: str, *, run_id: str, hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.run_id = run_id


class BatchInUse(Conflict):
    """Another kernel (process) is running this batch: one sender per batch, so no item gets a
    second conversation. Nothing was sent; the other kernel's results land in the same store."""


class Expired(LettaNbError):
    """410: the run's stream is past the server's retention and cannot be replayed."""


class ApprovalError(LettaNbError):
    """An approval that cannot be sent: already answered, nothing pending, wrong tool call."""


class RunFailed(LettaNbError):
    """The run ended with an error frame; the message is the server's error_message."""


class StreamInterrupted(LettaNbError):
    """A stream broke (read error, timeout, EOF before a terminal frame): resume, don't fail."""


class StreamTimeout(StreamInterrupted):
    """A read timed out: nothing (not even a keepalive) arrived for the read timeout."""


class SeqGap(LettaNbError):
    """A frame arrived past a hole in its run's seqs: frames `after + 1 .. seq - 1` never came.

    Raised by `SeqTracker.accept` so no reader can fold a run with a hole by accident: readers
    re-read from `after` and, if the server sends the same hole again, record it
    (`SeqTracker.skip_hole`) and report the run incomplete.
    """

    def __init__(self, run_id: str | None, after: int, seq: int) -> None:
        super().__init__(f"run {run_id}: seqs {after + 1}..{seq - 1} are missing (got {seq})")
        self.run_id = run_id
        self.after = after
        self.seq = seq
