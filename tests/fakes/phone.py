"""A phone for the two-way test channel (``tests.fakes.twoway``): a ``hub.PhoneEmulator`` whose replies reach
the hub over real HTTP at ``POST /inbound/<instance>``, signed as the provider signs them."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from tests.fakes import twoway


class FakePhone:
    def __init__(self) -> None:
        self.hub_url = ""
        self.instance = ""
        self.typed: list[dict[str, str]] = []
        self._ids = itertools.count(1)

    def start(self, workdir: Path, hub_url: str, instance: str) -> None:
        self.hub_url, self.instance = hub_url, instance

    def stop(self) -> None:
        return None

    def instance_settings(self) -> dict[str, Any]:
        return {"secret": twoway.SECRET}

    def environment(self) -> dict[str, str]:
        return {}

    def links(self) -> dict[str, str]:
        return {"phone": "/admin/phone"}

    def survey_link(self, recipient: str | None = None) -> str | None:
        return None

    def conversations(self) -> list[dict[str, Any]]:
        messages = [
            {"number": m["to"], "sender": "hub", "text": m["text"], "at": m["at"], "status": "delivered"}
            for m in twoway.PROVIDER.delivered
        ] + [{"sender": "phone", **m} for m in self.typed]
        messages.sort(key=lambda m: m["at"])
        threads: dict[str, list[dict[str, Any]]] = {}
        for message in messages:
            threads.setdefault(message.pop("number"), []).append(message)
        return [{"number": number, "messages": texts} for number, texts in threads.items()]

    def reply(self, number: str, text: str) -> None:
        self.typed.append({"number": number, "text": text, "at": datetime.now(UTC).isoformat()})
        request = twoway.PROVIDER.sign(
            {"type": "reply", "id": f"PH{next(self._ids)}", "from": number, "text": text}
        )
        answer = httpx.post(
            f"{self.hub_url}/inbound/{self.instance}", content=request.body, headers=request.headers
        )
        answer.raise_for_status()
