"""The survey pages over ASGI: every kind, the person's language, friendly pages, and what may never happen
(an answer recorded by a GET or HEAD, a POST without CSRF, a value outside the scale, unlimited POSTs)."""

from __future__ import annotations

import re
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select

from hub.config import SurveySettings
from hub.models import SurveyKind
from hub.store.tables import Response, Token, WriteBack
from hub.web import create_app
from hub.web.protection import RateLimiter
from hub.web.survey import Limits, contrast, rgb_of, theme_for
from tests.helpers import asgi_client, csrf_of, survey_flow


@pytest.fixture
async def web(make_hub):
    hub = await make_hub()
    for kind in SurveyKind:
        hub.config.surveys.setdefault(kind.value, SurveySettings(kind=kind))
    async with asgi_client(create_app(hub, scheduler=False)) as client:
        yield hub, client


async def open_survey(
    hub, crm_state, language: str | None = "en-GB", kind: str = "nps", person: str = "P1"
) -> str:
    """A case closes for ``person`` (speaking ``language``); returns the survey link's path."""
    crm_state.people.setdefault(person, {"id": person, "email": f"{person.lower()}@example.com"})
    crm_state.people[person]["language"] = language
    hub.config.campaigns["case_closed"].survey = kind
    return f"/s/{await survey_flow(hub, crm_state, case_id=f'C-{person}', person=person)}"


async def responses(hub) -> list[Response]:
    async with hub.store.session() as s:
        return list(await s.scalars(select(Response)))


def radios(html: str, name: str = "score") -> list[str]:
    return re.findall(rf'type="radio" name="{name}" value="([^"]*)"', html)


async def answer(client: httpx.AsyncClient, path: str, **fields: str) -> httpx.Response:
    page = await client.get(path)
    return await client.post(path, data={"csrf": csrf_of(page.text), **fields})


# --- every kind -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "values", "question", "ends"),
    [
        (
            "nps",
            [str(v) for v in range(11)],
            "How likely are you to recommend",
            ("Not likely", "Very likely"),
        ),
        ("csat", ["1", "2", "3", "4", "5"], "How satisfied are you", ("Very dissatisfied", "Very satisfied")),
        ("ces", [str(v) for v in range(1, 8)], "How easy was it", ("Very difficult", "Very easy")),
        ("smiley", ["1", "2", "3"], "How was your experience", ("Unhappy", "Happy")),
    ],
)
async def test_each_kind_shows_its_scale_and_records_both_ends(
    web, crm_state, kind, values, question, ends
) -> None:
    hub, client = web
    path = await open_survey(hub, crm_state, kind=kind)
    page = await client.get(path)
    assert page.status_code == 200 and radios(page.text) == values
    assert question in page.text and all(label in page.text for label in ends)
    assert "<fieldset" in page.text and "<legend><h1>" in page.text
    if kind == "smiley":  # faces carry words, not only pictures
        assert all(f"{word}</span>" in page.text for word in ("Unhappy", "Neutral", "Happy"))
        assert page.text.count('<svg class="face" viewBox="0 0 48 48" aria-hidden="true"') == 3
    else:  # both ends are in the accessible name of their radio button
        assert f'aria-label="{values[0]}, {ends[0]}"' in page.text
        assert f'aria-label="{values[-1]}, {ends[1]}"' in page.text
    first = await answer(client, path, score=values[0])
    assert first.status_code == 303 and first.headers["location"] == path
    change = await answer(client, f"{path}?change=1", score=values[-1])
    assert change.status_code == 303 and change.headers["location"] == path
    [stored] = await responses(hub)
    assert (stored.survey_kind, stored.rating) == (kind, int(values[-1]))


@pytest.mark.parametrize(
    ("score", "question", "category"),
    [
        ("10", "What is the main reason for your score?", "promoter"),
        ("7", "What would make it a 10?", "passive"),
        ("3", "What could we do better?", "detractor"),
    ],
)
async def test_the_follow_up_question_follows_the_category(web, crm_state, score, question, category) -> None:
    hub, client = web
    path = await open_survey(hub, crm_state)
    await answer(client, path, score=score)
    followup = await client.get(path)
    assert f'<label for="comment">{question}</label>' in followup.text
    assert f"Your answer: {score}" in followup.text and f'href="{path}?change=1"' in followup.text
    assert (await responses(hub))[0].category == category


async def test_csat_and_smiley_ask_the_general_follow_up(web, crm_state) -> None:
    hub, client = web
    path = await open_survey(hub, crm_state, kind="smiley")
    await answer(client, path, score="2")
    followup = await client.get(path)
    assert "Would you like to tell us more?" in followup.text and "Your answer: Neutral" in followup.text


async def test_comment_and_topic_are_stored_and_a_later_comment_amends(web, crm_state) -> None:
    hub, client = web
    hub.config.surveys["nps"].topics = {"en": ["Billing", "Delivery"], "da": ["Faktura", "Levering"]}
    path = await open_survey(hub, crm_state, language="da")
    await answer(client, path, score="9")
    followup = await client.get(path)
    assert radios(followup.text, "topic") == ["Faktura", "Levering"]
    assert "Hvad handlede det mest om?" in followup.text
    done = await client.post(
        path, data={"csrf": csrf_of(followup.text), "comment": "  Hurtigt svar 🍷  ", "topic": "Levering"}
    )
    assert done.headers["location"] == f"{path}/thanks"
    [stored] = await responses(hub)
    assert (stored.rating, stored.comment, stored.topic) == (9, "Hurtigt svar 🍷", "Levering")
    again = await client.get(path)  # within the amend window the follow-up can be sent again
    assert "Hurtigt svar 🍷</textarea>" in again.text and 'value="Levering" checked' in again.text
    await client.post(path, data={"csrf": csrf_of(again.text), "comment": "Mere", "topic": "Ukendt"})
    [stored] = await responses(hub)
    assert (stored.comment, stored.topic) == ("Mere", "Levering")  # an unknown topic is ignored


async def test_an_empty_follow_up_goes_to_the_thanks_without_a_second_write_back(web, crm_state) -> None:
    hub, client = web
    path = await open_survey(hub, crm_state)
    await answer(client, path, score="8")
    async with hub.store.session() as s:
        versions = list(await s.scalars(select(WriteBack.version)))
    done = await answer(client, path, comment="   ")
    assert done.status_code == 303 and done.headers["location"] == f"{path}/thanks"
    async with hub.store.session() as s:
        assert list(await s.scalars(select(WriteBack.version))) == versions


async def test_a_survey_without_comment_or_topics_ends_with_the_score(web, crm_state) -> None:
    hub, client = web
    hub.config.surveys["csat"].comment = False
    path = await open_survey(hub, crm_state, kind="csat")
    posted = await answer(client, path, score="4")
    assert posted.headers["location"] == f"{path}/thanks"
    assert (await client.get(path)).headers["location"] == f"{path}/thanks"


async def test_a_too_long_comment_is_refused_and_kept_in_the_form(web, crm_state) -> None:
    hub, client = web
    path = await open_survey(hub, crm_state)
    await answer(client, path, score="5")
    long = "å" * 5001
    reply = await answer(client, path, comment=long)
    assert reply.status_code == 400
    assert "Please shorten your comment to 5000 characters." in reply.text and long in reply.text
    assert (await responses(hub))[0].comment is None


async def test_the_thank_you_page_has_the_link_and_waits_for_an_answer(web, crm_state) -> None:
    hub, client = web
    hub.config.surveys["nps"].thank_you_link = "https://example.com/reviews?x=1&y=2"
    path = await open_survey(hub, crm_state, language="sv-SE")
    early = await client.get(f"{path}/thanks")
    assert early.status_code == 303 and early.headers["location"] == path
    await answer(client, path, score="10")
    thanks = await client.get(f"{path}/thanks")
    assert "Tack för ditt svar!" in thanks.text
    assert 'href="https://example.com/reviews?x=1&amp;y=2">Fortsätt</a>' in thanks.text


# --- languages ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("crm_language", "lang", "question", "low", "button"),
    [
        ("nb-NO", "nb", "Hvor sannsynlig er det at du vil anbefale", "Lite sannsynlig", "Neste"),
        ("no", "nb", "Hvor sannsynlig er det at du vil anbefale", "Lite sannsynlig", "Neste"),
        ("sv_SE", "sv", "Hur troligt är det att du skulle rekommendera", "Inte troligt", "Nästa"),
        ("de-AT", "de", "Wie wahrscheinlich ist es, dass Sie", "Unwahrscheinlich", "Weiter"),
        ("fi-FI", "fi", "Kuinka todennäköisesti suosittelisit", "Epätodennäköistä", "Seuraava"),
        ("nl-BE", "nl", "Hoe waarschijnlijk is het dat u", "Niet waarschijnlijk", "Volgende"),
        ("fr-CA", "fr", "Quelle est la probabilité que vous recommandiez", "Peu probable", "Suivant"),
        ("da", "da", "Hvor sandsynligt er det, at du vil anbefale", "Ikke sandsynligt", "Næste"),
        ("pl-PL", "en", "How likely are you to recommend", "Not likely", "Next"),  # -> campaign default
        (None, "en", "How likely are you to recommend", "Not likely", "Next"),
    ],
)
async def test_the_page_speaks_the_persons_crm_language(
    web, crm_state, crm_language, lang, question, low, button
) -> None:
    hub, client = web
    hub.config.campaigns["case_closed"].default_language = "en"
    page = await client.get(await open_survey(hub, crm_state, language=crm_language))
    assert f'<html lang="{lang}">' in page.text
    assert (
        question in page.text and f'aria-label="0, {low}"' in page.text and f">{button}</button>" in page.text
    )


async def test_the_surveys_own_question_wins_over_the_built_in_one(web, crm_state) -> None:
    hub, client = web
    hub.config.surveys["nps"].question = {"nb": "Ville du anbefalt {company} til noen du kjenner?"}
    hub.config.hub.branding.company_name = "Fjordkraft"
    page = await client.get(await open_survey(hub, crm_state, language="nb-NO"))
    assert "Ville du anbefalt Fjordkraft til noen du kjenner?" in page.text
    assert "Lite sannsynlig" in page.text and "Takk for at du kontaktet Fjordkraft." in page.text


# --- friendly pages -------------------------------------------------------------------------------------------


async def test_unknown_links_are_404_in_the_browsers_language(web) -> None:
    _, client = web
    german = await client.get("/s/not-a-token", headers={"Accept-Language": "de-CH,de;q=0.9,en;q=0.5"})
    assert german.status_code == 404 and '<html lang="de">' in german.text
    assert "Dieser Umfragelink ist ungültig." in german.text
    english = await client.get("/s/not-a-token/thanks")
    assert english.status_code == 404 and "This survey link is not valid." in english.text
    posted = await client.post("/s/not-a-token", data={"score": "5"})
    assert posted.status_code == 404


async def test_expired_and_closed_links_get_a_page_in_the_persons_language(web, crm_state) -> None:
    hub, client = web
    path = await open_survey(hub, crm_state, language="nl-NL")
    async with hub.store.session() as s:
        (await s.scalar(select(Token).where(Token.purpose == "survey"))).expires_at = hub.now() - timedelta(1)
    expired = await client.get(path)
    assert expired.status_code == 410 and "Deze enquête is verlopen." in expired.text
    assert (await client.post(path, data={"score": "3"})).status_code == 410
    async with hub.store.session() as s:
        (await s.scalar(select(Token).where(Token.purpose == "survey"))).expires_at = hub.now() + timedelta(1)
    await answer(client, path, score="3")
    hub.config.hub.amend_window_hours = 0
    closed = await client.get(path)
    assert closed.status_code == 200 and "Deze enquête is gesloten." in closed.text
    late = await client.post(path, data={"comment": "te laat"})
    assert late.status_code == 409 and "Deze enquête is gesloten." in late.text
    assert "Traceback" not in expired.text + closed.text + late.text


async def test_a_well_formed_answer_on_a_link_that_expired_or_closed_after_its_page_is_refused(
    web, crm_state
) -> None:
    """The customer opened the page in time and posts a valid answer with its CSRF field: the link is looked
    up in the answer's own transaction, which refuses it with the same page and status, storing nothing."""
    hub, client = web
    path = await open_survey(hub, crm_state, language="nl-NL")
    csrf = csrf_of((await client.get(path)).text)
    async with hub.store.session() as s:
        (await s.scalar(select(Token).where(Token.purpose == "survey"))).expires_at = hub.now() - timedelta(1)
    expired = await client.post(path, data={"csrf": csrf, "score": "3"})
    assert expired.status_code == 410 and "Deze enquête is verlopen." in expired.text
    assert await responses(hub) == []
    async with hub.store.session() as s:
        (await s.scalar(select(Token).where(Token.purpose == "survey"))).expires_at = hub.now() + timedelta(1)
    assert (await client.post(path, data={"csrf": csrf, "score": "3"})).status_code == 303
    hub.config.hub.amend_window_hours = 0
    late = await client.post(path, data={"csrf": csrf, "comment": "te laat"})
    assert late.status_code == 409 and "Deze enquête is gesloten." in late.text
    [stored] = await responses(hub)
    assert (stored.rating, stored.comment) == (3, None)
    unknown = await client.post("/s/not-a-link", data={"csrf": csrf, "score": "3"})
    assert unknown.status_code == 404


async def test_a_plain_answer_is_stored_without_reading_its_page_first(web, crm_state, monkeypatch) -> None:
    """The POST every customer sends (a score with its CSRF field) costs one transaction, no read before it."""
    hub, client = web
    path = await open_survey(hub, crm_state)
    csrf = csrf_of((await client.get(path)).text)
    reads: list[str] = []
    page_for_token = hub.engine.page_for_token

    async def counted(token: str, purpose: str = "survey") -> object:
        reads.append(token)
        return await page_for_token(token, purpose)

    monkeypatch.setattr(hub.engine, "page_for_token", counted)
    posted = await client.post(path, data={"csrf": csrf, "score": "10"})
    assert posted.status_code == 303 and posted.headers["location"] == path  # on to the follow-up
    assert reads == []
    [stored] = await responses(hub)
    assert (stored.rating, stored.category) == (10, "promoter")
    out_of_range = await client.post(path, data={"csrf": csrf, "score": "11"})
    assert out_of_range.status_code == 400 and len(reads) == 1  # refused: the page read says why


async def test_the_unsubscribe_pages_speak_the_persons_language(web, crm_state) -> None:
    hub, client = web
    await open_survey(hub, crm_state, language="fi")
    url = crm_state.outbox[-1]["unsubscribe_url"].replace("http://127.0.0.1:8000", "")
    confirm = await client.get(url)
    assert "Haluatko, ettemme enää lähetä sinulle kyselyjä?" in confirm.text
    done = await client.post(url)
    assert done.status_code == 200 and "Emme lähetä sinulle enää kyselyjä." in done.text
    assert (await client.get("/u/nope")).status_code == 404


# --- what must never happen -----------------------------------------------------------------------------------


async def test_get_and_head_never_record(web, crm_state) -> None:
    hub, client = web
    path = await open_survey(hub, crm_state)
    for url in (f"{path}?score=9", f"{path}?score=0&change=1", f"{path}/thanks", path):
        assert (await client.get(url)).status_code in (200, 303)
        assert (await client.head(url)).status_code in (200, 303)
    page = await client.get(f"{path}?score=9")
    assert radios(page.text) and 'value="9" checked' in page.text
    for odd in ("12", "²", "abc", "-1"):
        assert " checked" not in (await client.get(f"{path}?score={odd}")).text
    assert await responses(hub) == []


async def test_posts_without_the_right_csrf_token_are_refused(web, crm_state) -> None:
    hub, client = web
    path = await open_survey(hub, crm_state, language="de")
    other = await open_survey(hub, crm_state, language="de", person="P4")
    assert other != path
    other_token = csrf_of((await client.get(other)).text)
    page = await client.get(path)
    for data in ({"score": "9"}, {"score": "9", "csrf": "0" * 64}, {"score": "9", "csrf": other_token}):
        refused = await client.post(path, data=data)
        assert refused.status_code == 403 and "Diese Seite ist abgelaufen." in refused.text
        assert f'href="{path}">Zurück zur Umfrage</a>' in refused.text
    client.cookies.clear()  # the right field without its cookie: a cross-site form
    stranger = await client.post(path, data={"score": "9", "csrf": csrf_of(page.text)})
    assert stranger.status_code == 403
    assert await responses(hub) == []


@pytest.mark.parametrize(
    ("kind", "bad", "message"),
    [
        ("nps", "11", "Please choose a value from 0 to 10."),
        ("nps", "-1", "Please choose a value from 0 to 10."),
        ("nps", "ten", "Please choose a value from 0 to 10."),
        ("nps", "--1", "Please choose a value from 0 to 10."),
        ("nps", "٣", "Please choose a value from 0 to 10."),
        ("nps", "1e1", "Please choose a value from 0 to 10."),
        ("nps", " ", "Please choose an answer."),
        ("csat", "0", "Please choose a value from 1 to 5."),
        ("ces", "8", "Please choose a value from 1 to 7."),
        ("smiley", "4", "Please choose a value from 1 to 3."),
    ],
)
async def test_values_outside_the_scale_are_refused(web, crm_state, kind, bad, message) -> None:
    hub, client = web
    path = await open_survey(hub, crm_state, kind=kind)
    reply = await answer(client, path, score=bad)
    assert reply.status_code == 400 and f'role="alert">{message}</p>' in reply.text
    assert await responses(hub) == []


async def test_no_choice_is_refused_in_the_persons_language(web, crm_state) -> None:
    hub, client = web
    path = await open_survey(hub, crm_state, language="fr-BE")
    reply = await answer(client, path)
    assert reply.status_code == 400 and "Veuillez choisir une réponse." in reply.text
    assert await responses(hub) == []


async def test_posts_are_rate_limited_per_link_and_per_client(web, crm_state) -> None:
    hub, client = web
    app = client._transport.app  # type: ignore[attr-defined]
    app.state.survey_limits = Limits(RateLimiter(2, 60), RateLimiter(100, 60))
    path = await open_survey(hub, crm_state, language="sv")
    csrf = csrf_of((await client.get(path)).text)
    assert [(await client.post(path, data={"csrf": csrf, "score": "x"})).status_code for _ in range(3)] == [
        400,
        400,
        429,
    ]
    limited = await client.post(path, data={"csrf": csrf, "score": "7"})
    assert limited.status_code == 429 and limited.headers["retry-after"] == "60"
    assert "Too many attempts." in limited.text  # no person known before the lookup: the browser's language
    app.state.survey_limits = Limits(RateLimiter(100, 60), RateLimiter(1, 60))
    other = await open_survey(hub, crm_state, person="P4")
    await client.post(path, data={"csrf": csrf, "score": "x"})
    assert (await client.post(other, data={"score": "1"})).status_code == 429
    assert await responses(hub) == []
    unsubscribe = await client.post("/u/some-unsubscribe-token")  # the same client's limit, the same answer
    assert unsubscribe.status_code == 429 and unsubscribe.headers["retry-after"] == "60"


# --- headers and colours --------------------------------------------------------------------------------------


async def test_pages_allow_no_script_and_leak_no_link(web, crm_state) -> None:
    hub, client = web
    hub.config.hub.branding.logo_url = "https://cdn.example.com/logo.svg"
    page = await client.get(await open_survey(hub, crm_state))
    policy = page.headers["content-security-policy"]
    nonce = re.search(r"'nonce-([^']+)'", policy).group(1)
    assert "script-src" not in policy and "default-src 'none'" in policy
    assert "img-src 'self' data: https://cdn.example.com" in policy
    assert f'<style nonce="{nonce}">' in page.text and "<script" not in page.text
    assert page.headers["referrer-policy"] == "no-referrer" and page.headers["cache-control"] == "no-store"
    assert page.headers["x-frame-options"] == "DENY"
    stylesheet = re.search(r'href="(/static/survey\.css\?v=[0-9a-f]+)"', page.text).group(1)
    css = await client.get(stylesheet)
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")


@pytest.mark.parametrize("colour", ["#0f766e", "#ffd43b", "#ffffff", "#000", "#1f5fa8", "#e11d48"])
def test_every_brand_colour_gets_readable_pairs(colour) -> None:
    theme = theme_for(colour)
    white = (1.0, 1.0, 1.0)
    assert contrast(rgb_of(theme.brand), rgb_of(theme.on_brand)) >= 4.5
    assert contrast(rgb_of(theme.ink), white) >= 4.5
    assert contrast(rgb_of(theme.edge), white) >= 3


def test_a_colour_that_is_not_a_hex_colour_is_not_put_into_css() -> None:
    assert theme_for("red;} body{display:none").brand == "#1f5fa8"


async def test_static_files_and_head_of_a_page(web, crm_state) -> None:
    hub, client = web
    path = await open_survey(hub, crm_state)
    head = await client.head(path)
    assert head.status_code == 200 and head.headers["content-type"].startswith("text/html")
    assert (await client.get("/static/nope.css")).status_code == 404
    async with hub.store.session() as s:
        assert await s.scalar(select(func.count()).select_from(Response)) == 0
