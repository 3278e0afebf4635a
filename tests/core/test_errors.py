"""Errors read as one line; a 429's Retry-After is read in both of its forms, bounded."""

from __future__ import annotations

from email.utils import formatdate

from letta_nb.core.errors import MAX_RETRY_AFTER, RateLimited, retry_after_seconds


def test_retry_after_in_seconds_or_as_an_http_date_bounded() -> None:
    now = 1_700_000_000.0
    assert retry_after_seconds("3", now) == 3.0
    assert retry_after_seconds(" 0.5 ", now) == 0.5
    assert retry_after_seconds(formatdate(now + 30, usegmt=True), now) == 30.0
    assert retry_after_seconds(formatdate(now - 30, usegmt=True), now) == 0.0  # past: now
    assert retry_after_seconds("-4", now) == 0.0
    assert retry_after_seconds("99999", now) == MAX_RETRY_AFTER
    for bad in (None, "", "soon", "nan"):
        assert retry_after_seconds(bad, now) is None


def test_a_rate_limit_is_one_line_with_its_wait() -> None:
    err = RateLimited("the server is rate limiting\n requests", retry_after=2.0)
    assert str(err) == "the server is rate limiting requests" and err.retry_after == 2.0
