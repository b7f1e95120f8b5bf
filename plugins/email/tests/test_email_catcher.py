"""The mail catcher as the demo and other processes use it: sync use, waiting, a Maildir on disk."""

from __future__ import annotations

import smtplib
import threading
from email.message import EmailMessage

import pytest
from hub_email.catcher import MailCatcher, load_messages


def plain_mail(subject: str, to: str = "ann@example.com") -> EmailMessage:
    message = EmailMessage()
    message["From"] = "hub@example.com"
    message["To"] = to
    message["Subject"] = subject
    message.set_content("Hei på deg 👋")
    return message


def test_sync_sender_and_wait_for() -> None:
    with MailCatcher() as catcher:
        assert catcher.port != 0

        def send() -> None:
            with smtplib.SMTP(catcher.host, catcher.port) as client:
                client.send_message(plain_mail("first"))
                client.send_message(plain_mail("second", to="bob@example.com"))

        threading.Thread(target=send).start()
        first, second = catcher.wait_for(2, timeout=5)

    assert (first.subject, second.subject) == ("first", "second")
    assert first.mail_from == "hub@example.com"
    assert second.rcpt_tos == ("bob@example.com",)
    assert first.text == "Hei på deg 👋\n"
    assert first.received_at <= second.received_at


def test_wait_for_gives_up_after_the_timeout() -> None:
    with MailCatcher() as catcher, pytest.raises(TimeoutError, match="0 of 1"):
        catcher.wait_for(1, timeout=0.1)


async def test_async_use(make_channel, survey) -> None:
    async with MailCatcher() as catcher:
        channel = make_channel(catcher)
        await channel.send(survey())
        [mail] = await catcher.wait_for_async(1, timeout=5)
        await channel.aclose()
    assert mail.subject == "How did we do?"
    assert not catcher.running


def test_messages_are_stored_for_other_processes(tmp_path) -> None:
    folder = tmp_path / "mail"
    with MailCatcher(directory=folder) as catcher, smtplib.SMTP(catcher.host, catcher.port) as client:
        client.send_message(plain_mail("first"))
        client.send_message(plain_mail("second"), to_addrs=["x@example.com", "y@example.com"])

    stored = load_messages(folder)

    assert [m.subject for m in stored] == ["first", "second"]
    assert stored[1].rcpt_tos == ("x@example.com", "y@example.com")
    assert stored[0].mail_from == "hub@example.com"
    assert stored[0].text == "Hei på deg 👋\n"
    # the envelope is kept beside the message, not mixed into it
    assert stored[0].message["Return-Path"] is None
    assert [m.key for m in stored] == [m.key for m in catcher.messages]


def test_loading_a_folder_where_nothing_arrived_yet(tmp_path) -> None:
    assert load_messages(tmp_path / "nothing-here") == []


def test_clear_forgets_messages_in_memory_and_on_disk(tmp_path) -> None:
    with MailCatcher(directory=tmp_path) as catcher:
        with smtplib.SMTP(catcher.host, catcher.port) as client:
            client.send_message(plain_mail("first"))
        catcher.clear()
        assert catcher.messages == []
        assert load_messages(tmp_path) == []


def test_rejections_bounce_chosen_addresses() -> None:
    with MailCatcher(rejections={"Gone@Example.com": "550 5.1.1 User unknown"}) as catcher:
        with smtplib.SMTP(catcher.host, catcher.port) as client, pytest.raises(smtplib.SMTPRecipientsRefused):
            client.send_message(plain_mail("bounce", to="gone@example.com"))
        assert catcher.messages == []
