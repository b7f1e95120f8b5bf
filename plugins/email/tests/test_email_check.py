"""``cxhub check`` lines of the email channel: what was tested, whether it passed, what to fix."""

from __future__ import annotations

import socket

from hub_email.catcher import MailCatcher


async def test_check_reports_connection_login_and_sender(test_ca, make_channel, monkeypatch) -> None:
    monkeypatch.setenv("SMTP_PASSWORD", "s3cret-pass")
    with MailCatcher(tls_context=test_ca.server_context(), credentials=("hub", "s3cret-pass")) as catcher:
        channel = make_channel(
            catcher, username="hub", password="env:SMTP_PASSWORD", ca_bundle=str(test_ca.ca_file)
        )

        results = await channel.check()

    assert [(r.name, r.ok) for r in results] == [
        (f"connect to 127.0.0.1:{catcher.port} (starttls)", True),
        ("log in as hub", True),
        ("sender feedback@acme.example accepted", True),
    ]
    assert results[0].detail.startswith("encrypted (TLS")
    assert catcher.messages == []  # checking sends nothing


async def test_check_reports_a_refused_login_with_the_fix(test_ca, make_channel, monkeypatch) -> None:
    monkeypatch.setenv("SMTP_PASSWORD", "wrong-password")
    with MailCatcher(tls_context=test_ca.server_context(), credentials=("hub", "s3cret-pass")) as catcher:
        channel = make_channel(
            catcher, username="hub", password="env:SMTP_PASSWORD", ca_bundle=str(test_ca.ca_file)
        )

        results = await channel.check()

    assert [r.ok for r in results] == [True, False]
    assert "535" in results[1].detail and "check username and password" in results[1].detail
    assert "wrong-password" not in repr(results)


async def test_check_reports_an_unreachable_server(make_channel) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    channel = make_channel(MailCatcher(port=port))

    [result] = await channel.check()

    assert not result.ok
    assert f"127.0.0.1:{port}" in result.detail


async def test_check_reports_a_plain_connection_as_unencrypted(catcher, make_channel) -> None:
    results = await make_channel(catcher).check()

    assert [r.ok for r in results] == [True, True]
    assert results[0].detail == "not encrypted"
