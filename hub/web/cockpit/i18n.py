"""The cockpit's texts in every language the survey pages speak.

Unlike the survey texts (``hub.texts``, found by key), the cockpit's texts are found by their English
sentence, the usual gettext way: templates and page modules write ``_("Sync now")`` and translators see
that sentence in ``hub/locale/<lang>/LC_MESSAGES/cockpit.po``. ``_("{n} answers", n=3)`` fills
placeholders with ``str.format`` after translating. A missing, empty or fuzzy translation shows the English
text. The catalogues are read with Babel at import; no compiled ``.mo`` files are kept.

The language of a page: the ``lang`` query parameter (which the language menu sends, and which is then kept
in a cookie), else the cookie, else the browser's ``Accept-Language``, else English.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from babel.messages.pofile import read_po
from fastapi import Request

from hub.texts import LANGUAGES, LOCALE_DIR, base_language

DOMAIN = "cockpit"
LANGUAGE_COOKIE = "cxhub_lang"
#: each language's own name, for the language menu
LANGUAGE_NAMES = {
    "da": "Dansk",
    "de": "Deutsch",
    "en": "English",
    "fi": "Suomi",
    "fr": "Français",
    "nb": "Norsk bokmål",
    "nl": "Nederlands",
    "sv": "Svenska",
}


class Translate(Protocol):
    def __call__(self, message: str, /, **values: Any) -> str: ...


def load(directory: Path = LOCALE_DIR) -> dict[str, dict[str, str]]:
    """Language -> English sentence -> translation, for every catalogue that exists."""
    catalogues: dict[str, dict[str, str]] = {}
    for po in sorted(directory.glob(f"*/LC_MESSAGES/{DOMAIN}.po")):
        with po.open("rb") as handle:
            catalog = read_po(handle, domain=DOMAIN)
        catalogues[po.parent.parent.name] = {
            m.id: m.string
            for m in catalog
            if isinstance(m.id, str) and m.id and isinstance(m.string, str) and m.string and not m.fuzzy
        }
    return catalogues


CATALOGUES = load()


def translator(language: str) -> Translate:
    """``_`` for one language."""
    table = CATALOGUES.get(language, {})

    def translate(message: str, /, **values: Any) -> str:
        text = table.get(message, message)
        return text.format(**values) if values else text

    return translate


def _accepted(header: str) -> list[str]:
    """The languages of an ``Accept-Language`` header, most wanted first (``q=0`` left out)."""
    weighted: list[tuple[float, int, str]] = []
    for position, part in enumerate(header.split(",")):
        code, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        if code and quality > 0:
            weighted.append((-quality, position, code.strip().lower()))
    return [code for _q, _p, code in sorted(weighted)]


def page_language(request: Request) -> str:
    chosen = request.query_params.get("lang") or request.cookies.get(LANGUAGE_COOKIE)
    if chosen in LANGUAGES:
        return chosen
    for code in _accepted(request.headers.get("accept-language", "")):
        base = base_language(code)
        if base is not None and base in LANGUAGES:
            return base
    return "en"


__all__ = ["LANGUAGE_COOKIE", "LANGUAGE_NAMES", "Translate", "page_language", "translator"]
