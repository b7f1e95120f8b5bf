"""An alert to a colleague: plain text with a simple HTML alternative, to the given address."""

from __future__ import annotations

import pytest

from hub import AlertMessage, Recipient, SkippableError


def alert(**changes) -> AlertMessage:
    values = {
        "invitation_id": 7,
        "campaign": "support",
        "recipient": Recipient(name="Case Owner", email="owner@acme.example"),
        "subject": "Detractor: Ann Lee answered 3",
        "text": "Ann Lee answered 3 of 10.\nComment: slow & unfriendly\n\nCase 198 was closed yesterday.",
        "link": "https://crm.acme.example/case/198?tab=feedback&x=1",
    }
    values.update(changes)
    return AlertMessage(**values)


async def test_alert_arrives_with_text_and_link(catcher, make_channel, links) -> None:
    delivery = await make_channel(catcher).send(alert())

    [mail] = catcher.messages
    assert mail.rcpt_tos == ("owner@acme.example",)
    assert mail.subject == "Detractor: Ann Lee answered 3"
    assert mail.message["Message-ID"] == delivery.message_id
    assert mail.text is not None
    assert "Ann Lee answered 3 of 10.\nComment: slow & unfriendly" in mail.text
    assert "https://crm.acme.example/case/198?tab=feedback&x=1" in mail.text
    html = mail.html or ""
    assert "Ann Lee answered 3 of 10.<br>Comment: slow &amp; unfriendly" in html
    assert {
        "href": "https://crm.acme.example/case/198?tab=feedback&x=1",
        "aria-label": "",
        "text": "https://crm.acme.example/case/198?tab=feedback&x=1",
    } in links(html)
    # an alert is not a mailing: no unsubscribe header
    assert mail.message["List-Unsubscribe"] is None


async def test_alert_without_link(catcher, make_channel, links) -> None:
    await make_channel(catcher).send(alert(link=None))

    [mail] = catcher.messages
    assert links(mail.html) == []
    assert "https://" not in (mail.text or "")


async def test_alert_without_address_is_skipped(catcher, make_channel) -> None:
    with pytest.raises(SkippableError, match="no email address"):
        await make_channel(catcher).send(alert(recipient=Recipient(name="Case Owner")))
