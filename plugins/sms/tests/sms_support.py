"""Helpers of the SMS tests: numbers, messages and settings pointed at the Twilio emulator."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import pytest
from fastapi import FastAPI, Request, Response
from hub_sms.config import SmsSettings
from hub_sms.emulator import SmsEmulator

from hub import Branding, Recipient, ReplyMessage, ScaleOption, SurveyKind, SurveyMessage, WebhookRequest
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
