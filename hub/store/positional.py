"""A compiled statement's parameters in the driver's positional order, for the paths that skip SQLAlchemy's
execution (``hub.store.driver_reads``, ``hub.store.bulk``).

SQLAlchemy turns a caller's named parameters into the driver's tuple at every execution, running each
type's bind processor (the hub's types clean text and store datetimes as UTC). Done once per statement
here, each execution is one tuple built from the caller's values.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler

Convert = Callable[[Any], Any]


@dataclass(frozen=True)
class Positional:
    sql: str
    #: per position: the caller's key (None: a value the statement carries itself, already converted),
    #: that value, and the type's bind processor for the caller's value
    slots: tuple[tuple[str | None, Any, Convert | None], ...]

    def values(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        """The driver's parameters for the caller's ``params``."""
        return tuple(
            fixed if key is None else params[key] if convert is None else convert(params[key])
            for key, fixed, convert in self.slots
        )


def converted_rows(
    converts: Sequence[Convert | None], rows: Iterable[Sequence[Any]]
) -> list[tuple[Any, ...]]:
    """Rows of the driver as SQLAlchemy would give them: each a tuple in the columns' order, each value
    through its column type's result processor (``converts``, in the statement's order)."""
    if not any(converts):
        return [tuple(row) for row in rows]
    return [
        tuple(
            value if convert is None else convert(value) for convert, value in zip(converts, row, strict=True)
        )
        for row in rows
    ]


def converted(columns: Sequence[tuple[str, Convert | None]], values: Iterable[Any]) -> dict[str, Any]:
    """A row of the driver as SQLAlchemy would give it: by column name, each value through its column type's
    result processor (``columns``: each column's name and processor, in the statement's order)."""
    return {
        name: convert(value) if convert is not None else value
        for (name, convert), value in zip(columns, values, strict=True)
    }


def positional(compiled: SQLCompiler, dialect: Dialect, keys: Collection[str] | None = None) -> Positional:
    """``compiled`` with its parameters in order: those named in ``keys`` come from the caller, the others
    are the values compiled into the statement. Without ``keys`` the caller's are those without a value of
    their own (``bindparam("name")``; a literal compared with, ``column == "survey"``, is bound with its
    own). A list parameter (``expanding``) changes the statement with its length, so it is refused."""
    slots: list[tuple[str | None, Any, Convert | None]] = []
    for name in compiled.positiontup or []:
        bind = compiled.binds[name]
        if bind.expanding:
            raise ValueError(f"{name}: a list parameter makes a new statement for each length")
        convert = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if bind.required if keys is None else name in keys:
            slots.append((name, None, convert))
        else:
            value = bind.effective_value
            slots.append((None, value if convert is None else convert(value), None))
    return Positional(compiled.string, tuple(slots))
