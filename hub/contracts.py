"""The typed contracts a plugin implements: ``Connector`` (a CRM) and ``Channel`` (email, SMS, chat).

A plugin's registration hook hands the hub a *type* (``ConnectorType`` / ``ChannelType``): its name, its
pydantic settings model and a factory. The hub validates each configured instance's settings with that model
and calls the factory once per instance, so one hub can talk to two Salesforce orgs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, Protocol, TypeVar, runtime_checkable

import httpx
from pydantic import BaseModel

from hub.models import (
    CheckResult,
    Delivery,
    FetchResult,
    InboundReply,
    OutboundMessage,
    PersonRecord,
    SurveyMessage,
    WebhookReply,
    WebhookRequest,
    WriteBackItem,
    WriteBackResult,
)

SettingsT = TypeVar("SettingsT", bound=BaseModel)


class UsageLedger(Protocol):
    """Calls per minute, summed over every hub process on one database and kept across restarts.

    For a connector whose CRM limits calls per window (Salesforce: per rolling 24 hours, shared by the
    whole org): count calls in memory, and now and then hand the new counts over and get the totals back.
    """

    async def add_and_read(self, meter: str, counts: Mapping[int, int], since_minute: int) -> dict[int, int]:
        """Add ``counts`` (minute since the epoch -> calls) to ``meter``; return its totals from ``since_minute``."""
        ...


@dataclass(frozen=True)
class PluginContext:
    """What the hub lends a connector or channel instance when it is created.

    ``public_url`` is where the hub is reachable from outside (for webhook registration and survey links);
    ``http_client`` builds an httpx client with the hub's shared timeouts, user agent and log redaction;
    ``usage`` is this instance's usage ledger (None where no database is at hand, e.g. in unit tests).
    """

    instance: str
    public_url: str
    http_client: Callable[..., httpx.AsyncClient]
    state: dict[str, Any] = field(default_factory=dict)
    usage: UsageLedger | None = None


@runtime_checkable
class Connector(Protocol):
    """A CRM: where events come from and where answers are written back.

    Every method raises ``hub.errors`` classes on failure (never returns False): ``AuthError`` and
    ``ConfigError`` when an admin must act, ``TransientError`` to be retried, ``SkippableError`` for one bad record.
    """

    #: how many write-back items one ``write_back`` call takes (the CRM's batch limit, or a sane chunk).
    #: Every batch holds items of one kind only (``person_opt_out`` with ``person_summary``: both update the
    #: person). A connector with a bulk API may also declare
    #: ``bulk_batch_size`` (optional): a full re-sync (``cxhub sync --full``) then hands it batches that
    #: large, and the connector picks its bulk API for them.
    batch_size: int

    async def check(self) -> list[CheckResult]:
        """Test credentials, permissions and that every mapped field exists. Used by ``cxhub check``."""
        ...

    async def fetch_events(self, cursor: str | None) -> FetchResult:
        """Poll for events since ``cursor`` (None: the connector's own starting point).

        The returned cursor is stored only after the events are, so a crash re-fetches rather than skips;
        overlap is welcome (duplicates are dropped by event id).
        """
        ...

    async def parse_webhook(self, request: WebhookRequest) -> WebhookReply:
        """Verify and read one webhook. Raise ``BadInput`` (with 400/401) for a malformed or unsigned one."""
        ...

    async def find_person(self, email: str | None, phone: str | None) -> PersonRecord | None:
        """Look a person up by normalised email or E.164 phone; None when the CRM has nobody."""
        ...

    async def get_person(self, crm_id: str) -> PersonRecord | None:
        """Read one person by the CRM's id; None when it no longer exists."""
        ...

    async def write_back(self, batch: Sequence[WriteBackItem]) -> list[WriteBackResult]:
        """Write a batch; return exactly one result per item, in any order, matched by ``item_id``.

        Must be idempotent on ``item.key``: the same item may arrive again after a crash or a retry.
        Raising ``TransientError`` retries the whole batch; ``AuthError`` stops the run.
        """
        ...

    def diagnostics(self) -> dict[str, Any]:
        """Settings and state for a support ticket, with every secret redacted."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


@runtime_checkable
class Channel(Protocol):
    """A way to reach a person (email, SMS, chat): sends invitations and alerts, reads replies."""

    async def check(self) -> list[CheckResult]:
        """Test the connection and credentials. Used by ``cxhub check``."""
        ...

    async def send(self, message: OutboundMessage) -> Delivery:
        """Hand one message to the provider.

        ``TransientError``: try this channel again later. ``SkippableError`` (no address for this person,
        address rejected for good): the hub moves on to the campaign's next channel.
        """
        ...

    async def parse_inbound(self, request: WebhookRequest) -> InboundReply:
        """Verify and read a reply from the provider. Raise ``BadInput`` for a malformed or unsigned one."""
        ...

    def diagnostics(self) -> dict[str, Any]:
        """Settings and state for a support ticket, with every secret redacted."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


@runtime_checkable
class MessageDescriber(Protocol):
    """Optional for a channel: it can say what is wrong with a campaign's text before anything is sent.

    ``cxhub check`` builds the survey message the hub would send for every enabled campaign, in every language
    the hub ships, and shows each warning as a row: a text that costs more than one SMS segment, a reply asked
    from a sender people cannot reply to. Warnings do not fail the check: the hub still sends.
    """

    def describe(self, message: SurveyMessage) -> list[str]:
        """Warnings about this message as this channel would send it, each one sentence; empty when all is well.

        No I/O: it is called once per campaign, language and channel.
        """
        ...


@runtime_checkable
class WebhookRegistrar(Protocol):
    """Optional for a connector: it can register the hub's webhook in the CRM (``cxhub register-webhook``)."""

    async def register_webhook(self) -> str:
        """Register ``{public_url}/hooks/{instance}`` in the CRM unless it is there; say what was done.

        The hub must be reachable at that URL already: CRMs test a webhook when it is saved.
        """
        ...


@dataclass(frozen=True)
class ConnectorType(Generic[SettingsT]):
    """A kind of connector a plugin offers, e.g. ``superoffice``."""

    name: str
    settings: type[SettingsT]
    factory: Callable[[SettingsT, PluginContext], Connector]
    description: str = ""


@dataclass(frozen=True)
class ChannelType(Generic[SettingsT]):
    """A kind of channel a plugin offers, e.g. ``email``."""

    name: str
    settings: type[SettingsT]
    factory: Callable[[SettingsT, PluginContext], Channel]
    description: str = ""


@dataclass(frozen=True)
class DemoCase:
    """A case an emulator closed for the demo, and where to look at it."""

    record_id: str
    person_id: str
    description: str
    links: dict[str, str] = field(default_factory=dict)


class Emulator(Protocol):
    """A local stand-in of a real service, run on loopback (``cxhub demo``, benchmarks).

    Methods are synchronous: emulators run their servers in their own threads, so a caller on any event loop
    can use them (async callers wrap calls in ``asyncio.to_thread``).
    """

    def start(self, workdir: Path, hub_url: str, instance: str) -> None:
        """Start serving; ``hub_url`` and ``instance`` tell a CRM emulator where to deliver webhooks."""
        ...

    def stop(self) -> None: ...

    def instance_settings(self) -> dict[str, Any]:
        """Plugin settings (as in the config file) that point an instance at this emulator."""
        ...

    def environment(self) -> dict[str, str]:
        """Environment variables the settings' ``env:NAME`` secrets refer to."""
        ...

    def links(self) -> dict[str, str]:
        """Pages a person can open to look at the emulated service."""
        ...


@runtime_checkable
class ConnectorEmulator(Emulator, Protocol):
    """A CRM emulator that can play the demo's story: close a case, then show what the CRM user sees."""

    def close_case(self) -> DemoCase:
        """Close a case of a seeded person, as a CRM user would (the CRM's webhook fires)."""
        ...

    def show(self, case: DemoCase) -> dict[str, Any]:
        """What the CRM shows now: the person's feedback fields, timeline entries and the case's messages."""
        ...

    def written_back(self, case: DemoCase) -> bool:
        """True once the answer to ``case`` is visible in the CRM."""
        ...


@runtime_checkable
class ChannelEmulator(Emulator, Protocol):
    """A channel emulator (e.g. a mail catcher) that can hand back the survey link it delivered."""

    def survey_link(self, recipient: str | None = None) -> str | None:
        """The survey link of the newest invitation delivered (to ``recipient``), None if none yet."""
        ...


@runtime_checkable
class PhoneEmulator(ChannelEmulator, Protocol):
    """A channel emulator with a phone (SMS): the demo's ``/admin/phone`` page shows each conversation as a
    phone would and lets the demo user type a reply; ``cxhub demo --channel sms --auto`` texts through it.

    Both methods are synchronous like every emulator method and are called from a worker thread, so they
    must not need the caller's event loop, and must not hold a lock while delivering to the hub (the hub
    texts back while it handles the reply).
    """

    def conversations(self) -> list[dict[str, Any]]:
        """One dict per phone number the emulator exchanged texts with, oldest conversation first::

        {"number": "+4520123456",            # the person's phone, E.164
         "messages": [                        # oldest first
             {"sender": "hub" | "phone",      # texted by the hub to the phone, or typed on the phone
              "text": "...",                  # the body as delivered
              "at": "2026-12-05T17:30:00+00:00",  # ISO 8601, UTC
              "status": "delivered"}]}        # optional: the provider's status of a "hub" message
        """
        ...

    def reply(self, number: str, text: str) -> None:
        """The phone ``number`` (E.164) texts ``text`` to the hub's sender: recorded in its conversation and
        posted to ``{hub_url}/inbound/{instance}`` (those given to ``start``) as the provider's signed inbound
        request. Returns once the hub has answered it; raises when the hub answers other than 2xx."""
        ...


@dataclass(frozen=True)
class EmulatorType:
    """An emulator a plugin offers for its connector or channel type ``plugin``.

    ``factory()`` is called only when a demo, a benchmark or a test asks for the emulator. It imports the
    emulator itself, so that loading the plugin in production never imports the emulator or what it needs
    (pytest, aiosmtpd, trustme), which a production install does not have.
    """

    plugin: str
    kind: Literal["connector", "channel"]
    factory: Callable[[], Emulator]
    description: str = ""


RegisterConnector = Callable[[ConnectorType[Any]], None]
RegisterChannel = Callable[[ChannelType[Any]], None]
RegisterEmulator = Callable[[EmulatorType], None]
