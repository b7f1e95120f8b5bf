"""``column IN <a list given at execution>`` as one statement whatever the list's length.

SQLAlchemy's list parameter (``bindparam(..., expanding=True)``) renders the statement again at every
execution, one placeholder per item, so each length is another SQL text: more work per execution, and on
PostgreSQL another prepared statement per length (asyncpg keeps 100 per connection; the answer batches'
five list reads with lengths of 1 to 32 did not fit). ``one_of`` binds the whole list as one PostgreSQL
array (``= ANY(:ids)``): one text, prepared once per connection. SQLite binds it as one JSON array read
by ``json_each`` (``IN (SELECT value FROM json_each(:ids))``): one text too, which the answers' batches run
straight through the driver (``hub.store.sqlite_reads``) and SQLAlchemy runs without rendering it again at
every execution. The values are the hub's own keys (ids, hashes, connector names): numbers and text.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import JSON, Boolean, ColumnElement, Subquery, Table, any_, bindparam, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import InternalTraversal

if TYPE_CHECKING:
    from sqlalchemy.sql.visitors import _TraverseInternalsType

T = TypeVar("T")

#: the most values one list parameter carries: a bound on one statement's size (each database binds the list as
#: one parameter, but a caller's list may be as long as a table)
PER_STATEMENT = 5000


def in_chunks(values: Sequence[T], size: int = PER_STATEMENT) -> Iterator[Sequence[T]]:
    """``values`` in runs of at most ``size``, one statement's list each."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


class OneOf(ColumnElement[bool]):
    """``column`` is one of the values of the list parameter ``name`` (see the module's docstring)."""

    type = Boolean()
    inherit_cache = True
    _is_implicitly_boolean = True
    _traverse_internals: _TraverseInternalsType = [  # noqa: RUF012 (SQLAlchemy's own declaration)
        ("column", InternalTraversal.dp_clauseelement),
        ("name", InternalTraversal.dp_string),
    ]

    def __init__(self, column: ColumnElement[Any], name: str) -> None:
        self.column = column
        self.name = name


def one_of(column: ColumnElement[Any] | InstrumentedAttribute[Any], name: str) -> OneOf:
    """``column IN :name`` for a list given as the parameter ``name`` at execution (a table's column or a
    mapped class's attribute)."""
    return OneOf(column.__clause_element__() if isinstance(column, InstrumentedAttribute) else column, name)


@compiles(OneOf)
def _listed(element: OneOf, compiler: SQLCompiler, **kw: Any) -> str:
    return str(compiler.process(element.column.in_(bindparam(element.name, expanding=True)), **kw))


@compiles(OneOf, "sqlite")
def _json_each(element: OneOf, compiler: SQLCompiler, **kw: Any) -> str:
    listed = func.json_each(bindparam(element.name, type_=JSON())).table_valued("value")
    return str(compiler.process(element.column.in_(select(listed.c.value)), **kw))


@compiles(OneOf, "postgresql")
def _any(element: OneOf, compiler: SQLCompiler, **kw: Any) -> str:
    array = bindparam(element.name, type_=ARRAY(element.column.type))
    return str(compiler.process(element.column == any_(array), **kw))


def rows_of_lists(table: Table, names: Sequence[str], prefix: str) -> Subquery:
    """Rows given as one list per column, on PostgreSQL: the list parameters ``<prefix><name>``, each bound as
    one array of the column's type and unnested beside the others (row k is every list's k-th value), in the
    lists' order. For the writes of many rows inside one statement (data-modifying ``WITH`` parts), where an
    executemany would be a statement, and a round trip, of its own."""
    return select(
        *(
            func.unnest(bindparam(f"{prefix}{name}", type_=ARRAY(table.c[name].type))).label(name)
            for name in names
        )
    ).subquery(prefix.rstrip("_"))


def lists_of_rows(
    rows: Sequence[Mapping[str, Any]], names: Sequence[str], prefix: str
) -> dict[str, list[Any]]:
    """The parameters of ``rows_of_lists`` for ``rows`` (each a mapping that holds every one of ``names``)."""
    return {f"{prefix}{name}": [row[name] for row in rows] for name in names}
