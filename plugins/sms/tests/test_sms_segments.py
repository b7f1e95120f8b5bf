"""Segment counting, exactly: GSM-7 with its extension table against UCS-2 with surrogate pairs."""

from __future__ import annotations

import pytest
from hub_sms.segments import count, plain_punctuation, truncate_to_fit


@pytest.mark.parametrize(
    ("text", "encoding", "units", "segments"),
    [
        ("a" * 160, "GSM-7", 160, 1),
        ("a" * 161, "GSM-7", 161, 2),
        ("a" * 306, "GSM-7", 306, 2),
        ("a" * 307, "GSM-7", 307, 3),
        ("€" * 80, "GSM-7", 160, 1),  # the extension table takes two septets a character
        ("€" * 81, "GSM-7", 162, 2),
        ("^{}[~]|\\" + "a" * 144, "GSM-7", 160, 1),
        ("Hej Åse, hvordan gik det? Svar 0-10. Tak! æøå ÆØÅ äöü ß é", "GSM-7", 57, 1),
        ("ж" * 70, "UCS-2", 70, 1),
        ("ж" * 71, "UCS-2", 71, 2),
        ("ж" * 134, "UCS-2", 134, 2),
        ("ж" * 135, "UCS-2", 135, 3),
        ("😀" * 35, "UCS-2", 70, 1),  # a surrogate pair is two UTF-16 units
        ("😀" * 36, "UCS-2", 72, 2),
        ("a" * 69 + "ł", "UCS-2", 70, 1),  # one Polish letter makes the whole text UCS-2
        ("a" * 70 + "ł", "UCS-2", 71, 2),
        ("", "GSM-7", 0, 1),
    ],
)
def test_counts(text: str, encoding: str, units: int, segments: int) -> None:
    result = count(text)
    assert (result.encoding, result.units, result.count) == (encoding, units, segments)


def test_an_escaped_character_is_never_split_across_parts() -> None:
    # 306 septets would be two parts of 153, but the euro cannot straddle them: it moves whole to part two
    text = "a" * 152 + "€" + "a" * 152
    assert (count(text).units, count(text).count) == (306, 3)


def test_a_surrogate_pair_is_never_split_across_parts() -> None:
    text = "ж" * 66 + "😀" + "ж" * 66
    assert (count(text).units, count(text).count) == (134, 3)


def test_lowercase_c_cedilla_and_curly_quotes_are_not_gsm7_but_plain_punctuation_is() -> None:
    assert count("Merci, ça va").encoding == "UCS-2"
    assert count("It\u2019s \u201cgreat\u201d \u2013 really\u2026").encoding == "UCS-2"
    plain = plain_punctuation("It\u2019s \u201cgreat\u201d \u2013 really\u2026")
    assert plain == 'It\'s "great" - really...'
    assert count(plain).encoding == "GSM-7"


def test_truncation_fits_the_room_and_ends_at_a_word() -> None:
    text = "How likely are you to recommend Acme to a friend or a colleague of yours?"
    short = truncate_to_fit(text, 40, "GSM-7")
    assert count(short).units <= 40 and short.endswith("...")
    assert text.startswith(short[:-3])
    assert short[:-3].rstrip() == short[:-3] and not text[len(short) - 3].isalpha()
    assert truncate_to_fit("short", 40, "GSM-7") == "short"
