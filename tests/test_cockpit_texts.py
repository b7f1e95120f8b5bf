"""The cockpit's texts: the template is what the code marks, every language translates all of it with the same
placeholders, and a page comes out in the language chosen by ``?lang=``, the cookie or the browser.

A text marked with ``_()`` but not extracted fails the first test; extracted but not translated, the second:
``make messages`` then translating the new entries in every ``cockpit.po`` makes both pass again.
"""

from __future__ import annotations

import mailbox
import re
from email.message import EmailMessage
from pathlib import Path
from string import Formatter

import httpx
import pytest
from babel.messages.catalog import Catalog
from babel.messages.frontend import CommandLineInterface
from babel.messages.pofile import read_po

from hub.texts import LANGUAGES, LOCALE_DIR
from hub.web import create_app
from hub.web.cockpit.i18n import DOMAIN, LANGUAGE_COOKIE, LANGUAGE_NAMES, load, translator

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = LOCALE_DIR / f"{DOMAIN}.pot"
TRANSLATED = [lang for lang in LANGUAGES if lang != "en"]
#: the score's names are the same everywhere: NPS is a trademark, CSAT and CES are read as they are
SCORE_NAMES = {"NPS", "Net Promoter Score (NPS)", "CSAT", "CES"}
#: texts that really are the same word in English and the language (checked by hand); any other is a miss
SAME_AS_ENGLISH = {
    "da": SCORE_NAMES | {"Send", "{s} s", "Filter", "Smiley"},
    "nb": SCORE_NAMES | {"Send", "{s} s", "Filter", "Person {id}"},
    "fr": SCORE_NAMES
    | {"Date", "Action", "Actions", "Invitations", "Pages", "{n} minutes", "{s} s", "Smiley"},
    "de": SCORE_NAMES
    | {"Name", "Details", "{event} in {connector}", "{s} s", "Filter", "Export", "Smiley", "Person {id}"},
    "nl": SCORE_NAMES | {"Details", "Item", "{event} in {connector}", "{s} s", "Filter", "Week", "Smiley"},
    "fi": SCORE_NAMES | {"{s} s"},
    "sv": SCORE_NAMES | {"{s} s", "Filter", "Smiley", "Person {id}"},
}


def catalogue(path: Path) -> Catalog:
    with path.open("rb") as handle:
        return read_po(handle, abort_invalid=True)


def msgids(catalog: Catalog) -> set[str]:
    return {m.id for m in catalog if isinstance(m.id, str) and m.id}


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in Formatter().parse(text) if name is not None}


def test_the_template_holds_exactly_the_texts_the_code_marks(tmp_path: Path) -> None:
    """The same extraction as ``make messages``, compared by msgid (not bytes)."""
    extracted = tmp_path / "cockpit.pot"
    CommandLineInterface().run(
        [
            "pybabel",
            "--quiet",
            "extract",
            "-F",
            str(LOCALE_DIR / "cockpit.cfg"),
            "-k",
            "_",
            "--no-default-keywords",
            "-o",
            str(extracted),
            str(ROOT / "hub"),
        ]
    )
    fresh, committed = msgids(catalogue(extracted)), msgids(catalogue(TEMPLATE))
    assert fresh, "the extraction found no text at all"
    assert fresh == committed, (
        f"hub/locale/cockpit.pot is stale: run `make messages` and translate the new entries "
        f"(new: {sorted(fresh - committed)}, gone: {sorted(committed - fresh)})"
    )


def test_the_catalogues_are_the_survey_pages_languages() -> None:
    assert sorted(LANGUAGE_NAMES) == sorted(LANGUAGES)
    found = sorted(p.parent.parent.name for p in LOCALE_DIR.glob(f"*/LC_MESSAGES/{DOMAIN}.po"))
    assert found == TRANSLATED


@pytest.mark.parametrize("lang", TRANSLATED)
def test_every_text_is_translated_with_the_same_placeholders(lang: str) -> None:
    wanted = msgids(catalogue(TEMPLATE))
    catalog = catalogue(LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po")
    assert str(catalog.locale) == lang
    entries = {m.id: m for m in catalog if isinstance(m.id, str) and m.id}
    assert set(entries) == wanted, (
        f"{lang}: run `make messages` (missing {sorted(wanted - set(entries))}, "
        f"not in the template {sorted(set(entries) - wanted)})"
    )
    assert not list(catalog.obsolete), f"{lang}: obsolete entries: remove them"
    untranslated = sorted(key for key, m in entries.items() if not m.string)
    assert not untranslated, f"{lang}: not translated: {untranslated}"
    fuzzy = sorted(key for key, m in entries.items() if m.fuzzy)
    assert not fuzzy, f"{lang}: fuzzy entries are not used, check and unmark them: {fuzzy}"
    _ = translator(lang)
    for english, message in entries.items():
        assert isinstance(message.string, str)
        assert placeholders(message.string) == placeholders(english), (
            f"{lang} {english!r}: {message.string!r}"
        )
        values = dict.fromkeys(placeholders(english), "X")
        assert _(english, **values) == message.string.format(**values)  # what the pages show


@pytest.mark.parametrize("lang", TRANSLATED)
def test_translations_are_not_english_copies(lang: str) -> None:
    catalog = catalogue(LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po")
    same = {m.id for m in catalog if m.id and m.string == m.id}
    assert same == SAME_AS_ENGLISH.get(lang, set())


def test_a_fuzzy_empty_or_missing_translation_shows_the_english_text(tmp_path: Path) -> None:
    folder = tmp_path / "xx" / "LC_MESSAGES"
    folder.mkdir(parents=True)
    (folder / f"{DOMAIN}.po").write_text(
        'msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=UTF-8\\n"\n\n'
        '#, fuzzy\nmsgid "One"\nmsgstr "Uno?"\n\nmsgid "Two"\nmsgstr ""\n\nmsgid "{n} left"\nmsgstr "{n} restano"\n',
        encoding="utf-8",
    )
    assert load(tmp_path) == {"xx": {"{n} left": "{n} restano"}}


# --- the language of a page --------------------------------------------------------------------------------------


def client_for(app: object) -> httpx.AsyncClient:
    """A browser on this machine: the demo's admin pages open without a login there."""
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50123))  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000")


def page_language(html: str) -> str:
    match = re.search(r'<html lang="([^"]+)">', html)
    assert match, "the page has no <html lang>"
    return match.group(1)


def h1(html: str) -> str:
    match = re.search(r"<h1>([^<]*)</h1>", html)
    assert match, "the page has no <h1>"
    return match.group(1)


@pytest.fixture
async def demo_app(make_hub, tmp_path: Path) -> object:
    hub = await make_hub()
    hub.config.hub.demo = True
    hub.config.hub.admin_password = None
    hub.config.hub.mailbox_dir = "mail"  # relative to the config file's folder
    message = EmailMessage()  # no subject: the list says so in the page's language
    message["From"] = "survey@example.com"
    message["To"] = "ada@example.com"
    message.set_content("Hello")
    mailbox.Maildir(tmp_path / "mail", create=True).add(message)
    return create_app(hub, scheduler=False)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the language needs no second database
async def test_lang_picks_the_language_and_the_cookie_keeps_it(demo_app: object) -> None:
    async with client_for(demo_app) as client:
        page = await client.get("/admin/mailbox?lang=de")
        assert page.status_code == 200 and page_language(page.text) == "de"
        assert h1(page.text) == "Postfach" and "(kein Betreff)" in page.text
        assert '<th scope="col">Betreff</th>' in page.text
        assert "Every email the demo sent" not in page.text
        assert '<option value="de" selected lang="de">Deutsch</option>' in page.text
        assert client.cookies.get(LANGUAGE_COOKIE) == "de"

        link = re.search(r'<a href="(/admin/mailbox/[^"]+)">', page.text)
        assert link, "the list has no message"
        message = await client.get(link.group(1))
        assert h1(message.text) == "(kein Betreff)" and "<dt>Von</dt>" in message.text
        assert "<dt>An</dt>" in message.text and "<h2>Reiner Text</h2>" in message.text

        following = await client.get("/admin/replies", headers={"Accept-Language": "fr"})
        assert page_language(following.text) == "de", "the cookie wins over the browser"
        assert h1(following.text) == "Antworten" and "Keine aufbewahrten Antworten." in following.text

        said_by_python = await client.get("/admin/phone?error=1")
        assert "Der Hub hat die Antwort nicht angenommen; siehe Protokoll." in said_by_python.text

        back = await client.get("/admin/replies?lang=en")
        assert page_language(back.text) == "en" and h1(back.text) == "Replies"
        assert client.cookies.get(LANGUAGE_COOKIE) == "en"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("header", "lang", "heading"),
    [
        ("fr-CH, fr;q=0.9, en;q=0.8", "fr", "Boîte aux lettres"),
        ("pl, nb;q=0.7, sv;q=0.5", "nb", "Postkasse"),
        ("ja", "en", "Mailbox"),
        (None, "en", "Mailbox"),
    ],
)
async def test_without_a_choice_the_browsers_language_is_used(
    demo_app: object, header: str | None, lang: str, heading: str
) -> None:
    headers = {"Accept-Language": header} if header is not None else {}
    async with client_for(demo_app) as client:
        page = await client.get("/admin/mailbox", headers=headers)
        assert page.status_code == 200 and page_language(page.text) == lang and h1(page.text) == heading
        assert LANGUAGE_COOKIE not in client.cookies, "only a choice in the menu is kept"
