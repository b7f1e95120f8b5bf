"""What a text says in reply and link mode, and how it is fitted into one segment."""

from __future__ import annotations

import pytest
from hub_sms.segments import count
from hub_sms.texts import describe, message_text
from sms_support import PUBLIC_URL, reply_message, survey

from hub import AlertMessage, Branding, Recipient, SurveyKind
from hub.texts import text as hub_text

REPLY = "Reply with a number from 0 (not likely) to 10 (very likely)."


def test_reply_mode_asks_for_the_score_by_reply_without_a_link() -> None:
    text = message_text(survey(reply_instructions=REPLY))
    assert text.body.startswith("Acme: ")
    assert "recommend Acme" in text.body and text.body.endswith(REPLY)
    assert PUBLIC_URL not in text.body
    assert text.segments.count == 1


def test_link_mode_carries_the_survey_link() -> None:
    text = message_text(survey())
    assert text.body.endswith(f"{PUBLIC_URL}/s/tok")
    assert "recommend Acme" in text.body


def test_the_intro_goes_first_when_the_whole_text_is_too_long() -> None:
    intro = "Thank you for calling our support team about your order last week, we hope it went well."
    text = message_text(survey(intro=intro, reply_instructions=REPLY))
    assert count(f"Acme: {intro} {survey().question} {REPLY}").count == 2
    assert intro not in text.body and REPLY in text.body and survey().question in text.body
    assert text.segments.count == 1 and text.fitted == "intro left out"


def test_then_the_question_is_shortened_never_the_instructions() -> None:
    question = (
        "Thinking about everything that happened from your first call until your case was closed, how likely "
        "are you to recommend Acme to a friend or a colleague?"
    )
    text = message_text(survey(question=question, reply_instructions=REPLY))
    assert text.segments.count == 1
    assert text.body.endswith(REPLY) and "..." in text.body
    assert "Thinking about everything" in text.body
    assert "shortened" in text.fitted


def test_a_language_outside_gsm7_gets_its_own_smaller_segment_and_a_warning() -> None:
    polish = survey(
        language="pl",
        intro="Niedawno kontaktowałeś się z naszym działem obsługi.",
        question="Jak bardzo prawdopodobne jest, że polecisz Acme znajomemu lub współpracownikowi?",
        reply_instructions="Odpowiedz liczbą od 0 (mało prawdopodobne) do 10 (bardzo prawdopodobne).",
    )
    text = message_text(polish)
    assert text.segments.encoding == "UCS-2" and text.segments.count > 1
    assert "Odpowiedz liczbą od 0" in text.body  # the instructions are whole even so
    warnings = describe(polish)
    assert len(warnings) == 1 and "pl" in warnings[0] and "UCS-2" in warnings[0]


def test_no_warning_for_a_text_that_fits() -> None:
    assert describe(survey(reply_instructions=REPLY)) == []
    assert describe(survey()) == []


def test_curly_quotes_do_not_turn_a_danish_text_into_ucs2() -> None:
    danish = survey(
        language="da",
        question="Hvor sandsynligt er det, at du vil anbefale \u201cAcme\u201d til en ven?",
        reply_instructions="Svar med et tal fra 0 til 10.",
    )
    text = message_text(danish)
    assert text.segments.encoding == "GSM-7" and '"Acme"' in text.body


def test_alert_and_reply_messages_are_their_text() -> None:
    alert = AlertMessage(
        invitation_id=7,
        campaign="support",
        recipient=Recipient(phone="+4520304050"),
        subject="Detractor",
        text="Ann Lee gave 3: slow answer.",
        link="https://crm.example/case/1",
    )
    assert message_text(alert).body == "Ann Lee gave 3: slow answer. https://crm.example/case/1"
    assert message_text(reply_message("What is the main reason for your score?")).body == (
        "What is the main reason for your score?"
    )


LANGUAGES = ["en", "da", "sv", "nb", "fi", "de", "fr", "nl"]


@pytest.mark.parametrize("kind", list(SurveyKind))
@pytest.mark.parametrize("language", LANGUAGES)
def test_the_hubs_own_texts_fit_one_segment_in_every_gsm7_language(language: str, kind: SurveyKind) -> None:
    """The survey texts of all eight languages, with a long company name and a real link: GSM-7 and one
    segment each (no letter outside GSM-7, such as a French "ç", in any of them), so ``describe`` is silent."""
    company = "Nordlys Energi"
    message = survey(
        language=language,
        survey_kind=kind,
        branding=Branding(company_name=company),
        intro=hub_text(language, "intro", company=company),
        question=hub_text(language, f"question.{kind.value}", company=company),
        survey_url="https://feedback.nordlys-energi.no/s/AbCdEfGhIjKlMnOpQrStUv",
    )
    text = message_text(message)
    assert text.body.endswith(message.survey_url) and text.body.startswith(f"{company}: ")
    assert text.segments.encoding == "GSM-7", text.body
    assert text.segments.count == 1, text.body
    assert describe(message) == []
