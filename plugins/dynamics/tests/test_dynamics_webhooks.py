"""Webhooks of a Dataverse service endpoint: WebhookKey or HttpHeader authentication (constant time), and
every malformed or hostile body a 4xx (``BadInput``), never a 500."""

from __future__ import annotations

import json

import pytest
from dynamics_support import WEBHOOK_KEY, make_connector, make_settings, resolve, seed_case, webhook
from hub_dynamics.connector import DynamicsConnector
from hub_dynamics.emulator import DataverseEmulator

from hub import BadInput
from hub.testing.server import TlsServer


@pytest.mark.asyncio
async def test_wrong_or_missing_key_is_401(connector: DynamicsConnector, emulator: DataverseEmulator) -> None:
    incident = seed_case(emulator)[2]
    for key in ("wrong", "", WEBHOOK_KEY + "x"):
        with pytest.raises(BadInput) as refused:
            await connector.parse_webhook(webhook(emulator, "CloseIncident", "incident", incident, key=key))
        assert refused.value.status_code == 401
    assert emulator.calls_of("api") == []  # nothing is read for an unauthenticated request


@pytest.mark.asyncio
async def test_http_header_authentication(emulator: DataverseEmulator, server: TlsServer) -> None:
    settings = make_settings(
        server,
        webhook={"auth": "http_header", "header_name": "X-Api-Key", "key": "env:CXHUB_TEST_D365_WEBHOOK"},
    )
    connector = make_connector(settings)
    try:
        incident = seed_case(emulator)[2]
        resolve(emulator, incident)
        request = webhook(emulator, "CloseIncident", "incident", incident)
        with pytest.raises(BadInput):
            await connector.parse_webhook(request)  # the key in ?code= is not what this endpoint sends
        signed = request.model_copy(
            update={"headers": {**request.headers, "x-api-key": WEBHOOK_KEY}, "query": {}}
        )
        assert len((await connector.parse_webhook(signed)).events) == 1
    finally:
        await connector.aclose()


def _context(**changes: object) -> bytes:
    context: dict[str, object] = {
        "MessageName": "CloseIncident",
        "PrimaryEntityName": "incident",
        "PrimaryEntityId": "5b0c2f5e-8a73-4f0e-9d7e-0c1d2e3f4a5b",
        "InputParameters": [],
    }
    context.update(changes)
    return json.dumps(context).encode()


def _nested(depth: int) -> bytes:
    return (
        b'{"MessageName": "Update", "PrimaryEntityName": "incident", "x": '
        + b"[" * depth
        + b"]" * depth
        + b"}"
    )


HOSTILE = {
    "not json": b"<xml/>",
    "not an object": b"[1, 2]",
    "NUL byte": _context(MessageName="Close\u0000Incident"),
    "raw NUL": b'{"MessageName": "CloseIncident"\x00}',
    "deep nesting": _nested(5000),
    "long id": _context(PrimaryEntityId="a" * 300),
    "id not a GUID": _context(PrimaryEntityId="1; DROP TABLE"),
    "message not text": _context(MessageName=17),
    "parameters not a list": _context(InputParameters={"Target": 1}),
    "pair without key": _context(InputParameters=[{"value": 1}]),
    "invalid utf-8": b'{"MessageName": "\xff"}',
}


@pytest.mark.asyncio
@pytest.mark.parametrize("name", sorted(HOSTILE))
async def test_hostile_bodies_are_bad_input(
    connector: DynamicsConnector, emulator: DataverseEmulator, name: str
) -> None:
    request = webhook(
        emulator, "CloseIncident", "incident", "5b0c2f5e-8a73-4f0e-9d7e-0c1d2e3f4a5b", body=HOSTILE[name]
    )
    with pytest.raises(BadInput) as refused:
        await connector.parse_webhook(request)
    assert 400 <= refused.value.status_code < 500


@pytest.mark.asyncio
async def test_a_huge_body_is_413(connector: DynamicsConnector, emulator: DataverseEmulator) -> None:
    body = _context(Padding="x" * (600 * 1024))
    with pytest.raises(BadInput) as refused:
        await connector.parse_webhook(
            webhook(emulator, "Update", "incident", "5b0c2f5e-8a73-4f0e-9d7e-0c1d2e3f4a5b", body=body)
        )
    assert refused.value.status_code == 413


@pytest.mark.asyncio
async def test_other_tables_and_messages_are_acknowledged_without_events(
    connector: DynamicsConnector, emulator: DataverseEmulator
) -> None:
    contact = seed_case(emulator)[1]
    reply = await connector.parse_webhook(webhook(emulator, "Update", "contact", contact))
    assert reply.status_code == 200 and reply.events == []
    gone = "5b0c2f5e-8a73-4f0e-9d7e-0c1d2e3f4a5b"  # a case deleted before the hub read it
    assert (await connector.parse_webhook(webhook(emulator, "CloseIncident", "incident", gone))).events == []
