"""Twilio's Programmable Messaging REST API (and providers that copy it), as a ``Provider``.

Calls: ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` (form fields To, From or
MessagingServiceSid, Body, StatusCallback) to send; ``GET /2010-04-01/Accounts/{AccountSid}.json`` to check
an auth token, or the Messages list to check an API key (a standard key may not read the Account resource).
Both credentials use Basic auth; the account SID stays in the path either way.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl

import httpx

from hub import (
    AuthError,
    BadInput,
    CheckResult,
    DeliveryStatus,
    HubError,
    InboundAnswer,
    InboundReply,
    PluginContext,
    TransientError,
    WebhookRequest,
)
from hub.http import never_sent
from hub_sms import signature
from hub_sms.config import SmsSettings
from hub_sms.numbers import sender_e164
from hub_sms.provider import MaybeSent, SentMessage
from hub_sms.twilio_errors import DELIVERY_ERRORS, OPTED_OUT, UNREACHABLE_NUMBER, api_error

API_VERSION = "2010-04-01"
#: the TwiML that sends no text back: the hub answers a conversation through the API, after storing it
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
DELIVERED = frozenset({"delivered", "read"})
FAILED = frozenset({"undelivered", "failed", "canceled"})
#: statuses of a message the provider received (an inbound text), not of one it sent
INBOUND_STATUSES = frozenset({"received", "receiving"})


class TwilioProvider:
    """One Twilio account (or subaccount) and its sender."""

    name = "twilio"

    def __init__(self, settings: SmsSettings, ctx: PluginContext) -> None:
        self.settings = settings
        if settings.api_key_sid and settings.api_key_secret:
            auth = httpx.BasicAuth(settings.api_key_sid, settings.api_key_secret.get_secret_value())
        else:
            auth = httpx.BasicAuth(settings.account_sid, settings.auth_token.get_secret_value())
        self.http = ctx.http_client(base_url=settings.api_url, timeout=settings.timeout, auth=auth)
        self.account_path = f"/{API_VERSION}/Accounts/{settings.account_sid}"

    # --- the API ------------------------------------------------------------------------------------------------

    async def _call(self, method: str, path: str, what: str, **kwargs: Any) -> httpx.Response:
        """One API call; a transport failure is transient, and says whether the request may have arrived."""
        try:
            return await self.http.request(method, self.account_path + path, **kwargs)
        except httpx.TransportError as exc:
            if never_sent(exc):
                raise TransientError(
                    f"{what}: cannot reach {self.settings.api_url} ({exc!r})", sent=False
                ) from exc
            if method == "POST":
                raise MaybeSent(f"{what}: {type(exc).__name__} (the text may have been sent)") from exc
            raise TransientError(f"{what}: {type(exc).__name__}") from exc

    async def send(self, to: str, body: str, status_callback: str | None) -> SentMessage:
        form = {"To": to, "Body": body}
        if self.settings.messaging_service_sid:
            form["MessagingServiceSid"] = self.settings.messaging_service_sid
        else:
            assert self.settings.from_number is not None  # the settings require one of the two
            form["From"] = self.settings.from_number
        if status_callback:
            form["StatusCallback"] = status_callback
        response = await self._call("POST", "/Messages.json", "sending the text", data=form)
        if response.status_code not in (200, 201):
            raise api_error(response, f"Twilio refused the text to {to}", address=to)
        return sent_message(response.json())

    async def find_sent(self, to: str, body: str, since: datetime) -> SentMessage | None:
        response = await self._call(
            "GET",
            "/Messages.json",
            "looking for a text that may have gone out",
            params={"To": to, "PageSize": 20},
        )
        if response.status_code != 200:
            raise api_error(response, "looking for a text that may have gone out")
        for message in response.json().get("messages") or []:
            try:
                created = parsedate_to_datetime(message.get("date_created") or "")
            except (TypeError, ValueError):
                continue
            if created.tzinfo is None:  # "-0000": UTC, said without committing to it
                created = created.replace(tzinfo=UTC)
            outbound = str(message.get("direction", "")).startswith("outbound")
            if outbound and message.get("body") == body and created >= since:
                return sent_message(message)
        return None

    async def check(self, inbound_url: str) -> list[CheckResult]:
        credentials = await (self._check_key() if self.settings.api_key_sid else self._check_account())
        if not credentials.ok or not self.settings.from_number or not self.settings.two_way:
            return [credentials]  # a messaging service's senders are read from another API: not checked
        return [credentials, await self._check_number(self.settings.from_number, inbound_url)]

    async def _check_number(self, number: str, inbound_url: str) -> CheckResult:
        """The sender is the account's, can text, and forwards texts people send it to the hub."""
        name = f"sender {number}"
        try:
            response = await self._call(
                "GET",
                "/IncomingPhoneNumbers.json",
                "reading the account's numbers",
                params={"PhoneNumber": number},
            )
            if response.status_code != 200:
                raise api_error(response, "reading the account's numbers")
        except HubError as exc:
            return CheckResult(name=name, ok=False, detail=str(exc))
        found = response.json().get("incoming_phone_numbers") or []
        if not found:
            return CheckResult(
                name=name, ok=False, detail="not a number of this account: every send would fail"
            )
        entry = found[0]
        if not (entry.get("capabilities") or {}).get("sms"):
            return CheckResult(name=name, ok=False, detail="the number cannot send texts")
        if entry.get("sms_url") != inbound_url or (entry.get("sms_method") or "POST").upper() != "POST":
            return CheckResult(
                name=name,
                ok=False,
                detail=f"texts people send it go to {entry.get('sms_url') or 'nowhere'}: set its messaging "
                f'webhook ("A message comes in") to {inbound_url}, HTTP POST, or replies and STOP are lost',
            )
        return CheckResult(name=name, ok=True, detail=f"can text; replies reach {inbound_url}")

    async def _check_account(self) -> CheckResult:
        name = "Twilio account and auth token"
        try:
            response = await self._call("GET", ".json", "reading the account")
            if response.status_code != 200:
                raise api_error(response, "reading the account")
        except (AuthError, TransientError) as exc:
            return CheckResult(name=name, ok=False, detail=str(exc))
        account = response.json()
        status = account.get("status")
        detail = f"{account.get('friendly_name', '')} ({account.get('type', '')}, {status})".strip()
        if status != "active":
            return CheckResult(name=name, ok=False, detail=f"the account is {status}: texts cannot be sent")
        return CheckResult(name=name, ok=True, detail=detail)

    async def _check_key(self) -> CheckResult:
        name = "Twilio API key"
        try:
            response = await self._call("GET", "/Messages.json", "listing messages", params={"PageSize": 1})
            if response.status_code != 200:
                raise api_error(response, "listing messages with the API key")
        except (AuthError, TransientError) as exc:
            return CheckResult(name=name, ok=False, detail=str(exc))
        return CheckResult(name=name, ok=True, detail=f"{self.settings.api_key_sid} may send for the account")

    async def aclose(self) -> None:
        await self.http.aclose()

    # --- what Twilio posts to the hub -------------------------------------------------------------------------

    def parse(self, request: WebhookRequest) -> InboundReply:
        params = parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True)
        token = self.settings.auth_token.get_secret_value()
        if not signature.valid(token, request.url, params, request.header("X-Twilio-Signature")):
            what = (
                "no X-Twilio-Signature" if not request.header("X-Twilio-Signature") else "a wrong signature"
            )
            raise BadInput(
                f"not from Twilio: {what} for {request.url} (signed with the account's auth token)", 403
            )
        fields = dict(params)
        if fields.get("AccountSid") != self.settings.account_sid:
            raise BadInput(f"the request is for another account ({fields.get('AccountSid')!r})", 400)
        status = fields.get("MessageStatus") or fields.get("SmsStatus") or ""
        if status and status not in INBOUND_STATUSES:
            return InboundReply(statuses=[delivery_status(fields)], status_code=204)
        if "Body" in fields and fields.get("From") and fields.get("MessageSid"):
            answer = InboundAnswer(
                sender=sender_e164(fields["From"]),
                text=fields["Body"],
                received_at=datetime.now(UTC),
                message_id=fields["MessageSid"],
            )
            return InboundReply(answers=[answer], body=EMPTY_TWIML, media_type="text/xml")
        raise BadInput(
            "neither an inbound text (From, Body, MessageSid) nor a status callback (MessageStatus)"
        )


def sent_message(message: dict[str, Any]) -> SentMessage:
    """A Message resource as the channel needs it."""
    segments = str(message.get("num_segments") or "")  # a string in Twilio's JSON
    return SentMessage(
        message_id=str(message["sid"]),
        status=str(message.get("status") or "queued"),
        segments=int(segments) if segments.isdigit() else None,
    )


def delivery_status(fields: dict[str, str]) -> DeliveryStatus:
    """A status callback as the hub's ``DeliveryStatus``."""
    sid = fields.get("MessageSid") or fields.get("SmsSid")
    if not sid:
        raise BadInput("a status callback without MessageSid")
    status = fields.get("MessageStatus") or fields.get("SmsStatus") or ""
    code_text = (fields.get("ErrorCode") or "").strip()
    code = int(code_text) if code_text.isdigit() else None
    outcome = "delivered" if status in DELIVERED else "failed" if status in FAILED else "pending"
    error = None
    if code is not None or outcome == "failed":
        error = (
            f"{status}: {DELIVERY_ERRORS.get(code or 0, 'error ' + code_text if code_text else 'no reason')}"
        )
    return DeliveryStatus(
        message_id=sid,
        status=status,
        outcome=outcome,
        error_code=code_text or None,
        error=error,
        address_rejected=outcome == "failed" and code in UNREACHABLE_NUMBER,
        opted_out=code == OPTED_OUT,
        reported_at=datetime.now(UTC),
    )
