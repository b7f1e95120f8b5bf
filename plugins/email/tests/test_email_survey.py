"""A survey invitation as the customer receives it: both parts, their language, working links, headers."""

from __future__ import annotations

from hub_email.catcher import MailCatcher

from hub import Branding, Recipient, ScaleOption, SurveyKind


async def test_invitation_arrives_with_text_and_html_parts(
    catcher: MailCatcher, make_channel, survey
) -> None:
    channel = make_channel(catcher)
    message = survey()

    delivery = await channel.send(message)

    [mail] = catcher.messages
    assert mail.mail_from == "feedback@acme.example"
    assert mail.rcpt_tos == ("ann@example.com",)
    assert mail.message.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in mail.message.iter_parts()] == ["text/plain", "text/html"]
    assert mail.subject == "How did we do?"
    assert mail.message["To"] == "Ann Lee <ann@example.com>"
    assert mail.message["From"] == "Acme <feedback@acme.example>"
    for body in (mail.text, mail.html):
        assert body is not None
        assert "You recently contacted our support team." in body
        assert "How likely are you to recommend Acme to a friend?" in body
        assert "Not at all likely" in body and "Extremely likely" in body
        assert "https://hub.example/s/tok123" in body
    assert delivery.message_id == mail.message["Message-ID"]
    assert delivery.message_id is not None and delivery.message_id.endswith("@acme.example>")


async def test_each_answer_button_links_to_the_survey_with_that_answer(
    catcher, make_channel, survey, links
) -> None:
    await make_channel(catcher).send(survey())

    [mail] = catcher.messages
    found = links(mail.html)
    buttons = [link for link in found if "rating=" in link["href"]]
    assert [(b["text"], b["href"]) for b in buttons] == [
        (str(i), f"https://hub.example/s/tok123?rating={i}") for i in range(11)
    ]
    # a screen reader hears what the ends of the scale mean
    assert buttons[0]["aria-label"] == "0, Not at all likely"
    assert buttons[-1]["aria-label"] == "10, Extremely likely"
    assert {
        "href": "https://hub.example/s/tok123",
        "aria-label": "",
        "text": "https://hub.example/s/tok123",
    } in found
    assert {
        "href": "https://hub.example/u/tok123",
        "aria-label": "",
        "text": "Unsubscribe from surveys",
    } in found
    assert "Unsubscribe from surveys: https://hub.example/u/tok123" in (mail.text or "")


async def test_one_click_unsubscribe_headers(catcher, make_channel, survey) -> None:
    await make_channel(catcher).send(survey())

    [mail] = catcher.messages
    assert mail.message["List-Unsubscribe"] == "<https://hub.example/u/tok123>"
    assert mail.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # no out-of-office replies to a machine-made invitation
    assert mail.message["Auto-Submitted"] == "auto-generated"


async def test_one_click_is_not_claimed_for_a_plain_http_unsubscribe_link(
    catcher, make_channel, survey
) -> None:
    # RFC 8058 allows the one-click signal only with an HTTPS link (a demo hub runs on http://127.0.0.1)
    await make_channel(catcher).send(survey(unsubscribe_url="http://127.0.0.1:8000/u/tok123"))

    [mail] = catcher.messages
    assert mail.message["List-Unsubscribe"] == "<http://127.0.0.1:8000/u/tok123>"
    assert mail.message["List-Unsubscribe-Post"] is None


async def test_invitation_is_in_the_language_of_the_message(catcher, make_channel, survey) -> None:
    message = survey(
        language="de",
        recipient=Recipient(name="Jörg Müller", email="joerg@example.de", language="de"),
        subject="Wie waren wir?",
        intro="Sie hatten kürzlich Kontakt mit unserem Support.",
        question="Wie wahrscheinlich ist es, dass Sie Acme weiterempfehlen?",
        low_label="Überhaupt nicht wahrscheinlich",
        high_label="Äußerst wahrscheinlich",
        unsubscribe_text="Keine Umfragen mehr erhalten",
    )
    await make_channel(catcher).send(message)

    [mail] = catcher.messages
    assert mail.subject == "Wie waren wir?"
    assert mail.message["Content-Language"] == "de"
    assert '<html lang="de" dir="ltr">' in (mail.html or "")
    for body in (mail.text or "", mail.html or ""):
        for text in ("Sie hatten kürzlich Kontakt", "Acme weiterempfehlen?", "Überhaupt nicht", "Äußerst"):
            assert text in body
        assert "Keine Umfragen mehr erhalten" in body
        assert "How likely" not in body and "Unsubscribe" not in body


async def test_right_to_left_language_is_marked(catcher, make_channel, survey) -> None:
    await make_channel(catcher).send(survey(language="ar", question="ما مدى احتمال أن توصي بنا؟"))

    [mail] = catcher.messages
    assert '<html lang="ar" dir="rtl">' in (mail.html or "")


async def test_norwegian_letters_and_emoji_survive_in_both_parts(catcher, make_channel, survey) -> None:
    channel = make_channel(catcher, from_name="Kundeservice Bærum")
    message = survey(
        language="nb",
        recipient=Recipient(name="Åse Ødegård", email="ase@blåbær.no", language="nb"),
        subject="Hvordan gikk det? 🎉",
        intro="Hei Åse! Takk for at du kontaktet oss 😊",
        question="Hvor sannsynlig er det at du anbefaler oss til en venn?",
        low_label="Svært lite sannsynlig",
        high_label="Svært sannsynlig",
        unsubscribe_text="Meld deg av spørreundersøkelser",
    )
    await channel.send(message)

    [mail] = catcher.messages
    assert mail.subject == "Hvordan gikk det? 🎉"
    assert mail.message["From"].addresses[0].display_name == "Kundeservice Bærum"
    assert mail.message["To"].addresses[0].display_name == "Åse Ødegård"
    # the internationalised domain travels in its ASCII form, which every server accepts
    assert mail.rcpt_tos == ("ase@xn--blbr-roah.no",)
    for body in (mail.text or "", mail.html or ""):
        assert "Hei Åse! Takk for at du kontaktet oss 😊" in body
        assert "Svært lite sannsynlig" in body
        assert "Meld deg av spørreundersøkelser" in body


async def test_reminder_is_sent_like_an_invitation(catcher, make_channel, survey) -> None:
    await make_channel(catcher).send(survey(kind="reminder", subject="Reminder: how did we do?"))

    [mail] = catcher.messages
    assert mail.subject == "Reminder: how did we do?"
    assert mail.message["List-Unsubscribe"] == "<https://hub.example/u/tok123>"


async def test_smiley_scale_gets_one_button_per_face(catcher, make_channel, survey, links) -> None:
    faces = [("😞", 1), ("😐", 2), ("😀", 3)]
    options = [
        ScaleOption(value=v, label=face, url=f"https://hub.example/s/t?rating={v}") for face, v in faces
    ]
    await make_channel(catcher).send(
        survey(survey_kind=SurveyKind.SMILEY, options=options, low_label="Bad", high_label="Great")
    )

    [mail] = catcher.messages
    buttons = [link for link in links(mail.html) if "rating=" in link["href"]]
    assert [(b["text"], b["href"]) for b in buttons] == [(o.label, o.url) for o in options]


async def test_branding_shows_the_company_logo_and_colour(catcher, make_channel, survey) -> None:
    branding = Branding(company_name="Acme", colour="#0b6e4f", logo_url="https://cdn.acme.example/logo.png")
    await make_channel(catcher).send(survey(branding=branding))

    [mail] = catcher.messages
    html = mail.html or ""
    assert '<img src="https://cdn.acme.example/logo.png" alt="Acme"' in html
    assert "background-color:#0b6e4f" in html


async def test_texts_from_the_crm_cannot_inject_html(catcher, make_channel, survey) -> None:
    branding = Branding(
        company_name="Smith & <b>Sons</b>", colour="red;background:url(x)", logo_url="javascript:x"
    )
    await make_channel(catcher).send(survey(branding=branding, intro="<script>alert(1)</script>"))

    [mail] = catcher.messages
    html = mail.html or ""
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "Smith &amp; &lt;b&gt;Sons&lt;/b&gt;" in html
    assert "url(x)" not in html and "javascript:" not in html
    # the plain-text part shows the texts as they are
    assert "<script>alert(1)</script>" in (mail.text or "")
    assert "Smith & <b>Sons</b>" in (mail.text or "")
