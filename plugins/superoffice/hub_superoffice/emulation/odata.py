"""Archive lists (``GET /api/v1/Ticket?$select=...&$filter=...``) over the emulated tenant.

Only the columns CX Hub uses are offered, and anything else is refused, as the real archive refuses an
unknown column. Two behaviours are deliberately the unforgiving reading of what SuperOffice documents:
``after``/``before`` compare whole days in the tenant's time zone, and date-times in rows are the tenant's
local time without an offset ("dates are always returned as ISO strings").

``$filter`` takes what SuperOffice documents for archive restriction strings: ``column op value`` terms
combined with ``and`` and ``or`` (``and`` binds tighter) and grouped with brackets, and the list operators
``oneOf``/``in``/``notOneOf`` with a bracketed list - on int columns only, because the documented operators
of a string column are ``begins``, ``contains``, ``is``, ``isNot``, ``notBegins`` and ``notContains`` (plus
``eq``/``ne``): a list operator on a text column is refused (the unforgiving reading).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from hub_superoffice.emulation.store import TICKET_STATUSES, ApiError, Clock, Store

_TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:[^']|'')*')|(?P<number>-?\d+(?:\.\d+)?)\b|(?P<bracket>[(),])"
    r"|(?P<word>[A-Za-z_][\w/.:]*))"
)
_LIST_OPERATORS = {"oneof": "oneof", "in": "oneof", "notoneof": "notoneof"}
_OPERATOR_ALIASES = {
    "equals": "eq",
    "unequals": "ne",
    "greater": "gt",
    "less": "lt",
    "is": "eq",
    "isnot": "ne",
}


@dataclass(frozen=True)
class Column:
    """``kind``: int, string, datetime, or digits (a phone number, compared on its digits)."""

    kind: str


INT, STRING, DATETIME, DIGITS = Column("int"), Column("string"), Column("datetime"), Column("digits")

Row = dict[str, Any]


@dataclass(frozen=True)
class Archive:
    entity: str
    primary_key: str
    columns: dict[str, Column]


TICKETS = Archive(
    "ticket",
    "ticketId",
    {
        "ticketId": INT,
        "title": STRING,
        "closedAt": DATETIME,
        "createdAt": DATETIME,
        "lastChanged": DATETIME,
        "status": STRING,
        "personId": INT,
    },
)
SALES = Archive(
    "sale",
    "saleId",
    {
        "saleId": INT,
        "heading": STRING,
        "saleStatus": STRING,
        "date": DATETIME,
        "updatedDate": DATETIME,
        "personId": INT,
    },
)
PERSONS = Archive(
    "person",
    "personId",
    {
        "personId": INT,
        "firstName": STRING,
        "lastName": STRING,
        "email/emailAddress": STRING,
        "personMobilePhone/formattedNumber": DIGITS,
    },
)
MESSAGES = Archive(
    "ticketmessage",
    "ticketMessageId",
    {"ticketMessageId": INT, "ticketId": INT, "messageId": STRING, "createdAt": DATETIME, "slevel": STRING},
)


def ticket_rows(store: Store) -> list[Row]:
    return [
        {
            "ticketId": t["TicketId"],
            "title": t["Title"],
            "closedAt": t["ClosedAt"],
            "createdAt": t["CreatedAt"],
            "lastChanged": t["LastChanged"],
            "status": TICKET_STATUSES[t["StatusId"]][1],
            "personId": t["PersonId"],
        }
        for t in store.data.tickets.values()
    ]


def sale_rows(store: Store) -> list[Row]:
    return [
        {
            "saleId": s["SaleId"],
            "heading": s["Heading"],
            "saleStatus": s["Status"],
            "date": s["Saledate"],
            "updatedDate": s["UpdatedDate"],
            "personId": s["PersonId"],
        }
        for s in store.data.sales.values()
    ]


def person_rows(store: Store) -> list[Row]:
    return [
        {
            "personId": p["PersonId"],
            "firstName": p["Firstname"],
            "lastName": p["Lastname"],
            "email/emailAddress": [e["Value"] for e in p["Emails"]],
            "personMobilePhone/formattedNumber": [m["Value"] for m in p["MobilePhones"]],
        }
        for p in store.data.persons.values()
    ]


def message_rows(store: Store, ticket_id: int) -> list[Row]:
    return [
        {
            "ticketMessageId": m["TicketMessageId"],
            "ticketId": m["TicketId"],
            "messageId": m["MessageId"],
            "createdAt": m["CreatedAt"],
            "slevel": m["Slevel"],
        }
        for m in store.data.messages.values()
        if m["TicketId"] == ticket_id
    ]


def dynamic_archive(store: Store, select: list[str]) -> tuple[Archive, list[Row]]:
    """The dynamic archive over one table: ``appointment`` or an extra table ``y_...``; columns ``table.col``."""
    tables = {name.split(".", 1)[0] for name in select if "." in name}
    if len(tables) != 1 or any("." not in name for name in select):
        raise ApiError(400, "Select columns as table.column, all from one table")
    table = tables.pop()
    if table == "appointment":
        columns = {"appointment_id": INT, "person_id": INT, "contact_id": INT}
        columns |= {
            d.name: _column_for(d.type)
            for d in store.fields["appointment"].values()
            if d.name.startswith("x_")
        }
        rows = [
            {
                "appointment_id": a["AppointmentId"],
                "person_id": a["PersonId"],
                "contact_id": a["ContactId"],
                **{name: a["ExtraFields"].get(name, "") for name in columns if name.startswith("x_")},
            }
            for a in store.data.appointments.values()
        ]
        key = "appointment_id"
    elif table in store.table_columns:
        columns = {"id": INT} | {d.name: _column_for(d.type) for d in store.table_columns[table].values()}
        rows = [
            {name: _typed(columns[name], row.get(name, "")) for name in columns}
            for row in store.data.extra[table].values()
        ]
        key = "id"
    else:
        raise ApiError(400, f"Unknown table '{table}'")
    prefixed = Archive(
        table, f"{table}.{key}", {f"{table}.{name}": column for name, column in columns.items()}
    )
    return prefixed, [{f"{table}.{name}": value for name, value in row.items()} for row in rows]


def _column_for(field_type: str) -> Column:
    return INT if field_type == "int" else STRING


def _typed(column: Column, value: Any) -> Any:
    if column is INT and value not in ("", None):
        return int(value)
    return value


def query(
    archive: Archive, rows: list[Row], params: dict[str, str], clock: Clock, base: str
) -> dict[str, Any]:
    """Apply ``$select``, ``$filter``, ``$orderBy``, ``$top``, ``$skip``: an ODataSlimResponse."""
    select = [name.strip() for name in params.get("$select", archive.primary_key).split(",") if name.strip()]
    for name in select:
        _column(archive, name)
    predicates = _parse_filter(archive, params.get("$filter", ""), clock)
    kept = [row for row in rows if all(predicate(row) for predicate in predicates)]
    for name, descending in reversed(_parse_order(archive, params.get("$orderBy", ""))):
        kept.sort(key=_sort_by(name), reverse=descending)
    skip, top = _int_param(params, "$skip", 0), _int_param(params, "$top", 50)
    page = kept[skip : skip + top]
    body: dict[str, Any] = {
        "odata.metadata": f"{base}/api/v1/archive$metadata",
        "value": [
            {
                "PrimaryKey": row[archive.primary_key],
                "EntityName": archive.entity,
                **{name: _display(row.get(name), clock) for name in select},
            }
            for row in page
        ],
    }
    if skip + top < len(kept):
        body["odata.nextLink"] = f"$skip={skip + top}&$top={top}"
    return body


def _int_param(params: dict[str, str], name: str, default: int) -> int:
    try:
        value = int(params.get(name, default))
    except ValueError:
        raise ApiError(400, f"{name} must be a number") from None
    if value < 0:
        raise ApiError(400, f"{name} must not be negative")
    return value


def _column(archive: Archive, name: str) -> Column:
    column = archive.columns.get(name)
    if column is None:
        raise ApiError(400, f"Unknown column '{name}' in archive {archive.entity}", "ArchiveException")
    return column


def _display(value: Any, clock: Clock) -> Any:
    if isinstance(value, list):
        value = value[0] if value else ""
    if isinstance(value, datetime):
        return clock.archive(value)
    return "" if value is None else value


def _sort_by(name: str) -> Callable[[Row], tuple[int, Any]]:
    return lambda row: _sort_key(row.get(name))


def _sort_key(value: Any) -> tuple[int, Any]:
    if isinstance(value, list):
        value = value[0] if value else None
    return (1, "") if value in (None, "") else (0, value)


def _parse_order(archive: Archive, text: str) -> list[tuple[str, bool]]:
    order = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, direction = part.partition(" ")
        _column(archive, name)
        if direction.strip().lower() not in ("", "asc", "desc"):
            raise ApiError(400, f"Bad $orderBy direction in '{part}'")
        order.append((name, direction.strip().lower() == "desc"))
    return order


Token = tuple[str, str]


class _FilterParser:
    """``expr := term (or term)*``, ``term := factor (and factor)*``, ``factor := ( expr ) | column op value``,
    ``value := 'text' | number | ( value, ... )``; keywords and operators in any case."""

    def __init__(self, archive: Archive, text: str, clock: Clock) -> None:
        self.archive = archive
        self.text = text
        self.clock = clock
        self.tokens = self._tokenize(text)
        self.pos = 0

    def parse(self) -> Callable[[Row], bool] | None:
        if not self.tokens:
            return None
        predicate = self._any()
        if self.pos != len(self.tokens):
            raise self._unreadable()
        return predicate

    def _unreadable(self) -> ApiError:
        return ApiError(400, f"Cannot read $filter clause '{self.text.strip()}'", "ArchiveException")

    def _tokenize(self, text: str) -> list[Token]:
        tokens: list[Token] = []
        pos = 0
        while pos < len(text) and not text[pos:].isspace():
            match = _TOKEN.match(text, pos)
            if match is None or match.lastgroup is None:
                raise self._unreadable()
            tokens.append((match.lastgroup, match.group(match.lastgroup)))
            pos = match.end()
        return tokens

    def _peek(self) -> Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _take(self, kind: str, text: str | None = None) -> str:
        token = self._peek()
        if token is None or token[0] != kind or (text is not None and token[1] != text):
            raise self._unreadable()
        self.pos += 1
        return token[1]

    def _keyword(self, word: str) -> bool:
        token = self._peek()
        if token is not None and token[0] == "word" and token[1].lower() == word:
            self.pos += 1
            return True
        return False

    def _any(self) -> Callable[[Row], bool]:
        parts = [self._all()]
        while self._keyword("or"):
            parts.append(self._all())
        return parts[0] if len(parts) == 1 else (lambda row: any(part(row) for part in parts))

    def _all(self) -> Callable[[Row], bool]:
        parts = [self._factor()]
        while self._keyword("and"):
            parts.append(self._factor())
        return parts[0] if len(parts) == 1 else (lambda row: all(part(row) for part in parts))

    def _factor(self) -> Callable[[Row], bool]:
        if self._peek() == ("bracket", "("):
            self.pos += 1
            inner = self._any()
            self._take("bracket", ")")
            return inner
        name = self._take("word")
        column = _column(self.archive, name)
        op = self._take("word").lower()
        if self._peek() == ("bracket", "("):
            self.pos += 1
            values = [self._value()]
            while self._peek() == ("bracket", ","):
                self.pos += 1
                values.append(self._value())
            self._take("bracket", ")")
            return _predicate(name, _list_comparison(column, op, values))
        if op in _LIST_OPERATORS:
            raise ApiError(400, f"Operator '{op}' takes a bracketed list", "ArchiveException")
        operand = self._value()
        return _predicate(name, _comparison(column, _OPERATOR_ALIASES.get(op, op), operand, self.clock))

    def _value(self) -> Any:
        token = self._peek()
        if token is None or token[0] not in ("string", "number"):
            raise self._unreadable()
        self.pos += 1
        kind, raw = token
        if kind == "string":
            return raw[1:-1].replace("''", "'")
        return float(raw) if "." in raw else int(raw)


def _parse_filter(archive: Archive, text: str, clock: Clock) -> list[Callable[[Row], bool]]:
    predicate = _FilterParser(archive, text, clock).parse()
    return [] if predicate is None else [predicate]


def _list_comparison(column: Column, op: str, values: list[Any]) -> Callable[[Any], bool]:
    kind = _LIST_OPERATORS.get(op)
    if kind is None:
        raise ApiError(400, f"Operator '{op}' does not take a list", "ArchiveException")
    if column is not INT:
        raise ApiError(400, f"Operator '{op}' does not fit a {column.kind} column")
    if not all(isinstance(value, int) for value in values):
        raise ApiError(400, f"Operator '{op}' on an int column takes whole numbers")
    wanted, negate = set(values), kind == "notoneof"
    return lambda value: value not in (None, "") and ((int(value) in wanted) != negate)


def _predicate(name: str, test: Callable[[Any], bool]) -> Callable[[Row], bool]:
    return lambda row: _any(row.get(name), test)


def _any(value: Any, test: Callable[[Any], bool]) -> bool:
    values = value if isinstance(value, list) else [value]
    return any(test(item) for item in values)


def _comparison(column: Column, op: str, operand: Any, clock: Clock) -> Callable[[Any], bool]:
    if column is INT:
        if not isinstance(operand, int) or op not in _ORDERING:
            raise ApiError(400, f"Operator '{op}' with {operand!r} does not fit an int column")
        return lambda value: value not in (None, "") and _ORDERING[op](int(value), operand)
    if column is DATETIME:
        return _date_comparison(op, operand, clock)
    if not isinstance(operand, str):
        raise ApiError(400, "Compare text columns with a quoted string")
    if column is DIGITS:
        wanted = _digits(operand)
        if op == "contains":
            return lambda value: bool(value) and wanted in _digits(str(value))
        if op == "eq":
            return lambda value: bool(value) and wanted == _digits(str(value))
    elif op in ("eq", "ne", "contains", "begins"):
        folded = operand.casefold()
        return {
            "eq": lambda value: str(value).casefold() == folded,
            "ne": lambda value: str(value).casefold() != folded,
            "contains": lambda value: folded in str(value).casefold(),
            "begins": lambda value: str(value).casefold().startswith(folded),
        }[op]
    raise ApiError(400, f"Operator '{op}' does not fit a {column.kind} column")


def _date_comparison(op: str, operand: Any, clock: Clock) -> Callable[[Any], bool]:
    if not isinstance(operand, str):
        raise ApiError(400, "Compare dates with a quoted ISO date")
    try:
        if op in ("after", "before", "date"):
            day = date.fromisoformat(operand[:10])
            compare: Callable[[date, date], bool] = {
                "after": operator.gt,
                "before": operator.lt,
                "date": operator.eq,
            }[op]
            return lambda value: isinstance(value, datetime) and compare(clock.local(value).date(), day)
        if op in _ORDERING:
            moment = datetime.fromisoformat(operand)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=clock.zone)
            return lambda value: isinstance(value, datetime) and _ORDERING[op](value, moment)
    except ValueError:
        raise ApiError(400, f"'{operand}' is not a date") from None
    raise ApiError(400, f"Operator '{op}' does not fit a date column")


_ORDERING: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())
