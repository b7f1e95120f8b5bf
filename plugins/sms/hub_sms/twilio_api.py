"""The HTTP face of the Twilio emulator: the Messages, Account and IncomingPhoneNumbers resources, strict.

What it refuses, it refuses as Twilio does (the HTTP status and ``{"code", "message", "more_info",
"status"}``): wrong Basic credentials (20003), a body that is not a form or misses To (21604), From
(21603) or Body (21602), a body over 1,600 characters (21617), an invalid number (21211), a landline
(21614), a sender that is not the account's (21606), a person who texted STOP (21610). It counts segments
and then reports on each text to its ``StatusCallback``, signed like Twilio: at least once and out of
order by default (the final status before "sent", and twice), optionally before the send call has even been
answered. ``hub_sms.emulator.SmsEmulator`` serves it and adds the phones.
"""

from __future__ import annotations

import base64
import secrets
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import phonenumbers
from fastapi import BackgroundTasks, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from hub_sms import signature
from hub_sms.config import ALPHANUMERIC_SENDER
from hub_sms.segments import count

API = "/2010-04-01"
MAX_BODY = 1600
#: the Twilio error code of each status fault injection may answer with
FAULT_CODES = {429: 20429, 500: 20500, 503: 20503}


def sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def twilio_error(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """An error reply in Twilio's shape."""
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return JSONResponse(body, status_code=status, headers=headers)


@dataclass
class Text:
    """One text, in either direction, as a phone shows it."""

    sid: str
    sender: str  # "hub" or "phone"
    number: str  # the phone's number
    body: str
    at: datetime
    status: str = "queued"
    error_code: int | None = None
    status_callback: str | None = None
    from_: str | None = None
    messaging_service_sid: str | None = None
    segments: int = 1

    def resource(self, account: str) -> dict[str, Any]:
        """The Message resource as Twilio's API shows it (strings where Twilio has strings)."""
        created = format_datetime(self.at, usegmt=True)
        return {
            "account_sid": account,
            "api_version": "2010-04-01",
            "body": self.body,
            "date_created": created,
            "date_sent": None if self.status in ("queued", "accepted") else created,
            "date_updated": created,
            "direction": "outbound-api" if self.sender == "hub" else "inbound",
            "error_code": self.error_code,
            "error_message": None,
            "from": self.from_,
            "messaging_service_sid": self.messaging_service_sid,
            "num_media": "0",
            "num_segments": str(self.segments),
            "price": None,
            "price_unit": "USD",
            "sid": self.sid,
            "status": self.status,
            "subresource_uris": {"media": f"{API}/Accounts/{account}/Messages/{self.sid}/Media.json"},
            "to": self.number if self.sender == "hub" else self.from_,
            "uri": f"{API}/Accounts/{account}/Messages/{self.sid}.json",
        }


@dataclass
class Faults:
    """The next ``count`` sends are answered with ``status`` (and Retry-After)."""

    count: int = 0
    status: int = 503
    retry_after: float | None = None


@dataclass
class TwilioState:
    """Everything the emulated account holds; guarded by ``lock`` (the API runs in its own thread)."""

    account_sid: str = field(default_factory=lambda: sid("AC"))
    auth_token: str = field(default_factory=lambda: secrets.token_hex(16))
    api_key_sid: str = field(default_factory=lambda: sid("SK"))
    api_key_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    number: str = "+4552512345"
    number_sid: str = field(default_factory=lambda: sid("PN"))
    #: the number's messaging webhook: where texts people send it are forwarded ("A message comes in")
    sms_url: str = ""
    messaging_service_sid: str = field(default_factory=lambda: sid("MG"))
    friendly_name: str = "CX Hub demo"
    #: numbers that are landlines whatever phonenumbers thinks (21614)
    landlines: set[str] = field(default_factory=set)
    #: numbers that replied STOP (21610 until START)
    opted_out: set[str] = field(default_factory=set)
    #: numbers whose texts end undelivered or failed: number -> (status, error code)
    undeliverable: dict[str, tuple[str, int]] = field(default_factory=dict)
    texts: dict[str, Text] = field(default_factory=dict)
    faults: Faults = field(default_factory=Faults)
    #: deliver the status callbacks before answering the send call
    callbacks_first: bool = False
    #: at least once, out of order: the final status before "sent", and twice
    disorder: bool = True
    callback_log: list[tuple[str, str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class TwilioApi:
    """The HTTP face: ``app`` is the FastAPI application ``BackgroundServer`` serves."""

    def __init__(self, state: TwilioState) -> None:
        self.state = state
        self.pending = 0
        self.settled = threading.Condition()
        self.app = FastAPI(title="Twilio emulator", docs_url=None, redoc_url=None, openapi_url=None)
        base = f"{API}/Accounts/{{account}}"
        self.app.add_api_route(f"{base}.json", self.account, methods=["GET"])
        self.app.add_api_route(f"{base}/Messages.json", self.create, methods=["POST"])
        self.app.add_api_route(f"{base}/Messages.json", self.list_messages, methods=["GET"])
        self.app.add_api_route(f"{base}/Messages/{{message}}.json", self.fetch, methods=["GET"])
        self.app.add_api_route(f"{base}/IncomingPhoneNumbers.json", self.numbers, methods=["GET"])

    # --- auth ---------------------------------------------------------------------------------------------------

    def _who(self, request: Request, account: str) -> str | None:
        """ "account" or "key" for good Basic credentials of ``account``; None otherwise."""
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        state = self.state
        if account != state.account_sid:
            return None
        given = f"{user}:{password}".encode()
        if secrets.compare_digest(given, f"{state.account_sid}:{state.auth_token}".encode()):
            return "account"
        if secrets.compare_digest(given, f"{state.api_key_sid}:{state.api_key_secret}".encode()):
            return "key"
        return None

    @staticmethod
    def _refused() -> JSONResponse:
        return twilio_error(401, 20003, "Authenticate", {"WWW-Authenticate": 'Basic realm="Twilio API"'})

    # --- resources ----------------------------------------------------------------------------------------------

    async def account(self, account: str, request: Request) -> Response:
        # a standard API key may not read the Account resource (only a main key or the auth token may)
        if self._who(request, account) != "account":
            return self._refused()
        return JSONResponse(
            {
                "sid": account,
                "friendly_name": self.state.friendly_name,
                "status": "active",
                "type": "Full",
                "auth_token": self.state.auth_token,
                "uri": f"{API}/Accounts/{account}.json",
            }
        )

    async def list_messages(self, account: str, request: Request) -> Response:
        if self._who(request, account) is None:
            return self._refused()
        size = request.query_params.get("PageSize", "50")
        if not size.isdigit() or not 1 <= int(size) <= 1000:
            return twilio_error(400, 20001, f"Invalid PageSize: {size}")
        to = request.query_params.get("To")
        with self.state.lock:
            texts = [t for t in self.state.texts.values() if to is None or t.number == to]
        texts = sorted(texts, key=lambda t: t.at, reverse=True)[: int(size)]
        return JSONResponse(
            {
                "messages": [t.resource(account) for t in texts],
                "page": 0,
                "page_size": int(size),
                "start": 0,
                "end": max(0, len(texts) - 1),
                "uri": f"{API}/Accounts/{account}/Messages.json?PageSize={size}&Page=0",
                "first_page_uri": f"{API}/Accounts/{account}/Messages.json?PageSize={size}&Page=0",
                "next_page_uri": None,
                "previous_page_uri": None,
            }
        )

    async def numbers(self, account: str, request: Request) -> Response:
        """The account's one number, with the webhook its inbound texts are forwarded to."""
        if self._who(request, account) is None:
            return self._refused()
        state = self.state
        wanted = request.query_params.get("PhoneNumber")
        entry = {
            "sid": state.number_sid,
            "account_sid": account,
            "phone_number": state.number,
            "friendly_name": state.number,
            "capabilities": {"voice": True, "sms": True, "mms": False, "fax": False},
            "sms_url": state.sms_url,
            "sms_method": "POST",
            "status": "in-use",
            "uri": f"{API}/Accounts/{account}/IncomingPhoneNumbers/{state.number_sid}.json",
        }
        found = [entry] if wanted in (None, state.number) else []
        return JSONResponse(
            {
                "incoming_phone_numbers": found,
                "page": 0,
                "page_size": 50,
                "start": 0,
                "end": max(0, len(found) - 1),
                "next_page_uri": None,
                "previous_page_uri": None,
                "uri": f"{API}/Accounts/{account}/IncomingPhoneNumbers.json",
            }
        )

    async def fetch(self, account: str, message: str, request: Request) -> Response:
        if self._who(request, account) is None:
            return self._refused()
        with self.state.lock:
            text = self.state.texts.get(message)
        if text is None:
            path = f"{API}/Accounts/{account}/Messages/{message}.json"
            return twilio_error(404, 20404, f"The requested resource {path} was not found")
        return JSONResponse(text.resource(account))

    async def create(self, account: str, request: Request, background: BackgroundTasks) -> Response:
        if self._who(request, account) is None:
            return self._refused()
        content_type = request.headers.get("content-type", "")
        body = await request.body()
        # Twilio reads form fields only: a JSON body is a request without To
        form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        if not content_type.startswith("application/x-www-form-urlencoded"):
            form = {}
        refusal = self._fault() or self._validate(form)
        if refusal is not None:
            return refusal
        to, text_body = form["To"], form["Body"]
        state = self.state
        text = Text(
            sid=sid("SM"),
            sender="hub",
            number=to,
            body=text_body,
            at=datetime.now(UTC),
            status="accepted" if form.get("MessagingServiceSid") and not form.get("From") else "queued",
            status_callback=form.get("StatusCallback") or None,
            from_=form.get("From") or None,
            messaging_service_sid=form.get("MessagingServiceSid") or None,
            segments=count(text_body).count,
        )
        with state.lock:
            state.texts[text.sid] = text
            resource = text.resource(account)
            callbacks_first = state.callbacks_first
        with self.settled:
            self.pending += 1
        if callbacks_first:
            await self._deliver(text.sid)
        else:
            background.add_task(self._deliver, text.sid)
        return JSONResponse(resource, status_code=201)

    def _fault(self) -> JSONResponse | None:
        with self.state.lock:
            faults = self.state.faults
            if faults.count <= 0:
                return None
            faults.count -= 1
            status, retry_after = faults.status, faults.retry_after
        headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else None
        code = FAULT_CODES.get(status, 20000 + status)
        return twilio_error(
            status, code, "Too Many Requests" if status == 429 else "Service unavailable", headers
        )

    def _validate(self, form: dict[str, str]) -> JSONResponse | None:
        """The checks Twilio makes of a new message, in its order."""
        state = self.state
        to = form.get("To", "").strip()
        if not to:
            return twilio_error(400, 21604, "A 'To' phone number is required.")
        sender, service = form.get("From", "").strip(), form.get("MessagingServiceSid", "").strip()
        if not sender and not service:
            return twilio_error(400, 21603, "A 'From' phone number is required.")
        if sender and sender != state.number and not ALPHANUMERIC_SENDER.match(sender):
            return twilio_error(
                400,
                21606,
                f"The From phone number {sender} is not a valid, SMS-capable inbound phone number or short "
                "code for your account.",
            )
        if service and service != state.messaging_service_sid:
            return twilio_error(400, 21701, f"The Messaging Service Sid {service} is invalid.")
        body = form.get("Body", "")
        if not body:
            return twilio_error(400, 21602, "Message body is required.")
        if len(body) > MAX_BODY:
            return twilio_error(400, 21617, "The concatenated message body exceeds the 1600 character limit.")
        try:
            parsed = phonenumbers.parse(to, None)
        except phonenumbers.NumberParseException:
            parsed = None
        if parsed is None or not phonenumbers.is_valid_number(parsed) or not to.startswith("+"):
            return twilio_error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        landline = phonenumbers.number_type(parsed) == phonenumbers.PhoneNumberType.FIXED_LINE
        with state.lock:
            landline = landline or to in state.landlines
            opted_out = to in state.opted_out
        if landline:
            return twilio_error(400, 21614, f"'To' number {to} is not a valid mobile number")
        if opted_out:
            return twilio_error(400, 21610, "Attempt to send to unsubscribed recipient")
        return None

    # --- status callbacks ---------------------------------------------------------------------------------------

    def _statuses(self, text: Text) -> list[tuple[str, int | None]]:
        with self.state.lock:
            final = self.state.undeliverable.get(text.number)
            disorder = self.state.disorder
        last: tuple[str, int | None] = ("delivered", None) if final is None else final
        steps: list[tuple[str, int | None]] = [("queued", None), ("sent", None), last]
        if last[0] == "failed":
            steps = [("queued", None), last]  # refused before it left: never "sent"
        if disorder:
            steps = [steps[0], last, *steps[1:-1], last]  # the final report first, then again at the end
        return steps

    async def _deliver(self, message_sid: str) -> None:
        """Report each status of the text to its StatusCallback; the text reaches the phone meanwhile."""
        try:
            with self.state.lock:
                text = self.state.texts[message_sid]
            steps = self._statuses(text)
            final = steps[-1]
            with self.state.lock:
                text.status, text.error_code = final
            if text.status_callback is None:
                return
            async with httpx.AsyncClient(timeout=10) as client:
                for status, code in steps:
                    await self._post_status(client, text, status, code)
        finally:
            with self.settled:
                self.pending -= 1
                self.settled.notify_all()

    async def _post_status(
        self, client: httpx.AsyncClient, text: Text, status: str, code: int | None
    ) -> None:
        assert text.status_callback is not None
        params = status_params(self.state, text, status, code)
        body, headers = signed_form(self.state.auth_token, text.status_callback, params)
        try:
            response = await client.post(text.status_callback, content=body, headers=headers)
            outcome = response.status_code
        except httpx.HTTPError:
            outcome = 0  # Twilio does not retry a status callback by default: the report is lost
        with self.state.lock:
            self.state.callback_log.append((text.sid, status, outcome))

    def wait_settled(self, timeout: float = 10) -> bool:
        """Wait until every status callback of every text sent so far was posted (or failed)."""
        with self.settled:
            return self.settled.wait_for(lambda: self.pending == 0, timeout)


def signed_form(token: str, url: str, params: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    """A form body and the headers Twilio sends with it, ``X-Twilio-Signature`` included."""
    body = urlencode(params).encode("utf-8")
    return body, {
        "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
        "X-Twilio-Signature": signature.compute(token, url, params.items()),
        "I-Twilio-Idempotency-Token": secrets.token_hex(16),
        "User-Agent": "TwilioProxy/1.1",
    }


def status_params(state: TwilioState, text: Text, status: str, code: int | None) -> dict[str, str]:
    params = {
        "SmsSid": text.sid,
        "SmsStatus": status,
        "MessageStatus": status,
        "To": text.number,
        "MessageSid": text.sid,
        "AccountSid": state.account_sid,
        "From": text.from_ or state.number,
        "ApiVersion": "2010-04-01",
    }
    if text.messaging_service_sid:
        params["MessagingServiceSid"] = text.messaging_service_sid
    if code is not None:
        params["ErrorCode"] = str(code)
    return params


def inbound_params(state: TwilioState, number: str, body: str, message_sid: str) -> dict[str, str]:
    """The form of an inbound text as Twilio forwards it to the number's webhook."""
    region = phonenumbers.region_code_for_number(phonenumbers.parse(number, None)) or ""
    return {
        "ToCountry": "DK",
        "ToState": "",
        "SmsMessageSid": message_sid,
        "NumMedia": "0",
        "ToCity": "",
        "FromZip": "",
        "SmsSid": message_sid,
        "FromState": "",
        "SmsStatus": "received",
        "FromCity": "",
        "Body": body,
        "FromCountry": region,
        "To": state.number,
        "ToZip": "",
        "NumSegments": str(count(body).count),
        "MessageSid": message_sid,
        "AccountSid": state.account_sid,
        "From": number,
        "ApiVersion": "2010-04-01",
    }
