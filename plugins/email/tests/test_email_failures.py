"""How SMTP failures reach the hub: skip this recipient, retry later, or an admin must act."""

from __future__ import annotations

import asyncio
import socket

import pytest
from hub_email.catcher import MailCatcher

from hub import ConfigError, Recipient, SkippableError, TransientError


async def test_person_without_email_address_is_skipped(catcher, make_channel, survey) -> None:
    channel = make_channel(catcher)
    for email in (None, "", "   "):
        with pytest.raises(SkippableError, match="no email address"):
            await channel.send(survey(recipient=Recipient(name="Ann", email=email)))
    assert catcher.messages == []


@pytest.mark.parametrize(
    "email", ["ann", "ann@", "@example.com", "ann@example.com, bob@example.com", "a b@x.org"]
)
async def test_malformed_address_is_skipped(catcher, make_channel, survey, email) -> None:
    with pytest.raises(SkippableError, match="not a valid email address"):
        await make_channel(catcher).send(survey(recipient=Recipient(email=email)))
    assert catcher.messages == []


async def test_address_with_line_break_cannot_add_recipients(catcher, make_channel, survey) -> None:
    with pytest.raises(SkippableError):
        await make_channel(catcher).send(
            survey(recipient=Recipient(email="ann@example.com\r\nBcc: eve@evil.example"))
        )
    assert catcher.messages == []


async def test_permanently_rejected_address_is_skipped_not_retried(catcher, make_channel, survey) -> None:
    catcher.rejections["gone@example.com"] = (
        "550 5.1.1 <gone@example.com>: Recipient address rejected: User unknown"
    )
    channel = make_channel(catcher)

    with pytest.raises(SkippableError) as caught:
        await channel.send(survey(recipient=Recipient(email="gone@example.com")))

    message = str(caught.value)
    assert "gone@example.com" in message
    assert "550 5.1.1" in message and "User unknown" in message
    assert "no longer exists" in message
    # the connection stays usable for the next person
    await channel.send(survey())
    assert [mail.rcpt_tos for mail in catcher.messages] == [("ann@example.com",)]


async def test_deferred_address_is_retried_later(catcher, make_channel, survey) -> None:
    catcher.rejections["ann@example.com"] = "451 4.7.1 Greylisted, try again in 5 minutes"
    channel = make_channel(catcher)

    with pytest.raises(TransientError, match=r"451 4\.7\.1 Greylisted"):
        await channel.send(survey())

    del catcher.rejections["ann@example.com"]
    await channel.send(survey())
    assert len(catcher.messages) == 1


async def test_relay_refusal_is_a_configuration_problem_not_a_bad_address(
    catcher, make_channel, survey
) -> None:
    catcher.rejections["ann@example.com"] = "554 5.7.1 <ann@example.com>: Relay access denied"

    with pytest.raises(ConfigError, match="relay"):
        await make_channel(catcher).send(survey())


async def test_unreachable_server_is_transient(make_channel, survey) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    channel = make_channel(MailCatcher(port=port))

    with pytest.raises(TransientError, match=f"127.0.0.1:{port}"):
        await channel.send(survey())


async def test_server_that_never_answers_times_out_as_transient(make_channel, survey) -> None:
    silent = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        channel = make_channel(MailCatcher(port=port), timeout=0.3)
        with pytest.raises(TransientError):
            await asyncio.wait_for(channel.send(survey()), 5)
    finally:
        silent.close()


async def test_a_server_that_refuses_connections_took_nothing_so_no_attempt_is_used(
    make_channel, survey
) -> None:
    with socket.socket() as probe:  # a port nobody listens on: the connection is refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(TransientError) as refused:
        await make_channel(MailCatcher(port=port)).send(survey())
    assert refused.value.sent is False


async def test_a_server_that_never_greets_took_nothing_so_no_attempt_is_used(make_channel, survey) -> None:
    silent = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        with pytest.raises(TransientError) as timed_out:
            await asyncio.wait_for(make_channel(MailCatcher(port=port), timeout=0.3).send(survey()), 5)
    finally:
        silent.close()
    assert timed_out.value.sent is False


async def test_a_deferred_recipient_was_not_taken_so_no_attempt_is_used(
    catcher, make_channel, survey
) -> None:
    catcher.rejections["ann@example.com"] = "451 4.7.1 Greylisted, try again in 5 minutes"
    with pytest.raises(TransientError) as deferred:
        await make_channel(catcher).send(survey())
    assert deferred.value.sent is False and catcher.messages == []
