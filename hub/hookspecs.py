"""Every hook of CX Hub. Each docstring here is the hook's documentation (docs/hooks.md is generated from it).

Hooks come in three families:

* **registration** (``hub_register_*``): called once at start-up with a ``register`` callback; the hook only
  registers types, the work is done by the objects those types create;
* **lifecycle** (``hub_startup``, ``hub_shutdown``);
* **events** (``hub_on_<noun>_<past participle>``): told what happened. They may be ``async def``. The hub calls
  every implementation, awaits them together, and isolates failures: one plugin raising is logged and counted
  (``cxhub_hook_errors_total``) and never stops the others or loses the event. Their return values are ignored.

Arguments are only ever added, never renamed: implement the ones you need, pluggy passes only those.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

from hub.contracts import RegisterChannel, RegisterConnector, RegisterEmulator
from hub.models import (
    CaseEvent,
    Delivery,
    InvitationRecord,
    ResponseRecord,
    WriteBackItem,
    WriteBackResult,
)

if TYPE_CHECKING:
    from hub.app import Hub

hookspec = pluggy.HookspecMarker("cxhub")


@hookspec
def hub_register_connectors(register: RegisterConnector) -> None:
    """Register the connector types (CRMs) this plugin offers.

    Called once at start-up. Call ``register(ConnectorType(name, settings, factory))`` for each type; the
    config then names instances of it (``[connectors.<instance>] plugin = "<name>"``). Two plugins registering
    the same name stop start-up.

    :param register: the callback that takes a ``hub.ConnectorType``.
    """


@hookspec
def hub_register_channels(register: RegisterChannel) -> None:
    """Register the channel types (email, SMS, chat) this plugin offers.

    Called once at start-up, like ``hub_register_connectors``, with a callback taking a ``hub.ChannelType``.

    :param register: the callback that takes a ``hub.ChannelType``.
    """


@hookspec
def hub_register_emulators(register: RegisterEmulator) -> None:
    """Register local emulators of the services this plugin's connectors or channels talk to.

    ``cxhub demo`` runs a whole hub against them, and benchmarks measure API efficiency with them. Call
    ``register(EmulatorType(plugin, kind, factory))`` where ``plugin`` is the connector or channel type
    the emulator stands in for and ``factory()`` returns a ``hub.ConnectorEmulator`` or ``hub.ChannelEmulator``.

    :param register: the callback that takes a ``hub.EmulatorType``.
    """


@hookspec
def hub_startup(hub: Hub) -> None:
    """The hub has loaded its config, opened its store and created every connector and channel.

    May be ``async def``. Raising here stops start-up, so a plugin can refuse to run without what it needs.

    :param hub: the running hub (config, store, connectors, channels).
    """


@hookspec
def hub_shutdown(hub: Hub) -> None:
    """The hub is stopping; release what ``hub_startup`` acquired. May be ``async def``; errors are logged.

    :param hub: the running hub.
    """


@hookspec
def hub_on_case_event_received(connector: str, event: CaseEvent, new: bool) -> None:
    """A CRM event reached the hub (webhook or poll) and is stored.

    Fires for every event, duplicates included (``new`` is False for an event id already seen), before
    campaigns are matched.

    :param connector: the name of the connector instance that reported it.
    :param event: the normalised event.
    :param new: False when the hub had already stored this event id (a retry or webhook/poll overlap).
    """


@hookspec
def hub_on_invitation_suppressed(invitation: InvitationRecord, reason: str) -> None:
    """The contact policy decided not to survey someone for an event (opted out, contacted recently, ...).

    :param invitation: the stored, suppressed invitation.
    :param reason: why, in words an admin understands; the same text ``cxhub explain`` prints.
    """


@hookspec
def hub_on_survey_sent(invitation: InvitationRecord, channel: str, delivery: Delivery) -> None:
    """A channel accepted a survey invitation or reminder.

    :param invitation: the invitation, now ``sent``.
    :param channel: the name of the channel instance that sent it.
    :param delivery: what the channel reported, e.g. the provider's message id.
    """


@hookspec
def hub_on_response_received(response: ResponseRecord, invitation: InvitationRecord) -> None:
    """A customer answered, or amended an answer (a comment added later fires this again).

    The place for reactions: alert a team, open a follow-up task. Write-backs to the CRMs are queued by the
    hub itself and need no hook.

    :param response: the stored response, with its category and normalised score.
    :param invitation: the invitation it answers.
    """


@hookspec
def hub_on_response_written_back(connector: str, item: WriteBackItem, result: WriteBackResult) -> None:
    """A write-back item reached a CRM.

    :param connector: the connector instance it was written to.
    :param item: the item (person summary, timeline entry or case feedback).
    :param result: the connector's result, with the remote id when it reported one.
    """


@hookspec
def hub_on_write_back_failed(connector: str, item: WriteBackItem, error: str, dead_letter: bool) -> None:
    """A write-back item failed. ``dead_letter`` is True when it will not be retried (``cxhub replay`` can).

    :param connector: the connector instance.
    :param item: the item that failed.
    :param error: the error, secrets redacted.
    :param dead_letter: True when the item was moved to the dead letters; False when a retry is scheduled.
    """
