"""Turning a survey invitation or an alert into the plain-text and HTML bodies of an email.

The templates live in ``templates/`` inside the package so a wheel carries them. HTML is autoescaped, since
every text in it (intro, question, company name) comes from config or the CRM; the plain-text part is not
escaped, because ``&amp;`` in a text mail would be shown as is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from urllib.parse import urlsplit

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from hub import AlertMessage, Branding, SurveyMessage

#: the default of ``hub.Branding.colour``, used when the configured colour is not a hex colour
DEFAULT_COLOUR = "#1f5fa8"
_HEX_COLOUR = re.compile(r"#(?:[0-9a-fA-F]{3}){1,2}")
#: languages written right to left, so the HTML gets dir="rtl"
_RTL_LANGUAGES = {"ar", "dv", "fa", "he", "ku", "ps", "ur", "yi"}


@dataclass(frozen=True)
class Bodies:
    """The two alternative bodies of one email."""

    text: str
    html: str


@dataclass(frozen=True)
class Palette:
    """Colours of the HTML mail, each pair readable (WCAG AA contrast, 4.5:1).

    ``brand`` fills the buttons, ``on_brand`` is their text: black or white, whichever contrasts more (one of
    them always reaches 4.5:1). ``link`` is the brand colour where it is dark enough for text on white, else
    the default blue.
    """

    brand: str
    on_brand: str
    link: str


def paragraphs(text: str) -> list[list[str]]:
    """Split a text into paragraphs (at blank lines) of lines, so HTML can keep the writer's line breaks."""
    blocks = re.split(r"\n\s*\n", text.replace("\r\n", "\n").strip())
    return [block.split("\n") for block in blocks if block.strip()]


@cache
def environment() -> Environment:
    """The Jinja environment, built once: templates are compiled on first use and then cached."""
    env = Environment(
        loader=PackageLoader("hub_email", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,  # the templates ship inside the package: no need to look at their files per mail
    )
    env.filters["paragraphs"] = paragraphs
    return env


def _channels(colour: str) -> tuple[float, float, float]:
    digits = colour.lstrip("#")
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    return tuple(int(digits[i : i + 2], 16) / 255 for i in (0, 2, 4))  # type: ignore[return-value]


def relative_luminance(colour: str) -> float:
    """WCAG 2 relative luminance of a ``#rrggbb`` / ``#rgb`` colour, 0 (black) to 1 (white)."""

    def linear(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in _channels(colour))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast_ratio(a: str, b: str) -> float:
    """WCAG 2 contrast ratio of two colours, 1 to 21; body text needs 4.5."""
    la, lb = sorted((relative_luminance(a), relative_luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def palette(branding: Branding) -> Palette:
    """The colours for ``branding``; only a hex colour reaches a style attribute (no CSS injection)."""
    brand = branding.colour.strip()
    if not _HEX_COLOUR.fullmatch(brand):
        brand = DEFAULT_COLOUR
    on_brand = max(("#ffffff", "#000000"), key=lambda text: contrast_ratio(brand, text))
    link = brand if contrast_ratio(brand, "#ffffff") >= 4.5 else DEFAULT_COLOUR
    return Palette(brand=brand, on_brand=on_brand, link=link)


def safe_image_url(url: str | None) -> str | None:
    """Only http(s) images: a mail client blocks other schemes anyway, and ``javascript:`` must never pass."""
    if url and urlsplit(url).scheme in ("http", "https"):
        return url
    return None


def text_direction(language: str) -> str:
    """``rtl`` for right-to-left languages (``ar``, ``he-IL``), else ``ltr``."""
    return "rtl" if language.split("-")[0].split("_")[0].lower() in _RTL_LANGUAGES else "ltr"


def render_survey(message: SurveyMessage) -> Bodies:
    """Both bodies of an invitation or reminder, in the message's language (the hub translated its texts)."""
    env = environment()
    context = {
        "m": message,
        "brand": palette(message.branding),
        "logo_url": safe_image_url(message.branding.logo_url),
        "dir": text_direction(message.language),
    }
    return Bodies(
        text=env.get_template("survey.txt").render(context),
        html=env.get_template("survey.html").render(context),
    )


def render_alert(message: AlertMessage) -> Bodies:
    """Both bodies of an alert to a colleague: its text, and its link (to the answer or the CRM record).

    An alert carries no branding: it is the hub talking to the company's own staff, so it looks like the hub.
    """
    env = environment()
    hub_look = Branding()
    context = {
        "m": message,
        "company_name": hub_look.company_name,
        "logo_url": None,
        "brand": palette(hub_look),
        "dir": text_direction(message.recipient.language),
    }
    return Bodies(
        text=env.get_template("alert.txt").render(context),
        html=env.get_template("alert.html").render(context),
    )
