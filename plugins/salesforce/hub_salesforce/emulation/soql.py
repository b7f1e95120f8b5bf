"""The SOQL subset the emulator understands; anything else is refused with MALFORMED_QUERY, as an org would.

Supported: ``SELECT a, b, Rel.c FROM Object [WHERE x op v (AND|OR) ...] [ORDER BY f [ASC|DESC], ...]
[LIMIT n]`` with ``= != < <= > >= IN``, string literals (escaped), numbers, booleans, null and dateTime
literals. Mixing AND and OR without parentheses is an error in SOQL, and so it is here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')|(?P<dt>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z)"
    r"|(?P<num>-?\d+(?:\.\d+)?)|(?P<op>!=|<=|>=|=|<|>)|(?P<punct>[(),])|(?P<word>[A-Za-z_][\w.]*))"
)
_UNESCAPE = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", "'": "'", '"': '"', "\\": "\\"}


class SoqlError(ValueError):
    """An unsupported or malformed query; ``code`` is the errorCode Salesforce would answer."""

    def __init__(self, message: str, code: str = "MALFORMED_QUERY") -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Condition:
    field: str
    op: str
    value: Any


@dataclass
class Query:
    fields: list[str]
    sobject: str
    conditions: list[Condition] = field(default_factory=list)
    joiner: str = "AND"
    order_by: list[tuple[str, bool]] = field(default_factory=list)
    limit: int | None = None


def _unescape(literal: str) -> str:
    body = literal[1:-1]
    out, i = [], 0
    while i < len(body):
        if body[i] == "\\":
            nxt = body[i + 1] if i + 1 < len(body) else ""
            if nxt not in _UNESCAPE:
                raise SoqlError(f"invalid escape sequence \\{nxt}")
            out.append(_UNESCAPE[nxt])
            i += 2
        else:
            out.append(body[i])
            i += 1
    return "".join(out)


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise SoqlError(f"unexpected token at: {text[pos : pos + 20]!r}")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    return tokens


def _value(kind: str, text: str) -> Any:
    if kind == "str":
        return _unescape(text)
    if kind == "dt":
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    if kind == "num":
        return float(text) if "." in text else int(text)
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "null":
        return None
    raise SoqlError(f"unexpected value {text!r}")


def parse(text: str) -> Query:
    tokens = _tokens(text)
    pos = 0

    def peek(word: str | None = None) -> bool:
        if pos >= len(tokens):
            return False
        return word is None or tokens[pos][1].upper() == word

    def take() -> tuple[str, str]:
        nonlocal pos
        if pos >= len(tokens):
            raise SoqlError("unexpected end of query")
        pos += 1
        return tokens[pos - 1]

    if take()[1].upper() != "SELECT":
        raise SoqlError("a query starts with SELECT")
    fields = []
    while True:
        kind, name = take()
        if kind != "word" or name.upper() in ("FROM", "COUNT"):
            raise SoqlError(f"unsupported field list near {name!r}")
        fields.append(name)
        if peek(","):
            take()
            continue
        break
    if take()[1].upper() != "FROM":
        raise SoqlError("expected FROM")
    kind, sobject = take()
    if kind != "word" or "." in sobject:
        raise SoqlError("expected an object name after FROM")
    query = Query(fields=fields, sobject=sobject)
    if peek("WHERE"):
        take()
        joiners = set()
        while True:
            kind, name = take()
            if kind != "word":
                raise SoqlError(f"expected a field name, not {name!r}")
            op_kind, op = take()
            if op_kind == "word" and op.upper() == "IN":
                if take()[1] != "(":
                    raise SoqlError("IN takes a parenthesised list")
                values = []
                while True:
                    values.append(_value(*take()))
                    sep = take()[1]
                    if sep == ")":
                        break
                    if sep != ",":
                        raise SoqlError("malformed IN list")
                query.conditions.append(Condition(name, "IN", values))
            elif op_kind == "op":
                query.conditions.append(Condition(name, op, _value(*take())))
            else:
                raise SoqlError(f"unsupported operator {op!r}")
            if peek("AND") or peek("OR"):
                joiners.add(take()[1].upper())
                continue
            break
        if len(joiners) > 1:
            raise SoqlError("mixing AND and OR requires parentheses")
        query.joiner = joiners.pop() if joiners else "AND"
    if peek("ORDER"):
        take()
        if take()[1].upper() != "BY":
            raise SoqlError("expected ORDER BY")
        while True:
            kind, name = take()
            if kind != "word":
                raise SoqlError("expected a field to order by")
            descending = False
            if peek("ASC") or peek("DESC"):
                descending = take()[1].upper() == "DESC"
            query.order_by.append((name, descending))
            if peek(","):
                take()
                continue
            break
    if peek("LIMIT"):
        take()
        kind, number = take()
        if kind != "num":
            raise SoqlError("LIMIT takes a number")
        query.limit = int(number)
    if pos != len(tokens):
        raise SoqlError(f"unexpected {tokens[pos][1]!r}")
    return query


def comparable(value: Any) -> Any:
    """Stored values as the query compares them: dateTimes as datetimes."""
    if isinstance(value, str) and re.match(r"^\d{4}-\d{2}-\d{2}T", value):
        text = value.replace("Z", "+00:00")
        if re.search(r"[+-]\d{4}$", text):
            text = text[:-2] + ":" + text[-2:]
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return value
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return value


def matches(condition: Condition, value: Any) -> bool:
    left, op = comparable(value), condition.op
    if op == "IN":
        return left in [comparable(v) for v in condition.value]
    right = comparable(condition.value)
    if op == "=":
        return bool(left == right)
    if op == "!=":
        return bool(left != right)
    if left is None or right is None:
        return False
    try:
        return bool({"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[op])
    except TypeError:
        raise SoqlError(
            f"cannot compare {condition.field} with {condition.value!r}", "INVALID_QUERY_FILTER_OPERATOR"
        ) from None
