"""Hostile input: text with NUL, lone surrogates and huge lengths, numbers past 64 bits, deep nesting,
invalid UTF-8, wrong types, and bodies built from them."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

ODD_TEXT = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\ud800",
    "\udfff\ud800",
    "\u202e\u200b\ufeff",
    "💥" * 50,
    "' OR 1=1 --",
    "<script>alert(1)</script>",
    "../../../etc/passwd",
    "%00%ff",
    "\r\n\t",
    "NaN",
    "-0",
    "1e309",
    "٣",
    "²",
]
HUGE_NUMBERS = [2**31, 2**63 - 1, 2**63, -(2**63) - 1, 2**64, 10**30, -(10**30), 2**1000]

huge_text = st.sampled_from([1_000, 10_000, 100_000]).map(lambda n: "x" * n)
#: a value that passes a first look (a score, an id, an address) with something hostile after it: a parser
#: that checks only the start of a value lets the rest through to the database
PLAUSIBLE = ["9 ", "C1", "P1", "ada@example.com", "5005g0000000003AAA", "2026-12-05T10:00:00Z"]
plausible_then_odd = st.builds(
    lambda head, tail: head + tail, st.sampled_from(PLAUSIBLE), st.sampled_from(ODD_TEXT)
)
hostile_text = st.one_of(st.text(max_size=50), st.sampled_from(ODD_TEXT), huge_text, plausible_then_odd)
#: text that any HTTP client can encode (no lone surrogates), for forms and query strings
sendable_text = st.one_of(
    st.text(max_size=50), st.sampled_from([t for t in ODD_TEXT if "\ud800" not in t and "\udfff" not in t])
)
numbers = st.one_of(
    st.integers(), st.sampled_from(HUGE_NUMBERS), st.floats(allow_nan=True, allow_infinity=True)
)
scalars = st.one_of(st.none(), st.booleans(), numbers, hostile_text)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
#: a header value h11 will send: printable ASCII
header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=200).map(
    str.strip
)


def encode(value: Any, ascii_only: bool) -> bytes:
    """JSON bytes; with ``ascii_only`` False, lone surrogates become invalid UTF-8 (surrogatepass)."""
    text = json.dumps(value, ensure_ascii=ascii_only)
    return text.encode("utf-8", errors="surrogatepass")


def json_body(values: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    return st.builds(encode, values, st.booleans())


@st.composite
def deep_nesting(draw: st.DrawFn) -> bytes:
    """JSON nested far deeper than any parser's recursion limit, alone or inside a plausible object."""
    depth = draw(st.sampled_from([100, 1_000, 10_000, 100_000]))
    inner = draw(st.sampled_from([b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth]))
    key = draw(st.sampled_from([b"Event", b"PrimaryKey", b"Changes", b"FieldValues", b"records", b"event"]))
    return draw(st.sampled_from([inner, b'{"' + key + b'":' + inner + b"}"]))


raw_bodies = st.one_of(
    st.binary(max_size=500),
    deep_nesting(),
    st.sampled_from(
        [
            b"",
            b"null",
            b"[]",
            b'"text"',
            b"\xff\xfe\x00",
            b'{"a": "\xff"}',
            b"<",
            b"<?xml version='1.0'?><a>",
            b'<!DOCTYPE a [<!ENTITY b "c">]><a>&b;</a>',
            b"{" * 5 + b"NaN",
        ]
    ),
)
