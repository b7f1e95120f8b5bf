"""Built-in survey texts per language, and the choice of language for one person.

The texts live in gettext catalogues under ``hub/locale``: ``cxhub.pot`` holds the English texts, and
``<lang>/LC_MESSAGES/cxhub.po`` one translation each. Every text is identified by its ``msgctxt`` (a short key
such as ``question.nps``), so the code asks for keys while translators see the English sentence. The ``.po``
files are read with Babel when this module is imported: no compiled ``.mo`` files are kept in the tree, and a
fuzzy or empty translation falls back to English instead of showing a half-finished text.

A survey's own texts (``[surveys.<name>].question``, ``topics``) win over these. ``{company}`` and the other
placeholders are filled with ``str.format``.
"""

from __future__ import annotations

from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po

from hub.models import SCALES, NpsCategory, SurveyKind

LOCALE_DIR = Path(__file__).parent / "locale"
DOMAIN = "cxhub"
#: codes a CRM may use for a language we hold under another code (Norwegian, Nynorsk -> bokmål)
ALIASES = {"no": "nb", "nn": "nb"}
#: the text under each face of the 3-smiley scale, by rating
SMILEY_KEYS = {1: "smiley.sad", 2: "smiley.neutral", 3: "smiley.happy"}


def _read(path: Path) -> Catalog:
    with path.open("rb") as handle:
        return read_po(handle, domain=DOMAIN)


def _english(template: Catalog) -> dict[str, str]:
    return {m.context: m.id for m in template if m.context and isinstance(m.id, str) and m.id}


def _translated(catalog: Catalog) -> dict[str, str]:
    return {
        m.context: m.string
        for m in catalog
        if m.context and isinstance(m.string, str) and m.string and not m.fuzzy
    }


def load_catalogues(directory: Path = LOCALE_DIR) -> dict[str, dict[str, str]]:
    """Language code -> key -> text, English (from the template) included."""
    catalogues = {"en": _english(_read(directory / f"{DOMAIN}.pot"))}
    for po in sorted(directory.glob(f"*/LC_MESSAGES/{DOMAIN}.po")):
        catalogues[po.parent.parent.name] = _translated(_read(po))
    return catalogues


CATALOG: dict[str, dict[str, str]] = load_catalogues()
ENGLISH = CATALOG["en"]
LANGUAGES: tuple[str, ...] = tuple(sorted(CATALOG))


def base_language(code: str | None) -> str | None:
    """``"da-DK"`` / ``"da_DK"`` / ``"no"`` -> ``"da"`` / ``"da"`` / ``"nb"``; None stays None."""
    if not code:
        return None
    base = code.strip().replace("_", "-").split("-")[0].lower()
    return ALIASES.get(base, base) or None


def choose_language(person_language: str | None, default: str) -> str:
    """The person's CRM language when the hub has texts for it, else the campaign's default."""
    lang = base_language(person_language)
    if lang in CATALOG:
        return lang
    return base_language(default) or "en"


def preferred_language(accept_language: str | None, default: str = "en") -> str:
    """The best built-in language for a browser's ``Accept-Language`` header (pages with no person)."""
    ranked: list[tuple[float, int, str]] = []
    for position, item in enumerate((accept_language or "").split(",")):
        code, _, params = item.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                continue
        lang = base_language(code)
        if lang in CATALOG and quality > 0:
            ranked.append((-quality, position, lang))
    return min(ranked)[2] if ranked else default


def text(language: str, key: str, **values: object) -> str:
    """One built-in text in ``language`` (falling back to English), with ``{placeholders}`` filled."""
    template = CATALOG.get(language, ENGLISH).get(key) or ENGLISH[key]
    return template.format(**values) if values else template


def followup_key(kind: SurveyKind, category: NpsCategory | None) -> str:
    """The follow-up question after an answer: by NPS category, one general question for other kinds."""
    if kind is SurveyKind.NPS and category is not None:
        return f"followup.{category.value}"
    return "followup.other"


def answer_label(language: str, kind: SurveyKind, rating: int) -> str:
    """An answer as the person chose it: the number, or the text under the face they picked."""
    if kind is SurveyKind.SMILEY and rating in SMILEY_KEYS:
        return text(language, SMILEY_KEYS[rating])
    return str(rating)


def reply_instructions(language: str, kind: SurveyKind) -> str:
    """How to answer by replying, e.g. "Reply with a number from 0 (Not likely) to 10 (Very likely).".

    Short on purpose: with the question it must fit one SMS where the language allows.
    """
    low, high = SCALES[kind]
    return text(
        language,
        "reply.instructions",
        low=low,
        high=high,
        low_label=text(language, f"low.{kind.value}"),
        high_label=text(language, f"high.{kind.value}"),
    )


def ask_again(language: str, kind: SurveyKind) -> str:
    """The one reminder sent when a reply to a texted survey holds no score."""
    low, high = SCALES[kind]
    return text(language, "reply.again", low=low, high=high)
