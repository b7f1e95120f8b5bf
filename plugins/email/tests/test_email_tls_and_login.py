"""STARTTLS, implicit TLS and login against a catcher with a certificate from a test CA."""

from __future__ import annotations

import pytest
from hub_email.catcher import MailCatcher

from hub import AddressRejected, AuthError, ConfigError, TransientError


@pytest.fixture
def secure_catcher(test_ca):
    """A submission server: STARTTLS with the test CA's certificate, login required before sending."""
    with MailCatcher(tls_context=test_ca.server_context(), credentials=("hub", "s3cret-pass")) as running:
        yield running


async def test_starttls_and_login_deliver(secure_catcher, make_channel, survey, test_ca, monkeypatch) -> None:
    monkeypatch.setenv("SMTP_PASSWORD", "s3cret-pass")
    channel = make_channel(
        secure_catcher, username="hub", password="env:SMTP_PASSWORD", ca_bundle=str(test_ca.ca_file)
    )
    assert channel.settings.security == "starttls"

    await channel.send(survey())

    assert len(secure_catcher.messages) == 1


async def test_implicit_tls_delivers(test_ca, make_channel, survey) -> None:
    with MailCatcher(tls_context=test_ca.server_context(), implicit_tls=True) as catcher:
        channel = make_channel(catcher, ca_bundle=str(test_ca.ca_file))
        assert channel.settings.security == "tls"
        await channel.send(survey())
        await channel.aclose()
        assert len(catcher.messages) == 1


async def test_wrong_password_is_an_auth_error_without_the_password(
    secure_catcher, make_channel, survey, test_ca, monkeypatch
) -> None:
    monkeypatch.setenv("SMTP_PASSWORD", "wrong-password")
    channel = make_channel(
        secure_catcher, username="hub", password="env:SMTP_PASSWORD", ca_bundle=str(test_ca.ca_file)
    )

    with pytest.raises(AuthError, match="535") as caught:
        await channel.send(survey())

    assert "check username and password" in str(caught.value)
    assert "wrong-password" not in str(caught.value)
    assert "wrong-password" not in repr(channel.diagnostics())
    assert secure_catcher.messages == []


async def test_missing_login_is_an_auth_error(secure_catcher, make_channel, survey, test_ca) -> None:
    channel = make_channel(secure_catcher, ca_bundle=str(test_ca.ca_file))

    with pytest.raises(AuthError, match="530"):
        await channel.send(survey())


async def test_untrusted_certificate_is_a_configuration_problem(
    secure_catcher, make_channel, survey, monkeypatch
):
    monkeypatch.setenv("SMTP_PASSWORD", "s3cret-pass")
    channel = make_channel(secure_catcher, username="hub", password="env:SMTP_PASSWORD")  # no ca_bundle

    with pytest.raises(ConfigError, match="certificate") as caught:
        await channel.send(survey())

    assert "ca_bundle" in str(caught.value)
    assert secure_catcher.messages == []


async def test_starttls_is_never_skipped_when_the_server_lacks_it(catcher, make_channel, survey, monkeypatch):
    # a plain server (or a man in the middle stripping STARTTLS) must not receive the password in the clear
    monkeypatch.setenv("SMTP_PASSWORD", "s3cret-pass")
    channel = make_channel(catcher, security="starttls", username="hub", password="env:SMTP_PASSWORD")

    with pytest.raises(ConfigError, match="STARTTLS"):
        await channel.send(survey())
    assert catcher.messages == []


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        ("550 5.1.1 no such user (auth was s3cret-pass)", AddressRejected),
        ("451 4.3.0 busy, s3cret-pass", TransientError),
    ],
)
async def test_a_server_that_echoes_the_password_in_a_refusal_gets_the_same_error_without_it(
    secure_catcher, make_channel, survey, test_ca, monkeypatch, reply, kind
) -> None:
    monkeypatch.setenv("SMTP_PASSWORD", "s3cret-pass")
    secure_catcher.rejections["ann@example.com"] = reply
    channel = make_channel(
        secure_catcher, username="hub", password="env:SMTP_PASSWORD", ca_bundle=str(test_ca.ca_file)
    )
    with pytest.raises(kind) as refused:
        await channel.send(survey())
    assert "s3cret-pass" not in str(refused.value) and "**********" in str(refused.value)
    if isinstance(refused.value, AddressRejected):
        assert refused.value.address == "ann@example.com"
    else:
        assert refused.value.sent is False, "a deferral took nothing"
