"""The built-in texts: complete, real translations with the same placeholders, and the choice of language."""

from __future__ import annotations

from pathlib import Path
from string import Formatter

import pytest
from babel.messages.pofile import read_po

from hub.models import NpsCategory, SurveyKind
from hub.texts import (
    CATALOG,
    ENGLISH,
    LOCALE_DIR,
    answer_label,
    choose_language,
    followup_key,
    load_catalogues,
    preferred_language,
    text,
)

LANGUAGES = ["da", "de", "en", "fi", "fr", "nb", "nl", "sv"]
TRANSLATED = [lang for lang in LANGUAGES if lang != "en"]
#: words that are the same in English and the language (checked by hand); anything else identical is a miss
SAME_AS_ENGLISH = {
    "da": {"submit", "smiley.neutral"},
    "nb": {"submit"},
}
REQUIRED_KEYS = {
    "subject",
    "reminder.subject",
    "intro",
    *(f"{part}.{kind.value}" for kind in SurveyKind for part in ("question", "low", "high")),
    "followup.promoter",
    "followup.passive",
    "followup.detractor",
    "followup.other",
    "topic",
    "next",
    "submit",
    "skip",
    "thanks",
    "expired",
    "closed",
    "unknown",
    "csrf",
    "unsubscribe",
    "unsubscribe.confirm",
    "unsubscribe.button",
    "unsubscribed",
    "out_of_range",
    "smiley.sad",
    "smiley.neutral",
    "smiley.happy",
}


def placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in Formatter().parse(template) if name is not None}


def test_the_catalogues_are_the_eight_languages() -> None:
    assert sorted(CATALOG) == LANGUAGES
    assert set(ENGLISH) >= REQUIRED_KEYS


@pytest.mark.parametrize("lang", TRANSLATED)
def test_every_catalogue_has_every_key_with_the_same_placeholders(lang: str) -> None:
    translated = CATALOG[lang]
    assert set(translated) == set(ENGLISH), f"{lang}: missing {set(ENGLISH) - set(translated)}"
    for key, english in ENGLISH.items():
        assert placeholders(translated[key]) == placeholders(english), f"{lang} {key}: {translated[key]!r}"
        values = {"low_label": "L", "high_label": "H"}
        text(
            lang,
            key,
            company="Acme",
            low=0,
            high=10,
            limit=5,
            answer=3,
            category="X",
            person="Y",
            rating=1,
            **values,
        )


@pytest.mark.parametrize("lang", TRANSLATED)
def test_translations_are_not_english_copies(lang: str) -> None:
    same = {key for key, english in ENGLISH.items() if CATALOG[lang][key] == english}
    assert same == SAME_AS_ENGLISH.get(lang, set())


@pytest.mark.parametrize("lang", TRANSLATED)
def test_the_po_files_are_clean(lang: str) -> None:
    path = LOCALE_DIR / lang / "LC_MESSAGES" / "cxhub.po"
    with path.open("rb") as handle:
        catalog = read_po(handle, abort_invalid=True)
    assert str(catalog.locale) == lang
    entries = [m for m in catalog if m.id]
    assert not [m.context for m in entries if m.fuzzy], "fuzzy entries are not used: translate them"
    assert all(m.context for m in entries), "every text needs its key as msgctxt"
    assert not list(catalog.obsolete), "obsolete entries: remove them"


def test_a_fuzzy_or_empty_translation_falls_back_to_english(tmp_path: Path) -> None:
    (tmp_path / "cxhub.pot").write_text(
        'msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=UTF-8\\n"\n\n'
        'msgctxt "a"\nmsgid "One"\nmsgstr ""\n\nmsgctxt "b"\nmsgid "Two"\nmsgstr ""\n',
        encoding="utf-8",
    )
    folder = tmp_path / "xx" / "LC_MESSAGES"
    folder.mkdir(parents=True)
    (folder / "cxhub.po").write_text(
        'msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=UTF-8\\n"\n\n'
        '#, fuzzy\nmsgctxt "a"\nmsgid "One"\nmsgstr "Uno?"\n\nmsgctxt "b"\nmsgid "Two"\nmsgstr ""\n',
        encoding="utf-8",
    )
    assert load_catalogues(tmp_path) == {"en": {"a": "One", "b": "Two"}, "xx": {}}


@pytest.mark.parametrize(
    ("crm", "default", "chosen"),
    [
        ("nb-NO", "en", "nb"),
        ("no", "en", "nb"),
        ("nn-NO", "en", "nb"),
        ("sv_SE", "en", "sv"),
        ("de-AT", "en", "de"),
        ("FR-ca", "en", "fr"),
        ("nl", "en", "nl"),
        ("fi-FI", "en", "fi"),
        ("en-US", "da", "en"),
        ("pl-PL", "da-DK", "da"),
        (None, "no", "nb"),
        ("", "sv", "sv"),
        ("xx", "pt-BR", "pt"),  # not built in: the campaign's default stays (its own texts may cover it)
    ],
)
def test_the_crm_language_maps_to_a_catalogue_else_the_campaign_default(crm, default, chosen) -> None:
    assert choose_language(crm, default) == chosen


def test_a_language_without_catalogue_falls_back_to_english() -> None:
    assert text("pt", "thanks") == "Thank you for your answer!"


@pytest.mark.parametrize(
    ("header", "chosen"),
    [
        ("de-CH,de;q=0.9,en;q=0.8", "de"),
        ("pl,sv;q=0.5,nb;q=0.7", "nb"),
        ("en;q=0.2, fi", "fi"),
        ("fr;q=0", "en"),
        ("ja", "en"),
        (None, "en"),
        ("da;q=abc, nl", "nl"),
    ],
)
def test_the_browsers_language_for_pages_without_a_person(header, chosen) -> None:
    assert preferred_language(header) == chosen


def test_follow_up_keys_and_answer_labels() -> None:
    assert followup_key(SurveyKind.NPS, NpsCategory.PASSIVE) == "followup.passive"
    assert followup_key(SurveyKind.CSAT, None) == "followup.other"
    assert text("da", followup_key(SurveyKind.NPS, NpsCategory.DETRACTOR)) == "Hvad kunne vi gøre bedre?"
    assert answer_label("fr", SurveyKind.SMILEY, 1) == "Mécontent"
    assert answer_label("fr", SurveyKind.NPS, 7) == "7"


def test_french_punctuation_keeps_its_non_breaking_space() -> None:
    assert text("fr", "thanks") == "Merci pour votre réponse\u00a0!"
