"""Helpers of the SMS tests: numbers, messages and settings pointed at the Twilio emulator."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
from fastapi import FastAPI, Request, Response
from hub_sms.config import SmsSettings
from hub_sms.emulator import SmsEmulator

from hub import Branding, Recipient, ReplyMessage, ScaleOption, SurveyKind, SurveyMessage, WebhookRequest
from hub.testing import Capabilities
from hub.testing.channel_suite import CHANNEL, channel_suite_config
from hub.testing.server import BackgroundServer

MOBILE = "+4520304050"  # a Danish mobile number
PUBLIC_URL = "https://hub.example"  # of links in test messages; the channels' hub is a Receiver


def settings_for(emulator: SmsEmulator, monkeypatch: pytest.MonkeyPatch, **changes: Any) -> SmsSettings:
    for name, value in emulator.environment().items():
        monkeypatch.setenv(name, value)
    values = {**emulator.instance_settings(), "timeout": 5, **changes}
    return SmsSettings.model_validate(values)


#: an English NPS invitation to Ann's mobile, as the hub builds it
INVITATION: dict[str, Any] = {
    "invitation_id": 7,
    "campaign": "support",
    "recipient": Recipient(name="Ann Lee", phone=MOBILE, language="en"),
    "language": "en",
    "branding": Branding(company_name="Acme"),
    "survey_kind": SurveyKind.NPS,
    "subject": "Your case with Acme",
    "intro": "Thanks for talking to Acme support.",
    "question": "How likely is it that you would recommend Acme to a friend?",
    "low_label": "Not likely",
    "high_label": "Very likely",
    "options": [ScaleOption(value=n, label=str(n), url=f"{PUBLIC_URL}/s/tok?rating={n}") for n in range(11)],
    "survey_url": f"{PUBLIC_URL}/s/tok",
    "unsubscribe_url": f"{PUBLIC_URL}/u/tok",
    "unsubscribe_text": "Unsubscribe from surveys",
}


def survey(**changes: Any) -> SurveyMessage:
    """The invitation with keyword arguments replacing any field."""
    return SurveyMessage(**{**INVITATION, **changes})


def reply_message(text: str, phone: str = MOBILE) -> ReplyMessage:
    return ReplyMessage(
        invitation_id=7, campaign="support", recipient=Recipient(phone=phone), language="en", text=text
    )


class Receiver:
    """A stand-in of the hub's inbound URL on a free port: keeps every request the provider makes to it,
    as the hub's ``WebhookRequest`` (the URL being the one the provider called)."""

    def __init__(self) -> None:
        self.requests: list[WebhookRequest] = []
        self.app = FastAPI()
        self.app.add_api_route("/inbound/{instance}", self._receive, methods=["POST"])
        self.server = BackgroundServer(self.app)

    async def _receive(self, instance: str, request: Request) -> Response:
        body = await request.body()
        self.requests.append(
            WebhookRequest(
                method="POST",
                url=f"{self.server.url}{request.url.path}",
                headers={k.lower(): v for k, v in request.headers.items()},
                body=body,
            )
        )
        return Response(status_code=204)

    def statuses(self) -> list[dict[str, str]]:
        """The forms of the status callbacks received, in arrival order."""
        forms = [dict(parse_qsl(r.body.decode("utf-8"))) for r in self.requests]
        return [f for f in forms if "MessageStatus" in f]


def _capabilities() -> Capabilities:
    """Replies and delivery reports; ``delivery_statuses`` is known to the suite from the hub's SMS support
    on (a suite without it runs the reply tests only)."""
    try:
        return Capabilities(inbound_replies=True, delivery_statuses=True)  # type: ignore[call-arg]
    except TypeError:
        return Capabilities(inbound_replies=True)


class SmsHarness:
    """The SMS channel pointed at the Twilio emulator."""

    plugin = "sms"
    capabilities = _capabilities()

    def __init__(self, emulator: SmsEmulator) -> None:
        self.emulator = emulator
        emulator.forward_to(self.inbound_url.rsplit("/inbound/", 1)[0], CHANNEL)

    @property
    def inbound_url(self) -> str:
        """Where the suite's hub is reached by the provider: its public URL and the channel's inbound path."""
        public_url: str = channel_suite_config(self, Path("."))["hub"]["public_url"]
        return f"{public_url}/inbound/{CHANNEL}"

    def settings(self) -> dict[str, Any]:
        return {**self.emulator.instance_settings(), "auth_token": "env:SMS_SUITE_TOKEN", "timeout": 5}

    def bad_settings(self) -> dict[str, Any]:
        return {**self.settings(), "auth_token": "env:SMS_SUITE_WRONG_TOKEN"}

    def environment(self) -> dict[str, str]:
        return {"SMS_SUITE_TOKEN": self.emulator.state.auth_token, "SMS_SUITE_WRONG_TOKEN": "not-the-token"}

    def address(self) -> dict[str, str]:
        return {"phone": MOBILE}

    def survey_link(self, address: str) -> str | None:
        return self.emulator.survey_link(address)

    def fail_sends(self, count: int, status: int, retry_after: float | None = None) -> None:
        self.emulator.fail_sends(count, status, retry_after)

    def inbound_reply(self, sender: str, text: str) -> WebhookRequest:
        return self.emulator.inbound_request(sender, text, url=self.inbound_url)

    def tamper(self, request: WebhookRequest) -> WebhookRequest:
        form = dict(parse_qsl(request.body.decode("utf-8"), keep_blank_values=True))
        field = "Body" if "Body" in form else "MessageStatus"
        form[field] = form[field] + " (changed)"
        return request.model_copy(update={"body": urlencode(form).encode("utf-8")})

    def status_callback(self, message_id: str, status: str, error_code: str | None = None) -> WebhookRequest:
        return self.emulator.status_request(message_id, status, error_code, url=self.inbound_url)

    def messages_to(self, address: str) -> list[str]:
        return [text.body for text in self.emulator.messages(address)]

    def last_message_id(self, address: str) -> str | None:
        texts = self.emulator.messages(address)
        return texts[-1].sid if texts else None
