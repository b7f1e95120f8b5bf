"""How many SMS segments a text takes, counted the way the network does.

Each segment is billed and long texts arrive split or late on some handsets, so the channel fits its texts
into one segment where the language allows. A text in the GSM 03.38 alphabet takes 7 bits a character
(160 in one segment, 153 a part once split, the extension characters ``^{}[~]|\\€`` two each); one
character outside it makes the whole text UCS-2: 70 UTF-16 units in one segment, 67 a part, an emoji
(a surrogate pair) two. A character pair is never split across parts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: the GSM 03.38 default alphabet (without the escape to the extension table)
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
#: the extension table: each is sent as escape + character, two septets
GSM7_EXTENDED = frozenset("\f^{}\\[~]|€")

SINGLE = {"GSM-7": 160, "UCS-2": 70}
PART = {"GSM-7": 153, "UCS-2": 67}

#: typographic punctuation word processors put into texts, and its GSM-7 twin: one curly quote would
#: otherwise turn the whole text into UCS-2 and halve what fits in a segment
_PLAIN = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u2013": "-",
        "\u2014": "-",
        "\u2026": "...",
        "\u00a0": " ",
        "\u202f": " ",
    }
)

Encoding = Literal["GSM-7", "UCS-2"]


@dataclass(frozen=True)
class Segments:
    """A text's encoding, its length in that encoding's units (septets or UTF-16 units) and its segments."""

    encoding: Encoding
    units: int
    count: int

    def describe(self) -> str:
        plural = "" if self.count == 1 else "s"
        return f"{self.count} segment{plural} ({self.encoding}, {self.units} units)"


def plain_punctuation(text: str) -> str:
    """``text`` with curly quotes, dashes, ellipses and non-breaking spaces made plain."""
    return text.translate(_PLAIN)


def is_gsm7(text: str) -> bool:
    return all(c in GSM7_BASIC or c in GSM7_EXTENDED for c in text)


def _units(text: str, encoding: Encoding) -> list[int]:
    """Each character's size: septets in GSM-7, UTF-16 code units in UCS-2."""
    if encoding == "GSM-7":
        return [2 if c in GSM7_EXTENDED else 1 for c in text]
    return [2 if ord(c) > 0xFFFF else 1 for c in text]


def count(text: str) -> Segments:
    """The segments ``text`` takes as one SMS."""
    encoding: Encoding = "GSM-7" if is_gsm7(text) else "UCS-2"
    sizes = _units(text, encoding)
    total = sum(sizes)
    if total <= SINGLE[encoding]:
        return Segments(encoding, total, 1)
    part, parts, used = PART[encoding], 1, 0
    for size in sizes:
        if used + size > part:  # a two-unit character moves whole to the next part
            parts, used = parts + 1, 0
        used += size
    return Segments(encoding, total, parts)


def fits_one(text: str) -> bool:
    return count(text).count == 1


def truncate_to_fit(text: str, room: int, encoding: Encoding) -> str:
    """The longest prefix of ``text`` (cut at a space where one is near) taking at most ``room`` units,
    ending in "..." when cut."""
    sizes = _units(text, encoding)
    if sum(sizes) <= room:
        return text
    budget, end = room - 3, 0
    while end < len(text) and budget - sizes[end] >= 0:
        budget -= sizes[end]
        end += 1
    cut = text[:end]
    space = cut.rfind(" ")
    if space > end * 2 // 3:
        cut = cut[:space]
    return cut.rstrip(" ,;:-") + "..."
