"""FakeCRM: a tiny CRM with people, closed cases, a batch write endpoint and an outbox for the test channel.

Writes are upserts by the hub's idempotency key, as a real CRM's external-id upsert is, and every batch is
recorded, so a test can assert what arrived, how often, and in how many calls.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

TOKEN = "fake-crm-token"


@dataclass
class FakeState:
    people: dict[str, dict[str, Any]] = field(default_factory=dict)
    cases: list[dict[str, Any]] = field(default_factory=list)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: person id -> the payload of the last ``person_opt_out`` written to them (last write wins, as on a
    #: real CRM field, so a test sees an older change written after a newer one)
    opt_outs: dict[str, dict[str, Any]] = field(default_factory=dict)
    batches: list[list[dict[str, Any]]] = field(default_factory=list)
    creates: int = 0
    updates: int = 0
    outbox: list[dict[str, Any]] = field(default_factory=list)
    latency: float = 0.0
    fail_next: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    #: (calls left, status, headers): make batch writes fail, for the shared connector suite
    write_failures: tuple[int, int, dict[str, str]] = (0, 200, {})
    calls: int = 0
    #: person reads being answered right now, and the most seen at once (to check the hub's bound)
    reads_in_flight: int = 0
    most_reads_in_flight: int = 0
    #: how long the outbox takes to accept a message; messages being accepted now, and the most at once
    outbox_latency: float = 0.0
    sends_in_flight: int = 0
    most_sends_in_flight: int = 0


def create_app(state: FakeState) -> FastAPI:
    app = FastAPI()

    def auth(request: Request) -> None:
        state.calls += 1
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            raise HTTPException(401, "bad token")

    async def maybe_fail() -> JSONResponse | None:
        if state.latency:
            await asyncio.sleep(state.latency)
        if state.fail_next:
            status, headers = state.fail_next.pop(0)
            return JSONResponse({"error": "injected"}, status_code=status, headers=headers)
        return None

    @app.get("/people/{crm_id}")
    async def get_person(crm_id: str, request: Request) -> Any:
        auth(request)
        state.reads_in_flight += 1
        state.most_reads_in_flight = max(state.most_reads_in_flight, state.reads_in_flight)
        try:
            failure = await maybe_fail()
        finally:
            state.reads_in_flight -= 1
        if failure is not None:
            return failure
        if crm_id not in state.people:
            raise HTTPException(404, "no such person")
        return state.people[crm_id]

    @app.get("/people")
    async def find_person(request: Request, email: str | None = None, phone: str | None = None) -> Any:
        auth(request)
        for person in state.people.values():
            if (email and person.get("email") == email) or (phone and person.get("phone") == phone):
                return [person]
        return []

    @app.get("/cases/closed")
    async def closed_cases(request: Request, after: int = 0) -> Any:
        auth(request)
        return [c for c in state.cases if c["seq"] > after]

    @app.post("/batch")
    async def write_batch(request: Request) -> Any:
        auth(request)
        if (failure := await maybe_fail()) is not None:
            return failure
        left, status, headers = state.write_failures
        if left > 0:
            state.write_failures = (left - 1, status, headers)
            return JSONResponse({"error": "injected"}, status_code=status, headers=headers)
        items = json.loads(await request.body())
        state.batches.append(items)
        results = []
        for item in items:
            if item["record_id"] == "bad":
                results.append({"id": item["id"], "ok": False, "error": "record is locked"})
                continue
            if item["key"] in state.records:
                state.updates += 1
            else:
                state.creates += 1
            state.records[item["key"]] = item
            if item["payload"]["kind"] == "person_opt_out":
                state.opt_outs[item["record_id"]] = item["payload"]
            results.append({"id": item["id"], "ok": True, "remote_id": f"R-{item['key']}"})
        return results

    @app.post("/outbox")
    async def outbox(request: Request) -> Any:
        auth(request)
        state.sends_in_flight += 1
        state.most_sends_in_flight = max(state.most_sends_in_flight, state.sends_in_flight)
        try:
            await asyncio.sleep(state.outbox_latency)
        finally:
            state.sends_in_flight -= 1
        state.outbox.append(json.loads(await request.body()))
        return {"id": f"msg-{len(state.outbox)}"}

    return app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sign(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
