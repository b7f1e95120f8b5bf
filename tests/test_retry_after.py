"""Retry-After as CRMs and proxies send it: seconds or an HTTP date, and values no queue should obey."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hub.http import MAX_RETRY_AFTER_SECONDS, retry_after_seconds

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        (" 1.5 ", 1.5),
        ("-5", 0.0),
        ("Sat, 05 Dec 2026 12:02:00 GMT", 120.0),
        ("Sat, 05 Dec 2026 11:00:00 GMT", 0.0),
        ("999999999", MAX_RETRY_AFTER_SECONDS),  # days: the hub asks again after an hour
        ("Fri, 31 Dec 9999 23:59:59 GMT", MAX_RETRY_AFTER_SECONDS),
        ("nan", None),
        ("inf", None),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_is_read_and_bounded(header: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(header, now=NOW) == seconds
