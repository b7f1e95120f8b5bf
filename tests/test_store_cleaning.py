"""Text is stored the same way on every database: without NUL, a lone surrogate replaced, cut to its column.

The binding of text columns and the cleaning of JSON values take a short way for text with nothing to clean
(most of it); these pin down what both give, whatever way a value takes.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import DateTime
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.postgresql import asyncpg
from sqlalchemy.engine import Dialect

from hub.store.tables import CleanString, CleanText, UTCDateTime, clean_json, clean_text

DIALECTS = [sqlite.dialect(), asyncpg.dialect()]


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
def test_text_is_bound_without_nul_or_lone_surrogates_and_cut_to_its_column(dialect: Dialect) -> None:
    bind = CleanString(5).dialect_impl(dialect).bind_processor(dialect)
    assert bind is not None
    plain = "abc"
    assert bind(None) is None and bind(plain) is plain
    assert bind("a\x00bcdefg") == "abcde"
    assert bind("abcdefg") == "abcde"
    assert bind("é\ud800x") == "é\ufffdx"
    assert bind("\ud83d\ude00") == "\U0001f600"  # a pair of surrogates is its character
    text = CleanText().dialect_impl(dialect).bind_processor(dialect)
    assert text is not None
    assert text("x" * 10_000 + "\x00") == "x" * 10_000
    assert text("ünïcode") == "ünïcode"


@pytest.mark.parametrize("value", ["", "plain", "a\x00b", "é\udc00", "x" * 30, "ÿ" * 30 + "\x00"])
def test_binding_gives_what_clean_text_gives(value: str) -> None:
    dialect = sqlite.dialect()
    bind = CleanString(20).dialect_impl(dialect).bind_processor(dialect)
    assert bind is not None
    assert bind(value) == clean_text(value, 20)


def test_json_strings_and_keys_are_cleaned_at_every_depth() -> None:
    value = {
        "a\x00": "x\x00y",
        "nested": [1, "é\ud800", {"k\x00": ("\x00", None)}],
        "number": 2.5,
        "flag": True,
        "none": None,
        7: "seven",
    }
    assert clean_json(value) == {
        "a": "xy",
        "nested": [1, "é\ufffd", {"k": ["", None]}],
        "number": 2.5,
        "flag": True,
        "none": None,
        7: "seven",
    }
    assert clean_json("plain") == "plain" and clean_json(["\x00"]) == [""] and clean_json(3) == 3
    # two keys that clean to the same: the later one's value, as a dict built from them keeps
    assert clean_json({"a\x00": 1, "a": 2}) == {"a": 2}


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 12, 6, 17, 0, tzinfo=UTC),
        datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
        datetime(2026, 1, 1, 0, 30, 0, 123456, tzinfo=timezone(timedelta(hours=2))),
    ],
)
def test_a_moment_is_stored_on_sqlite_as_sqlalchemys_datetime_text_in_utc(moment: datetime) -> None:
    """The short way of binding a datetime on SQLite gives the text SQLAlchemy's own ``DATETIME`` stores for
    the moment in UTC, which reads back as the same moment."""
    dialect = sqlite.dialect()
    bind = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    assert bind is not None
    sqlalchemys = DateTime().dialect_impl(dialect).bind_processor(dialect)
    assert sqlalchemys is not None
    stored = bind(moment)
    assert stored == sqlalchemys(moment.astimezone(UTC).replace(tzinfo=None))
    read = UTCDateTime().dialect_impl(dialect).result_processor(dialect, None)
    assert read is not None and read(stored) == moment
    assert bind(None) is None
    with pytest.raises(ValueError, match="naive"):
        bind(datetime(2026, 12, 6, 17, 0))


def test_a_moment_bound_again_and_again_from_several_threads_keeps_its_own_text() -> None:
    """The SQLite binding remembers the last moment it bound (a batch binds one moment many times): a thread
    binding another moment meanwhile must never get the first one's text, nor the first the second's."""
    dialect = sqlite.dialect()
    bind = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    assert bind is not None
    moments = [datetime(2026, 12, 6, 17, 0, second, tzinfo=UTC) for second in range(4)]
    expected = {moment: moment.replace(tzinfo=None).isoformat(" ", "microseconds") for moment in moments}
    wrong: list[tuple[datetime, str | None]] = []

    def bind_often(moment: datetime) -> None:
        for turn in range(20_000):
            value = moment if turn % 3 else moment.replace()  # the same moment, now and then another object
            text = bind(value)
            if text != expected[moment]:
                wrong.append((moment, text))

    threads = [threading.Thread(target=bind_often, args=(moment,)) for moment in moments]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []
    assert [bind(moment) for moment in (moments[0], moments[0], moments[1])] == [
        expected[moments[0]],
        expected[moments[0]],
        expected[moments[1]],
    ]
