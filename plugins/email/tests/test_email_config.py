"""Settings errors are caught when the config is loaded, with the key and the fix."""

from __future__ import annotations

import pytest
from hub_email.config import EmailSettings
from pydantic import ValidationError


def settings(**values) -> EmailSettings:
    return EmailSettings.model_validate(
        {"host": "smtp.example.com", "from_address": "feedback@acme.example", **values}
    )


def test_defaults_are_submission_with_starttls() -> None:
    s = settings()
    assert (s.security, s.effective_port, s.max_per_second, s.verify_tls) == ("starttls", 587, 5, True)
    assert settings(security="tls").effective_port == 465
    assert settings(security="none").effective_port == 25
    assert settings(security="tls", port=2465).effective_port == 2465


def test_password_is_read_from_the_environment_and_never_shown(monkeypatch) -> None:
    monkeypatch.setenv("SMTP_PASSWORD", "s3cret-pass")
    s = settings(username="hub", password="env:SMTP_PASSWORD")
    assert s.password is not None and s.password.get_secret_value() == "s3cret-pass"
    assert "s3cret-pass" not in repr(s)
    assert s.model_dump(mode="json")["password"] == "**********"


def test_password_written_in_the_file_is_refused() -> None:
    with pytest.raises(ValidationError, match="env:NAME or file:/path"):
        settings(username="hub", password="s3cret-pass")


def test_username_without_password_is_refused(monkeypatch) -> None:
    with pytest.raises(ValidationError, match="username and password go together"):
        settings(username="hub")


def test_password_over_an_unencrypted_connection_is_refused(monkeypatch) -> None:
    monkeypatch.setenv("SMTP_PASSWORD", "s3cret-pass")
    with pytest.raises(ValidationError, match="unencrypted"):
        settings(security="none", username="hub", password="env:SMTP_PASSWORD")


@pytest.mark.parametrize("address", ["feedback", "Acme <feedback@acme.example>", "a@b.org, c@d.org", ""])
def test_sender_must_be_one_plain_address(address) -> None:
    with pytest.raises(ValidationError, match="from_address"):
        settings(from_address=address)


def test_unknown_key_and_missing_ca_file_are_reported(tmp_path) -> None:
    with pytest.raises(ValidationError, match="passwort"):
        settings(passwort="env:X")
    with pytest.raises(ValidationError, match="ca_bundle"):
        settings(ca_bundle=str(tmp_path / "missing.pem"))


def test_security_is_one_of_three() -> None:
    with pytest.raises(ValidationError, match="security"):
        settings(security="ssl")
