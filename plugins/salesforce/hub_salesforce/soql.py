"""Building SOQL safely: literals are escaped, datetimes written the way SOQL wants them.

SOQL is never assembled from raw input: every value goes through ``quote`` (strings) or ``datetime_literal``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime

_ESCAPES = {
    "\\": "\\\\",
    "'": "\\'",
    '"': '\\"',
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
}


#: a record id: 15 case-sensitive characters, or 18 with the case-insensitive checksum
_RECORD_ID = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")


def is_record_id(value: object) -> bool:
    """Whether ``value`` has the shape of a Salesforce record id; anything else never reaches a query."""
    return isinstance(value, str) and _RECORD_ID.match(value) is not None


def quote(value: str) -> str:
    """A SOQL string literal: quotes, backslashes and control characters escaped."""
    return "'" + "".join(_ESCAPES.get(ch, ch) for ch in value) + "'"


def quote_list(values: Iterable[str]) -> str:
    """``('a', 'b')`` for an IN clause."""
    return "(" + ", ".join(quote(v) for v in values) + ")"


def datetime_literal(moment: datetime) -> str:
    """A SOQL dateTime literal (unquoted, UTC): ``2024-05-01T10:00:00Z``."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_datetime(value: object) -> datetime | None:
    """A Salesforce dateTime (``2024-05-01T10:00:00.000+0000`` or ``...Z``) as an aware UTC datetime."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    elif len(text) > 5 and text[-5] in "+-" and text[-3] != ":":
        text = text[:-2] + ":" + text[-2:]
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def select(
    fields: Iterable[str], sobject: str, where: str = "", order_by: str = "", limit: int | None = None
) -> str:
    """A SELECT statement from parts that were escaped already."""
    text = f"SELECT {', '.join(dict.fromkeys(fields))} FROM {sobject}"  # noqa: S608 - values are quoted by quote()
    if where:
        text += f" WHERE {where}"
    if order_by:
        text += f" ORDER BY {order_by}"
    if limit is not None:
        text += f" LIMIT {int(limit)}"
    return text
