"""The channel in a hub served over real HTTP: the emulator's signed callbacks and the phone's reply reach the
hub's ``/inbound/<channel>`` as they would from Twilio, verified against the hub's public URL."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest
import uvicorn
from hub_sms.emulator import SmsEmulator
from sms_support import MOBILE, SmsHarness
from sqlalchemy import select

from hub.app import Hub
from hub.config import parse_config
from hub.store.tables import RejectedWebhook, Response
from hub.testing.channel_suite import CHANNEL, _invite, channel_suite_config
from hub.testing.memory import MemoryChannel, MemoryConnector, memory_channel_plugin
from hub.web import create_app


@dataclass
class Served:
    hub: Hub
    url: str


class ServedHarness(SmsHarness):
    """The suite's harness, for a hub public at ``public_url``."""

    def __init__(self, emulator: SmsEmulator, public_url: str) -> None:
        self.public_url = public_url
        super().__init__(emulator)

    @property
    def inbound_url(self) -> str:
        return f"{self.public_url}/inbound/{CHANNEL}"


@pytest.fixture
async def served(
    emulator: SmsEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Served]:
    """A hub on SQLite with the SMS channel first, served by uvicorn on this test's event loop."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    harness = ServedHarness(emulator, url)
    MemoryChannel.sent.clear()
    MemoryConnector.people.clear()
    for name, value in harness.environment().items():
        monkeypatch.setenv(name, value)
    data = channel_suite_config(harness, tmp_path)
    data["hub"]["public_url"] = url
    hub = await Hub.open(parse_config(data, tmp_path / "hub.toml"), plugin_objects=[memory_channel_plugin()])
    server = uvicorn.Server(
        uvicorn.Config(create_app(hub, scheduler=False), log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield Served(hub, url)
    finally:
        server.should_exit = True
        await task
        await hub.close()


async def test_callbacks_and_a_texted_score_reach_the_hub_over_http(
    served: Served, emulator: SmsEmulator
) -> None:
    invitation = await _invite(served.hub, {"phone": MOBILE})
    assert (invitation.status, invitation.channel) == ("sent", CHANNEL), invitation.reason
    assert await asyncio.to_thread(emulator.settle)
    answered = [outcome for _, _, outcome in emulator.state.callback_log]
    assert answered and all(200 <= outcome < 300 for outcome in answered), answered
    await asyncio.to_thread(emulator.reply, MOBILE, "9 quick and friendly")
    async with served.hub.store.session() as s:
        response = await s.scalar(select(Response).where(Response.invitation_id == invitation.id))
    assert response is not None and (response.rating, response.comment) == (9, "quick and friendly")


async def test_a_forged_reply_is_403_and_kept(served: Served, emulator: SmsEmulator) -> None:
    request = emulator.inbound_request(MOBILE, "0", url=f"{served.url}/inbound/{CHANNEL}")
    form = dict(parse_qsl(request.body.decode()))
    forged = urlencode({**form, "Body": "10"}).encode()
    async with httpx.AsyncClient() as client:
        reply = await client.post(request.url, content=forged, headers=request.headers)
    assert reply.status_code == 403 and "signature" in reply.json()["error"]
    async with served.hub.store.session() as s:
        kept = list(await s.scalars(select(RejectedWebhook)))
    assert [(k.target, k.status_code, k.body) for k in kept] == [(CHANNEL, 403, forged)]
