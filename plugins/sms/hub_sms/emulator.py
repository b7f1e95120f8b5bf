"""A local, strict stand-in of Twilio's Messaging API, with phones that receive texts and reply.

The API itself is ``hub_sms.twilio_api`` (Twilio's error codes and shape, segments, signed status callbacks
at least once and out of order). Here it is served on a free loopback port, with the phones: what each number
received, and ``reply(number, text)``, which posts a signed inbound text to the hub as Twilio forwards one;
STOP and START are handled by the emulated provider itself, as Twilio does on long codes.

Used by ``cxhub demo --channel sms`` (the ``/admin/phone`` page) and the tests; never by a production hub.
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx

from hub import WebhookRequest
from hub.testing.server import BackgroundServer
from hub_sms.twilio_api import (
    Faults,
    Text,
    TwilioApi,
    TwilioState,
    inbound_params,
    sid,
    signed_form,
    status_params,
)

#: keywords Twilio handles itself on long codes (the whole text, any case)
STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"})
START_WORDS = frozenset({"START", "YES", "UNSTOP"})
STOP_REPLY = (
    "You have successfully been unsubscribed. You will not receive any more messages from this number. "
    "Reply START to resubscribe."
)
START_REPLY = (
    "You have successfully been re-subscribed to messages from this number. Reply STOP to unsubscribe."
)
_LINK = re.compile(r"https?://\S+/s/[A-Za-z0-9_-]+")


class SmsEmulator:
    """The emulated provider on a free loopback port plus its phones: a ``hub.ChannelEmulator`` with the
    phone protocol (``conversations``, ``reply``) the hub's ``/admin/phone`` page and demo use."""

    def __init__(self, state: TwilioState | None = None) -> None:
        self.state = state or TwilioState()
        self.api = TwilioApi(self.state)
        self.server: BackgroundServer | None = None
        self.replies: dict[str, list[Text]] = defaultdict(list)

    # --- ChannelEmulator ----------------------------------------------------------------------------------------

    def start(self, workdir: Path | None = None, hub_url: str = "", instance: str = "sms") -> None:
        if hub_url:
            self.forward_to(hub_url, instance)
        self.server = BackgroundServer(self.api.app).start()

    def forward_to(self, hub_url: str, instance: str) -> None:
        """Point the number's messaging webhook at the hub's inbound URL of ``instance``."""
        with self.state.lock:
            self.state.sms_url = f"{hub_url.rstrip('/')}/inbound/{instance}"

    def stop(self) -> None:
        if self.server is not None:
            self.api.wait_settled(timeout=5)
            self.server.stop()
            self.server = None

    def __enter__(self) -> SmsEmulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self.server is not None, "start the emulator first"
        return self.server.url

    def instance_settings(self) -> dict[str, Any]:
        return {
            "api_url": self.url,
            "account_sid": self.state.account_sid,
            "auth_token": "env:CXHUB_DEMO_SMS_AUTH_TOKEN",
            "from_number": self.state.number,
            "default_region": "DK",
            "messages_per_second": None,
        }

    def environment(self) -> dict[str, str]:
        return {"CXHUB_DEMO_SMS_AUTH_TOKEN": self.state.auth_token}

    def links(self) -> dict[str, str]:
        return {"phone": "/admin/phone"}

    def survey_link(self, recipient: str | None = None) -> str | None:
        """The survey link in the newest text to ``recipient`` (any phone when None) that has one."""
        for text in reversed(self.messages(recipient)):
            match = _LINK.search(text.body)
            if match:
                return match.group(0)
        return None

    # --- the phones ---------------------------------------------------------------------------------------------

    def messages(self, number: str | None = None) -> list[Text]:
        """Texts the phones received (of ``number``), oldest first: only those that were delivered."""
        with self.state.lock:
            texts = [t for t in self.state.texts.values() if number is None or t.number == number]
        return [t for t in sorted(texts, key=lambda t: t.at) if t.status not in ("undelivered", "failed")]

    def conversations(self) -> list[dict[str, Any]]:
        """Per phone number, the texts both ways, oldest conversation first (the phone protocol)."""
        with self.state.lock:
            texts = list(self.state.texts.values())
            texts += [t for replies in self.replies.values() for t in replies]
        threads: dict[str, list[Text]] = defaultdict(list)
        for text in sorted(texts, key=lambda t: t.at):
            threads[text.number].append(text)
        return [
            {
                "number": number,
                "messages": [
                    {
                        "sender": t.sender,
                        "text": t.body,
                        "at": t.at.isoformat(),
                        **({"status": t.status} if t.sender == "hub" else {}),
                    }
                    for t in thread
                ],
            }
            for number, thread in threads.items()
        ]

    def inbound_request(self, number: str, text: str, url: str | None = None) -> WebhookRequest:
        """The signed request Twilio would make for ``text`` from ``number`` to the hub's inbound URL."""
        target = url or self.state.sms_url
        params = inbound_params(self.state, number, text, sid("SM"))
        body, headers = signed_form(self.state.auth_token, target, params)
        return WebhookRequest(
            method="POST", url=target, headers={k.lower(): v for k, v in headers.items()}, body=body
        )

    def status_request(
        self, message_id: str, status: str, error_code: str | None = None, url: str | None = None
    ) -> WebhookRequest:
        """The signed status callback Twilio would post for one of its texts."""
        with self.state.lock:
            text = self.state.texts[message_id]
        target = url or text.status_callback or self.state.sms_url
        params = status_params(self.state, text, status, int(error_code) if error_code else None)
        body, headers = signed_form(self.state.auth_token, target, params)
        return WebhookRequest(
            method="POST", url=target, headers={k.lower(): v for k, v in headers.items()}, body=body
        )

    def reply(self, number: str, text: str) -> None:
        """The phone ``number`` texts ``text`` to the hub's number, which forwards it to its messaging
        webhook (the hub's inbound URL given to ``start``); returns once the hub answered 2xx.

        STOP / START words are the provider's own business too: it records the opt-out (or its end) and
        answers the phone itself, and still forwards the text, as Twilio does."""
        if not self.state.sms_url:
            raise RuntimeError("the number forwards texts nowhere: start the emulator with the hub's URL")
        request = self.inbound_request(number, text)
        params = dict(parse_qsl(request.body.decode("utf-8")))
        now = datetime.now(UTC)
        word = text.strip().upper()
        with self.state.lock:
            self.replies[number].append(Text(params["MessageSid"], "phone", number, text, now, "received"))
            if word in STOP_WORDS:
                self.state.opted_out.add(number)
            elif word in START_WORDS:
                self.state.opted_out.discard(number)
            if word in STOP_WORDS | START_WORDS:
                auto = STOP_REPLY if word in STOP_WORDS else START_REPLY
                self.replies[number].append(Text(sid("SM"), "hub", number, auto, now, "delivered"))
        response = httpx.post(request.url, content=request.body, headers=request.headers, timeout=30)
        if not 200 <= response.status_code < 300:
            raise RuntimeError(
                f"the hub answered the reply with {response.status_code}: {response.text[:300]}"
            )

    # --- test switches ------------------------------------------------------------------------------------------

    def fail_sends(self, count: int, status: int, retry_after: float | None = None) -> None:
        """The next ``count`` sends are answered ``status`` (429: code 20429) with Retry-After."""
        with self.state.lock:
            self.state.faults = Faults(count, status, retry_after)

    def undeliverable(self, number: str, status: str = "undelivered", error_code: int = 30003) -> None:
        """Texts to ``number`` are accepted but end ``status`` with ``error_code`` (e.g. 30006 landline)."""
        with self.state.lock:
            self.state.undeliverable[number] = (status, error_code)

    def settle(self, timeout: float = 10) -> bool:
        """Wait until every status callback so far was posted."""
        return self.api.wait_settled(timeout)
