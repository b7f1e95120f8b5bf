"""A local SuperOffice WebAPI for tests, benchmarks and ``cxhub demo``: the subset CX Hub uses, as strict
as the real service.

    emulator = SuperOfficeEmulator()
    emulator.seed_demo()
    with serve_in_background(emulator.app) as server:
        base_url = f"{server.url}/{emulator.context_identifier}"   # the connector's base_url
        ...

What it serves (see README.md for the choices where SuperOffice's documentation is silent):

* ``POST /Login/api/PartnerSystemUser/Authenticate`` (system user, RSA signature and timestamp checked),
  ``POST /login/common/oauth/tokens`` (refresh token), and Basic for onsite-style users;
* ``/{tenant}/api/v1/``: ``Person``, ``Ticket``, ``Sale`` (GET by id, PATCH for Person and Ticket, OData
  archive lists), ``{Entity}/CustomField``, ``Ticket/{id}/Messages``, ``TicketMessage``, ``Appointment``,
  ``Table/{y_table}``, ``archive/dynamic`` and ``Webhook``;
* ``/emulator/person/{id}`` and ``/emulator/ticket/{id}``: read-only HTML of what was written back.

Switches for tests: ``fail_next`` (e.g. 503 with Retry-After), ``set_rate_limit`` (429 above N calls a
second), ``set_latency``, ``expire_credentials`` / ``expire_credentials_after``; ``calls`` logs every
request (method, path, status).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hub.testing.server import BackgroundServer
from hub_superoffice.emulation import entities, odata, views
from hub_superoffice.emulation.authority import Authority, Credentials, generate_key_pair
from hub_superoffice.emulation.hooks import Delivery, Hooks
from hub_superoffice.emulation.store import ApiError, Clock, Store

__all__ = [
    "BackgroundServer",
    "Call",
    "DemoSeed",
    "SuperOfficeEmulator",
    "generate_key_pair",
    "serve_in_background",
]


@dataclass(frozen=True)
class Call:
    """One request the emulator answered."""

    method: str
    path: str
    status: int
    query: str = ""


@dataclass
class _Fault:
    status: int
    remaining: int
    retry_after: float | None
    path_contains: str | None
    methods: frozenset[str] | None = None

    def matches(self, method: str, path: str) -> bool:
        return (
            self.remaining > 0
            and (self.path_contains or "") in path
            and (self.methods is None or method in self.methods)
        )


@dataclass
class DemoSeed:
    """Ids of what ``seed_demo`` created, by a readable name."""

    companies: dict[str, int] = field(default_factory=dict)
    associates: dict[str, int] = field(default_factory=dict)
    persons: dict[str, int] = field(default_factory=dict)
    tickets: dict[str, int] = field(default_factory=dict)
    sales: dict[str, int] = field(default_factory=dict)


#: the custom fields the connector's default settings write to (see hub_superoffice.config)
CXHUB_FIELDS: dict[str, dict[str, str]] = {
    "person": {
        "x_cxhub_last_rating": "int",
        "x_cxhub_last_category": "string",
        "x_cxhub_last_date": "datetime",
        "x_cxhub_last_comment": "text",
        "x_cxhub_avg_rating": "decimal",
        "x_cxhub_avg_rating_30d": "decimal",
        "x_cxhub_count": "int",
        "x_cxhub_opted_out": "bool",
        "x_cxhub_opt_out_date": "datetime",
        "x_cxhub_opt_out_reason": "string",
    },
    "ticket": {
        "x_cxhub_rating": "int",
        "x_cxhub_comment": "text",
        "x_cxhub_processed": "datetime",
        "x_cxhub_received": "bool",
    },
    "appointment": {"x_cxhub_response_id": "string"},
}
CXHUB_TABLE = (
    "y_cxhub_feedback",
    {
        "x_person": "int",
        "x_rating": "int",
        "x_score": "decimal",
        "x_category": "string",
        "x_comment": "text",
        "x_answered_at": "datetime",
        "x_campaign": "string",
        "x_ticket": "int",
        "x_cxhub_response_id": "string",
    },
)


class SuperOfficeEmulator:
    """One emulated tenant: its records, credentials, webhooks and switches, and ``app`` serving them."""

    def __init__(
        self,
        *,
        context_identifier: str = "Cust12345",
        application_token: str = "emulator-application-token",  # noqa: S107 - the emulator's public test value
        system_user_token: str = "CXHub-emulator-7f3a",  # noqa: S107 - the emulator's public test value
        partner_public_key_pem: str | None = None,
        oauth_clients: dict[str, str] | None = None,
        refresh_tokens: dict[str, str] | None = None,
        basic_users: dict[str, str] | None = None,
        ticket_lifetime_seconds: float = 6 * 3600,
        access_token_lifetime_seconds: float = 3600,
        rate_limit_per_second: float | None = None,
        webhook_retry_delays: tuple[float, float] = (1.0, 4.0),
        webhook_failures_before_stop: int = 9,
        timezone: str = "Europe/Oslo",
    ) -> None:
        #: the partner's private key when the emulator generated the pair (None if a public key was given)
        self.partner_private_key_pem: str | None = None
        if partner_public_key_pem is None:
            self.partner_private_key_pem, partner_public_key_pem = generate_key_pair()
        self.context_identifier = context_identifier
        self.store = Store(Clock(ZoneInfo(timezone)))
        self.authority = Authority(
            Credentials(
                context_identifier=context_identifier,
                application_token=application_token,
                system_user_token=system_user_token,
                partner_public_key_pem=partner_public_key_pem,
                oauth_clients=dict(oauth_clients or {}),
                refresh_tokens=dict(refresh_tokens or {}),
                basic_users=dict(basic_users or {}),
                ticket_lifetime_seconds=ticket_lifetime_seconds,
                access_token_lifetime_seconds=access_token_lifetime_seconds,
            )
        )
        self.hooks = Hooks(context_identifier, webhook_retry_delays, webhook_failures_before_stop)
        #: every request answered (the latest 100,000), for tests and benchmarks
        self.calls: deque[Call] = deque(maxlen=100_000)
        self.latency_seconds = 0.0
        self.rate_limit_per_second = rate_limit_per_second
        self._recent: deque[float] = deque()
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        #: API calls being answered right now, and the most seen at once (to check a client's concurrency cap)
        self.in_flight = 0
        self.max_in_flight_seen = 0
        self.app: ASGIApp = _CallLog(_build_app(self), self)

    # -- schema

    def define_field(self, entity: str, name: str, type_: str = "string") -> None:
        """A custom field on ``person``/``ticket``/``appointment``/``sale``: ProgId or ``x_...``."""
        self.store.define_field(entity, name, type_)

    def define_extra_table(self, table: str, columns: dict[str, str]) -> None:
        self.store.define_table(table, columns)

    def define_cxhub_fields(self) -> None:
        """The fields and extra table the connector's default settings write to."""
        for entity, fields in CXHUB_FIELDS.items():
            for name, type_ in fields.items():
                self.store.define_field(entity, name, type_)
        self.store.define_table(*CXHUB_TABLE)

    # -- records (each change fires the webhooks SuperOffice would fire)

    def add_company(self, name: str, country: str = "DK") -> int:
        return self.store.add_company(name, country)

    def add_person(self, first_name: str, last_name: str, **details: Any) -> int:
        """``details``: email, mobile, company_id, country (ISO), language (English/Dansk/...),
        no_mailing, retired, consents."""
        person_id = self.store.add_person(first_name, last_name, **details)
        self.hooks.fire("person.created", "person", person_id)
        return person_id

    def add_associate(self, first_name: str, last_name: str, email: str) -> int:
        return self.store.add_associate(first_name, last_name, email)

    def add_ticket(
        self, title: str, person_id: int, *, owner_id: int | None = None, category: str = "Support"
    ) -> int:
        ticket_id = self.store.add_ticket(title, person_id, owner_id=owner_id, category=category)
        self.hooks.fire("ticket.created", "ticket", ticket_id)
        return ticket_id

    def close_ticket(self, ticket_id: int, at: datetime | None = None) -> None:
        """Close a request (status Closed, ClosedAt stamped) and fire ``ticket.changed``."""
        self.set_ticket_status(ticket_id, 2, at)

    def reopen_ticket(self, ticket_id: int) -> None:
        self.set_ticket_status(ticket_id, 1)

    def set_ticket_status(self, ticket_id: int, status_id: int, at: datetime | None = None) -> None:
        self.store.set_ticket_status(ticket_id, status_id, at)
        self.hooks.fire("ticket.changed", "ticket", ticket_id)

    def rename_ticket(self, ticket_id: int, title: str) -> None:
        """A change that does not close anything: fires ``ticket.changed`` all the same."""
        entities.patch_ticket(self.store, ticket_id, {"Title": title})
        self.hooks.fire("ticket.changed", "ticket", ticket_id)

    def add_sale(
        self, heading: str, person_id: int, *, owner_id: int | None = None, amount: float = 0.0
    ) -> int:
        sale_id = self.store.add_sale(heading, person_id, owner_id=owner_id, amount=amount)
        self.hooks.fire("sale.created", "sale", sale_id)
        return sale_id

    def sell_sale(self, sale_id: int, at: datetime | None = None) -> None:
        """Mark a sale Sold and fire ``sale.changed`` and ``sale.sold``."""
        self.store.set_sale_status(sale_id, "Sold", at)
        self.hooks.fire("sale.changed", "sale", sale_id)
        self.hooks.fire("sale.sold", "sale", sale_id)

    def update_person(self, person_id: int, **changes: Any) -> None:
        """Change Firstname/Lastname/NoMailing/Retired or custom fields (merge-patch keys); fires
        ``person.changed`` listing what changed."""
        changed = entities.patch_person(self.store, person_id, changes)
        self.hooks.fire("person.changed", "person", person_id, changed)

    def seed_demo(self) -> DemoSeed:
        """Companies, users, Danish and English persons and a few requests; defines the CX Hub fields."""
        self.define_cxhub_fields()
        seed = DemoSeed()
        seed.companies["nordlys"] = self.add_company("Nordlys ApS", "DK")
        seed.companies["fjord"] = self.add_company("Fjordhus Rådgivning A/S", "DK")
        seed.companies["brightwater"] = self.add_company("Brightwater Ltd", "GB")
        seed.associates["mette"] = self.add_associate("Mette", "Holm", "mette.holm@cxhub-demo.example")
        seed.associates["james"] = self.add_associate(
            "James", "Whitfield", "james.whitfield@cxhub-demo.example"
        )
        people = {
            "karen": (
                "Karen",
                "Jensen",
                "karen.jensen@nordlys.example",
                "+45 20 12 34 56",
                "nordlys",
                "DK",
                "Dansk",
            ),
            "søren": (
                "Søren",
                "Østergaard",
                "soren@fjordhus.example",
                "+45 31 22 44 66",
                "fjord",
                "DK",
                "Dansk",
            ),
            "emma": (
                "Emma",
                "Clarke",
                "emma.clarke@brightwater.example",
                "+61 491 570 156",  # reserved for fiction (ACMA) yet a valid mobile, so texts reach the demo phone
                "brightwater",
                "GB",
                "English",
            ),
            "oliver": (
                "Oliver",
                "Hughes",
                "oliver.hughes@brightwater.example",
                "07700 900456",
                "brightwater",
                "GB",
                None,
            ),
        }
        for key, (first, last, email, mobile, company, country, language) in people.items():
            seed.persons[key] = self.add_person(
                first,
                last,
                email=email,
                mobile=mobile,
                company_id=seed.companies[company],
                country=country,
                language=language,
            )
        seed.persons["lars"] = self.add_person(
            "Lars",
            "Nielsen",
            email="lars@nordlys.example",
            company_id=seed.companies["nordlys"],
            no_mailing=True,
        )
        seed.tickets["login"] = self.add_ticket(
            "Kan ikke logge ind", seed.persons["karen"], owner_id=seed.associates["mette"]
        )
        seed.tickets["invoice"] = self.add_ticket(
            "Faktura mangler", seed.persons["søren"], owner_id=seed.associates["mette"]
        )
        seed.tickets["export"] = self.add_ticket(
            "Export to Excel fails", seed.persons["emma"], owner_id=seed.associates["james"]
        )
        seed.tickets["password"] = self.add_ticket(
            "Password reset", seed.persons["oliver"], owner_id=seed.associates["james"]
        )
        seed.sales["renewal"] = self.add_sale(
            "Annual renewal", seed.persons["emma"], owner_id=seed.associates["james"], amount=12000.0
        )
        return seed

    # -- switches

    def fail_next(
        self,
        count: int = 1,
        status: int = 503,
        retry_after: float | None = None,
        path_contains: str | None = None,
        methods: set[str] | None = None,
    ) -> None:
        """Answer the next ``count`` API calls (whose path contains ``path_contains``, of ``methods``)
        with ``status`` and, if given, Retry-After."""
        with self._lock:
            self._faults.append(
                _Fault(status, count, retry_after, path_contains, frozenset(methods) if methods else None)
            )

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def set_latency(self, seconds: float) -> None:
        self.latency_seconds = seconds

    def set_rate_limit(self, per_second: float | None) -> None:
        """Above this many API calls in any second: 429 with Retry-After. None: no limit."""
        self.rate_limit_per_second = per_second

    def expire_credentials(self) -> None:
        """Every system user ticket and access token issued so far expires now."""
        self.authority.expire_all()

    def expire_credentials_after(self, calls: int) -> None:
        """Let ``calls`` more API calls through, then expire every credential issued so far."""
        self.authority.expire_after(calls)

    # -- reading back

    def person(self, person_id: int) -> dict[str, Any] | None:
        return entities.person_json(self.store, person_id)

    def ticket(self, ticket_id: int) -> dict[str, Any] | None:
        return entities.ticket_json(self.store, ticket_id)

    def sale(self, sale_id: int) -> dict[str, Any] | None:
        return entities.sale_json(self.store, sale_id)

    def ticket_messages(self, ticket_id: int) -> list[dict[str, Any]]:
        with self.store.lock:
            ids = [m for m, message in self.store.data.messages.items() if message["TicketId"] == ticket_id]
        return [message for m in ids if (message := entities.message_json(self.store, m))]

    def appointments(self, person_id: int) -> list[dict[str, Any]]:
        with self.store.lock:
            ids = [
                a
                for a, appointment in self.store.data.appointments.items()
                if appointment["PersonId"] == person_id
            ]
        return [appointment for a in ids if (appointment := entities.appointment_json(self.store, a))]

    def table_rows(self, table: str) -> list[dict[str, Any]]:
        with self.store.lock:
            return [dict(row) for row in self.store.data.extra.get(table, {}).values()]

    def webhook_request(
        self, secret: str, event: str, entity: str, primary_key: int, changes: list[str] | None = None
    ) -> tuple[dict[str, str], bytes]:
        """Headers and body of the webhook SuperOffice would send for ``event``, signed with ``secret``."""
        return self.hooks.request(secret, event, entity, primary_key, changes)

    def register_webhook(
        self, target_url: str, secret: str, events: list[str], test: bool = True
    ) -> dict[str, Any]:
        """Register a webhook as ``POST /api/v1/Webhook`` does (``test=False``: without the test POST)."""
        body = {
            "Name": "cxhub",
            "Events": events,
            "TargetUrl": target_url,
            "Secret": secret,
            "Type": "webhook",
        }
        return self.hooks.register(body, test=test).to_json()

    def webhooks(self) -> list[dict[str, Any]]:
        return [hook.to_json() for hook in self.hooks.webhooks.values()]

    @property
    def deliveries(self) -> list[Delivery]:
        return list(self.hooks.deliveries)

    def wait_for_webhooks(self, timeout: float = 30.0) -> bool:
        """Block until every webhook delivery so far has ended (delivered or dropped)."""
        return self.hooks.wait(timeout)

    def count_calls(
        self, method: str | None = None, path_contains: str | None = None, status: int | None = None
    ) -> int:
        return sum(
            1
            for call in list(self.calls)
            if (method is None or call.method == method)
            and (path_contains is None or path_contains in call.path)
            and (status is None or call.status == status)
        )

    def clear_calls(self) -> None:
        self.calls.clear()

    def close(self) -> None:
        self.hooks.close()

    # -- used by the routes

    def track_in_flight(self, delta: int) -> None:
        with self._lock:
            self.in_flight += delta
            self.max_in_flight_seen = max(self.max_in_flight_seen, self.in_flight)

    async def guard(self, request: Request) -> None:
        """Everything an API call goes through before its handler: tenant, latency, faults, rate, auth."""
        if request.path_params.get("tenant") != self.context_identifier:
            raise ApiError(404, "Unknown tenant", "NotFound")
        if self.latency_seconds:
            await asyncio.sleep(self.latency_seconds)
        with self._lock:
            fault = next((f for f in self._faults if f.matches(request.method, request.url.path)), None)
            if fault is not None:
                fault.remaining -= 1
                raise _Injected(fault)
            if self.rate_limit_per_second is not None:
                now = time.monotonic()
                while self._recent and now - self._recent[0] >= 1.0:
                    self._recent.popleft()
                if len(self._recent) >= self.rate_limit_per_second:
                    raise _Injected(_Fault(429, 0, 1.0, None))
                self._recent.append(now)
        self.authority.authorize({k.lower(): v for k, v in request.headers.items()})


class _Injected(Exception):
    def __init__(self, fault: _Fault) -> None:
        super().__init__(fault.status)
        self.fault = fault

    def response(self) -> Response:
        headers = {} if self.fault.retry_after is None else {"Retry-After": str(int(self.fault.retry_after))}
        message = "Too many requests" if self.fault.status == 429 else "Service unavailable"
        return JSONResponse({"Error": message, "ErrorType": "Throttled"}, self.fault.status, headers=headers)


class _CallLog:
    """ASGI wrapper recording method, path and status of every request."""

    def __init__(self, app: ASGIApp, emulator: SuperOfficeEmulator) -> None:
        self._app = app
        self._emulator = emulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        query = scope.get("query_string", b"").decode("latin-1")
        logged = False

        def log(status: int) -> None:
            nonlocal logged
            if not logged:
                logged = True
                self._emulator.calls.append(Call(scope["method"], scope["path"], status, query))

        async def record(message: Message) -> None:
            # logged before the reply leaves: a client that has read it finds its call in the log
            if message["type"] == "http.response.start":
                log(message["status"])
            await send(message)

        try:
            await self._app(scope, receive, record)
        finally:
            log(500)  # the app failed before it answered


Handler = Callable[[Request], Awaitable[Response]]


def _build_app(emulator: SuperOfficeEmulator) -> Starlette:
    store = emulator.store

    def api(handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            emulator.track_in_flight(+1)
            try:
                await emulator.guard(request)
                return await handler(request)
            except _Injected as injected:
                return injected.response()
            except ApiError as error:
                return JSONResponse(error.body(), error.status)
            finally:
                emulator.track_in_flight(-1)

        return guarded

    async def body_of(request: Request) -> Any:
        try:
            return await request.json()
        except ValueError:
            raise ApiError(400, "The request body is not valid JSON") from None

    def found(value: dict[str, Any] | None, what: str) -> Response:
        if value is None:
            raise ApiError(404, f"{what} not found", "NotFound")
        return JSONResponse(value)

    def archive(arch: odata.Archive, rows: list[dict[str, Any]], request: Request) -> Response:
        base = f"{str(request.base_url).rstrip('/')}/{emulator.context_identifier}"
        return JSONResponse(odata.query(arch, rows, dict(request.query_params), store.clock, base))

    # -- authentication

    async def system_user(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        webapi = f"{str(request.base_url).rstrip('/')}/{emulator.context_identifier}/api/v1"
        return JSONResponse(emulator.authority.system_user_login(body, webapi))

    async def oauth_tokens(request: Request) -> Response:
        form = await request.form()
        status, body = emulator.authority.refresh({k: str(v) for k, v in form.items()})
        return JSONResponse(body, status)

    # -- entities

    async def custom_fields(request: Request) -> Response:
        entity = request.path_params["entity"].lower()
        if entity not in store.fields:
            raise ApiError(404, f"No custom fields on {entity}", "NotFound")
        with store.lock:
            defs = list(store.fields[entity].values())
        return JSONResponse(
            [
                {
                    "FieldName": d.name,
                    "DisplayName": d.label,
                    "FieldType": d.type,
                    "IsReadOnly": False,
                    "Rank": i,
                }
                for i, d in enumerate(defs)
            ]
        )

    async def get_person(request: Request) -> Response:
        return found(entities.person_json(store, request.path_params["id"]), "Person")

    async def patch_person(request: Request) -> Response:
        person_id = request.path_params["id"]
        changes = entities.patch_person(store, person_id, await body_of(request))
        emulator.hooks.fire("person.changed", "person", person_id, changes)
        return found(entities.person_json(store, person_id), "Person")

    async def list_persons(request: Request) -> Response:
        with store.lock:
            return archive(odata.PERSONS, odata.person_rows(store), request)

    async def get_ticket(request: Request) -> Response:
        return found(entities.ticket_json(store, request.path_params["id"]), "Ticket")

    async def patch_ticket(request: Request) -> Response:
        ticket_id = request.path_params["id"]
        entities.patch_ticket(store, ticket_id, await body_of(request))
        emulator.hooks.fire("ticket.changed", "ticket", ticket_id)
        return found(entities.ticket_json(store, ticket_id), "Ticket")

    async def list_tickets(request: Request) -> Response:
        with store.lock:
            return archive(odata.TICKETS, odata.ticket_rows(store), request)

    async def ticket_messages(request: Request) -> Response:
        ticket_id = request.path_params["id"]
        with store.lock:
            if ticket_id not in store.data.tickets:
                raise ApiError(404, f"Ticket {ticket_id} not found", "NotFound")
            return archive(odata.MESSAGES, odata.message_rows(store, ticket_id), request)

    async def get_sale(request: Request) -> Response:
        return found(entities.sale_json(store, request.path_params["id"]), "Sale")

    async def list_sales(request: Request) -> Response:
        with store.lock:
            return archive(odata.SALES, odata.sale_rows(store), request)

    async def post_message(request: Request) -> Response:
        notify = request.query_params.get("notify", "true").lower() != "false"
        message_id = entities.create_message(store, await body_of(request), notify)
        message = entities.message_json(store, message_id) or {}
        emulator.hooks.fire("ticket.changed", "ticket", message["Ticket"]["TicketId"])
        return JSONResponse(message)

    async def get_message(request: Request) -> Response:
        return found(entities.message_json(store, request.path_params["id"]), "TicketMessage")

    async def post_appointment(request: Request) -> Response:
        appointment_id = entities.create_appointment(store, await body_of(request))
        emulator.hooks.fire("appointment.created", "appointment", appointment_id)
        return found(entities.appointment_json(store, appointment_id), "Appointment")

    async def patch_appointment(request: Request) -> Response:
        appointment_id = request.path_params["id"]
        entities.patch_appointment(store, appointment_id, await body_of(request))
        emulator.hooks.fire("appointment.changed", "appointment", appointment_id)
        return found(entities.appointment_json(store, appointment_id), "Appointment")

    async def patch_message(request: Request) -> Response:
        message_id = request.path_params["id"]
        ticket_id = entities.patch_message(store, message_id, await body_of(request))
        emulator.hooks.fire("ticket.changed", "ticket", ticket_id)
        return found(entities.message_json(store, message_id), "TicketMessage")

    async def update_row(request: Request) -> Response:
        table, row_id = request.path_params["table"], request.path_params["id"]
        entities.update_row(store, table, row_id, await body_of(request))
        return Response(status_code=204)

    async def get_appointment(request: Request) -> Response:
        return found(entities.appointment_json(store, request.path_params["id"]), "Appointment")

    async def insert_row(request: Request) -> Response:
        return JSONResponse(entities.insert_row(store, request.path_params["table"], await body_of(request)))

    async def read_row(request: Request) -> Response:
        table, row_id = request.path_params["table"], request.path_params["id"]
        with store.lock:
            row = store.data.extra.get(table, {}).get(row_id)
        return found({"Values": dict(row)} if row else None, f"{table} row {row_id}")

    async def dynamic(request: Request) -> Response:
        select = [s.strip() for s in request.query_params.get("$select", "").split(",") if s.strip()]
        with store.lock:
            arch, rows = odata.dynamic_archive(store, select)
            return archive(arch, rows, request)

    # -- webhooks

    async def list_webhooks(request: Request) -> Response:
        return JSONResponse(emulator.webhooks())

    async def create_webhook(request: Request) -> Response:
        body = await body_of(request)
        hook = await asyncio.to_thread(emulator.hooks.register, body)
        return JSONResponse(hook.to_json())

    async def get_webhook(request: Request) -> Response:
        hook = emulator.hooks.webhooks.get(request.path_params["id"])
        return found(hook.to_json() if hook else None, "Webhook")

    async def delete_webhook(request: Request) -> Response:
        if not emulator.hooks.delete(request.path_params["id"]):
            raise ApiError(404, "Webhook not found", "NotFound")
        return Response(status_code=204)

    # -- HTML views

    async def person_view(request: Request) -> Response:
        page = views.person_page(store, request.path_params["id"])
        return HTMLResponse(page or "<h1>No such person</h1>", 200 if page else 404)

    async def ticket_view(request: Request) -> Response:
        page = views.ticket_page(store, request.path_params["id"])
        return HTMLResponse(page or "<h1>No such request</h1>", 200 if page else 404)

    v1 = "/{tenant}/api/v1"
    routes = [
        Route("/Login/api/PartnerSystemUser/Authenticate", system_user, methods=["POST"]),
        Route("/login/common/oauth/tokens", oauth_tokens, methods=["POST"]),
        Route(v1 + "/{entity}/CustomField", api(custom_fields), methods=["GET"]),
        Route(v1 + "/Person/{id:int}", api(get_person), methods=["GET"]),
        Route(v1 + "/Person/{id:int}", api(patch_person), methods=["PATCH"]),
        Route(v1 + "/Person", api(list_persons), methods=["GET"]),
        Route(v1 + "/Ticket/{id:int}/Messages", api(ticket_messages), methods=["GET"]),
        Route(v1 + "/Ticket/{id:int}", api(get_ticket), methods=["GET"]),
        Route(v1 + "/Ticket/{id:int}", api(patch_ticket), methods=["PATCH"]),
        Route(v1 + "/Ticket", api(list_tickets), methods=["GET"]),
        Route(v1 + "/Sale/{id:int}", api(get_sale), methods=["GET"]),
        Route(v1 + "/Sale", api(list_sales), methods=["GET"]),
        Route(v1 + "/TicketMessage", api(post_message), methods=["POST"]),
        Route(v1 + "/TicketMessage/{id:int}", api(get_message), methods=["GET"]),
        Route(v1 + "/TicketMessage/{id:int}", api(patch_message), methods=["PATCH"]),
        Route(v1 + "/Appointment", api(post_appointment), methods=["POST"]),
        Route(v1 + "/Appointment/{id:int}", api(get_appointment), methods=["GET"]),
        Route(v1 + "/Appointment/{id:int}", api(patch_appointment), methods=["PATCH"]),
        Route(v1 + "/Table/{table}", api(insert_row), methods=["POST"]),
        Route(v1 + "/Table/{table}/{id:int}", api(read_row), methods=["GET"]),
        Route(v1 + "/Table/{table}/{id:int}", api(update_row), methods=["PUT"]),
        Route(v1 + "/archive/dynamic", api(dynamic), methods=["GET"]),
        Route(v1 + "/Webhook", api(list_webhooks), methods=["GET"]),
        Route(v1 + "/Webhook", api(create_webhook), methods=["POST"]),
        Route(v1 + "/Webhook/{id:int}", api(get_webhook), methods=["GET"]),
        Route(v1 + "/Webhook/{id:int}", api(delete_webhook), methods=["DELETE"]),
        Route("/emulator/person/{id:int}", person_view, methods=["GET"]),
        Route("/emulator/ticket/{id:int}", ticket_view, methods=["GET"]),
    ]
    return Starlette(routes=routes)


# --- running it ---------------------------------------------------------------------------------------


@contextmanager
def serve_in_background(app: ASGIApp, host: str = "127.0.0.1") -> Iterator[BackgroundServer]:
    """Serve ``app`` on a free port of ``host`` for the duration of the ``with`` block."""
    server = BackgroundServer(app, host).start()
    try:
        yield server
    finally:
        server.stop()
