"""One SMTP session for many messages, a new one when the server ended it, and the send-rate limit."""

from __future__ import annotations

import asyncio
import time
from itertools import pairwise

from hub_email.catcher import MailCatcher

from hub import Recipient


async def test_consecutive_sends_share_one_connection(catcher, make_channel, survey) -> None:
    channel = make_channel(catcher)

    await channel.send(survey(recipient=Recipient(email="ann@example.com")))
    await channel.send(survey(recipient=Recipient(email="bob@example.com")))

    first, second = catcher.messages
    assert first.rcpt_tos == ("ann@example.com",) and second.rcpt_tos == ("bob@example.com",)
    assert first.peer == second.peer  # same client socket: one SMTP session
    assert channel.diagnostics()["connections_opened"] == 1


async def test_send_reconnects_after_the_server_closed_an_idle_session(make_channel, survey) -> None:
    with MailCatcher(timeout=0.3) as catcher:  # the server drops sessions idle for 0.3 s
        channel = make_channel(catcher)
        await channel.send(survey())
        await asyncio.sleep(0.8)

        await channel.send(survey())

        first, second = catcher.messages
        assert first.peer != second.peer
        assert channel.diagnostics()["connections_opened"] == 2
        await channel.aclose()


async def test_send_survives_a_server_restart_between_messages(make_channel, survey) -> None:
    catcher = MailCatcher().start()
    channel = make_channel(catcher)
    await channel.send(survey())
    catcher.stop()
    catcher.start()  # the same port again

    await channel.send(survey())

    assert len(catcher.messages) == 2
    await channel.aclose()
    catcher.stop()


async def test_concurrent_sends_all_arrive_each_on_a_session_of_its_own(
    catcher, make_channel, survey
) -> None:
    channel = make_channel(catcher)  # max_connections: 4 by default
    people = [f"person{i}@example.com" for i in range(8)]

    await asyncio.gather(*(channel.send(survey(recipient=Recipient(email=p))) for p in people))

    assert sorted(mail.rcpt_tos[0] for mail in catcher.messages) == sorted(people)
    # an SMTP session carries one message at a time: sends at once took sessions side by side, at most four,
    # and the next ones reused them
    assert channel.diagnostics()["connections_opened"] == 4
    assert len({mail.peer for mail in catcher.messages}) == 4

    await channel.send(survey(recipient=Recipient(email="later@example.com")))
    assert channel.diagnostics()["connections_opened"] == 4  # a send after the burst reuses an open one
    await channel.aclose()
    assert channel.diagnostics()["connected"] is False  # closing ends every session


async def test_one_connection_carries_concurrent_sends_one_after_the_other(
    catcher, make_channel, survey
) -> None:
    channel = make_channel(catcher, max_connections=1)
    people = [f"person{i}@example.com" for i in range(8)]

    await asyncio.gather(*(channel.send(survey(recipient=Recipient(email=p))) for p in people))

    assert sorted(mail.rcpt_tos[0] for mail in catcher.messages) == sorted(people)
    assert channel.diagnostics()["connections_opened"] == 1
    assert len({mail.peer for mail in catcher.messages}) == 1


async def test_rate_limit_spaces_sends(catcher, make_channel, survey) -> None:
    channel = make_channel(catcher, max_per_second=10)

    started = time.monotonic()
    for _ in range(5):
        await channel.send(survey())
    elapsed = time.monotonic() - started

    # the first goes at once, each further one waits its tenth of a second
    assert elapsed >= 0.38
    assert len(catcher.messages) == 5
    gaps = [(b.received_at - a.received_at).total_seconds() for a, b in pairwise(catcher.messages)]
    assert min(gaps) >= 0.08


async def test_rate_limit_holds_for_concurrent_sends(catcher, make_channel, survey) -> None:
    channel = make_channel(catcher, max_per_second=20)

    started = time.monotonic()
    await asyncio.gather(*(channel.send(survey()) for _ in range(6)))

    assert time.monotonic() - started >= 0.23  # five gaps of 0.05 s
    assert len(catcher.messages) == 6


async def test_closed_channel_opens_a_new_connection_when_used_again(catcher, make_channel, survey) -> None:
    channel = make_channel(catcher)
    await channel.send(survey())
    await channel.aclose()
    assert channel.diagnostics()["connected"] is False

    await channel.send(survey())

    assert len(catcher.messages) == 2
    assert channel.diagnostics()["connections_opened"] == 2
