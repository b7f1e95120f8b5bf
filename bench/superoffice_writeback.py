"""SuperOffice write-back: the hub's real path against a naive one-request-per-field integration.

    .venv-boot/bin/uv run python bench/superoffice_writeback.py                      # 5,000 x 1,000, 50 ms
    .venv-boot/bin/uv run python bench/superoffice_writeback.py --responses 500 --persons 100   # quick

One run, three processes:

* this process seeds the SuperOffice emulator (persons, one request per answer, the CX Hub fields) and
  serves it over real HTTP on loopback (``serve_in_background``) with ``set_latency`` per API call; it
  builds the hub's SQLite database (responses stored, write-backs queued by ``Engine._queue_write_backs``,
  the function ``record_answer`` queues with) and counts every call with the emulator's own call log;
* a child runs the hub's path: ``Hub.open`` with a SuperOffice connector pointed at the emulator, then
  ``hub.sync.run(connector)``, the real sync and the real connector, at full size;
* a child runs the naive baseline with the same client and credentials, sequentially: per answer, one
  PATCH per person summary field, one POST of the activity, one PATCH per ticket feedback field. At
  ~0.6 s per answer the full baseline would take close to an hour, so it runs on the first
  ``--baseline-sample`` answers and its call count and time are extrapolated linearly (the per-answer
  work of the baseline does not depend on how many answers there are).

The emulator's listening socket gets TCP_NODELAY (``--keep-nagle`` leaves it as ``serve_in_background``
makes it): without it every request on a kept-alive connection waits ~40 ms for a delayed ACK, and the
calls would cost ~90 ms instead of the injected latency.

Peak memory is the peak resident set size of each child, the process that does the write-back (the
emulator runs in this one): ``VmHWM`` from ``/proc/self/status`` on Linux, because a child's
``ru_maxrss`` starts at its parent's high-water mark. Results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import os
import platform
import random
import resource
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hub_superoffice.client import SuperOfficeClient
from hub_superoffice.config import SuperOfficeSettings
from hub_superoffice.emulator import SuperOfficeEmulator, serve_in_background
from hub_superoffice.mapping import field_operations, render, truncate
from pydantic import SecretStr
from sqlalchemy import func, select

from hub.app import Hub
from hub.config import HubConfig, parse_config
from hub.http import make_client
from hub.logging import configure
from hub.models import CaseEvent, nps_category
from hub.store.tables import Event, Identity, Invitation, Person, Response, WriteBack
from hub.testing.memory import memory_channel_plugin

CONNECTOR = "so"
CAMPAIGN = "bench"
TENANT = "Cust12345"
APP_TOKEN_ENV = "SO_BENCH_APP_TOKEN"
SYSTEM_USER_TOKEN_ENV = "SO_BENCH_SYSTEM_USER_TOKEN"
COMMENTS = (
    "Quick and friendly help",
    "Took three days to get an answer",
    "Solved on the first call, thank you!",
    "The invoice is still wrong",
    "Good, but I had to explain the problem twice",
    "Excellent service from Mette",
)


# --- the data: the same answers in every process --------------------------------------------------


@dataclass(frozen=True)
class Answer:
    index: int
    response_id: str
    person: int  # index into the emulator's persons
    rating: int
    comment: str | None
    answered_at: datetime


def make_answers(count: int, persons: int, seed: int, now: datetime) -> list[Answer]:
    """``count`` NPS answers spread over the last 60 days; answer i comes from person ``i % persons``."""
    rng = random.Random(seed)
    start = now - timedelta(days=60)
    step = timedelta(days=60) / max(count, 1)
    answers = []
    for i in range(count):
        rating = rng.choices(range(11), weights=(2, 1, 1, 1, 2, 3, 4, 6, 9, 12, 10))[0]
        comment = rng.choice(COMMENTS) if rng.random() < 0.4 else None
        response_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        answers.append(Answer(i, response_id, i % persons, rating, comment, start + step * i))
    return answers


@dataclass
class State:
    """What the children need to know: where the emulator and the database are, and the ids in it."""

    base_url: str
    key_file: str
    database: str
    responses: int
    persons: int
    seed: int
    now: str
    max_in_flight: int
    baseline_sample: int
    internal_message: bool
    person_ids: list[int]
    ticket_ids: list[int]

    @property
    def moment(self) -> datetime:
        return datetime.fromisoformat(self.now)

    def answers(self) -> list[Answer]:
        return make_answers(self.responses, self.persons, self.seed, self.moment)


def connector_settings(state: State) -> dict[str, Any]:
    """The connector's settings as an admin writes them in the config file (secrets by reference)."""
    return {
        "plugin": "superoffice",
        "base_url": state.base_url,
        "max_in_flight": state.max_in_flight,
        "auth": {
            "type": "system_user",
            "application_token": f"env:{APP_TOKEN_ENV}",
            "system_user_token": f"env:{SYSTEM_USER_TOKEN_ENV}",
            "private_key": f"file:{state.key_file}",
            "context_identifier": TENANT,
        },
    }


def hub_config(state: State) -> HubConfig:
    data = {
        "hub": {
            "database_url": f"sqlite+aiosqlite:///{state.database}",
            "public_url": "http://127.0.0.1:9",
            "log_level": "warning",
        },
        "connectors": {CONNECTOR: connector_settings(state)},
        "channels": {"memory": {"plugin": "memory"}},
        "surveys": {"nps": {"kind": "nps"}},
        "campaigns": {
            CAMPAIGN: {
                "trigger": {"connector": CONNECTOR, "event": "case.closed"},
                "survey": "nps",
                "channels": ["memory"],
                "write_back": {"internal_comment": state.internal_message},
            }
        },
    }
    return parse_config(data, Path(state.database).with_suffix(".toml"))


def max_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB.

    Linux: ``VmHWM`` of ``/proc/self/status``. Not ``ru_maxrss``: the kernel carries the parent's
    high-water mark over fork and exec, so a child started by a big process reports the parent's size.
    Elsewhere: ``ru_maxrss`` (KiB on Linux, bytes on macOS).
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


# --- this process: the emulator and the hub's queue --------------------------------------------------


def seed_emulator(emulator: SuperOfficeEmulator, persons: int, responses: int) -> tuple[list[int], list[int]]:
    emulator.define_cxhub_fields()
    company = emulator.add_company("Bench Kunde A/S", "DK")
    person_ids = [
        emulator.add_person(
            "Bench",
            f"Person {j}",
            email=f"person{j}@bench.example",
            company_id=company,
            country="DK",
            language="English",
        )
        for j in range(persons)
    ]
    ticket_ids = [emulator.add_ticket(f"Request {i}", person_ids[i % persons]) for i in range(responses)]
    return person_ids, ticket_ids


async def queue_write_backs(state: State) -> int:
    """Store the answers as the engine would have, and queue their write-backs with the engine's own code."""
    hub = await Hub.open(hub_config(state), plugin_objects=[memory_channel_plugin()])
    try:
        campaign = hub.config.campaigns[CAMPAIGN]
        survey = hub.config.surveys[campaign.survey]
        answers = state.answers()
        async with hub.store.session() as s:
            people = [
                Person(email=f"person{j}@bench.example", name=f"Bench Person {j}", language="en")
                for j in range(state.persons)
            ]
            s.add_all(people)
            await s.flush()
            s.add_all(
                Identity(person_id=person.id, connector=CONNECTOR, crm_id=str(crm_id))
                for person, crm_id in zip(people, state.person_ids, strict=True)
            )
            events = []
            for answer in answers:
                ticket_id = state.ticket_ids[answer.index]
                closed = answer.answered_at - timedelta(hours=2)
                case = CaseEvent(
                    event_id=f"ticket:{ticket_id}:closed:{closed:%Y%m%dT%H%M%SZ}",
                    event_type="case.closed",
                    occurred_at=closed,
                    record_type="ticket",
                    record_id=str(ticket_id),
                    person_id=str(state.person_ids[answer.person]),
                )
                events.append(
                    Event(
                        connector=CONNECTOR,
                        event_id=case.event_id,
                        event_type=case.event_type,
                        record_id=case.record_id,
                        source="poll",
                        payload=case.model_dump(mode="json"),
                        received_at=closed,
                        processed_at=closed,
                    )
                )
            s.add_all(events)
            await s.flush()
            invitations = [
                Invitation(
                    campaign=CAMPAIGN,
                    event_pk=event.id,
                    person_id=people[answer.person].id,
                    status="answered",
                    channel="memory",
                    language="en",
                    sent_at=answer.answered_at - timedelta(hours=1),
                    created_at=answer.answered_at - timedelta(hours=2),
                    updated_at=answer.answered_at,
                )
                for answer, event in zip(answers, events, strict=True)
            ]
            s.add_all(invitations)
            await s.flush()
            rows = [
                Response(
                    id=answer.response_id,
                    invitation_id=invitation.id,
                    person_id=people[answer.person].id,
                    campaign=CAMPAIGN,
                    survey_kind=survey.kind.value,
                    rating=answer.rating,
                    score=survey.score_of(answer.rating),
                    category=nps_category(answer.rating).value,
                    comment=answer.comment,
                    language="en",
                    channel="memory",
                    answered_at=answer.answered_at,
                    updated_at=answer.answered_at,
                )
                for answer, invitation in zip(answers, invitations, strict=True)
            ]
            s.add_all(rows)
            await s.flush()
            for row, invitation, event in zip(rows, invitations, events, strict=True):
                await hub.engine._queue_write_backs(s, row, invitation, event, campaign)
        async with hub.store.session() as s:
            return int(await s.scalar(select(func.count()).select_from(WriteBack)) or 0)
    finally:
        await hub.close()


# --- child: the hub's path -----------------------------------------------------------------------------


async def run_hub(state: State) -> dict[str, Any]:
    hub = await Hub.open(hub_config(state), plugin_objects=[memory_channel_plugin()])
    try:
        connector: Any = hub.connectors[CONNECTOR]
        inside = 0.0
        write_back = connector.write_back

        async def timed_write_back(batch: Any) -> Any:  # measurement only: the same call, timed
            nonlocal inside
            started = time.perf_counter()
            try:
                return await write_back(batch)
            finally:
                inside += time.perf_counter() - started

        connector.write_back = timed_write_back
        rss_ready = max_rss_mib()
        started = time.perf_counter()
        stats = await hub.sync.run(CONNECTOR)
        elapsed = time.perf_counter() - started
        async with hub.store.session() as s:
            states = dict(
                (await s.execute(select(WriteBack.state, func.count()).group_by(WriteBack.state))).all()
            )
        writer = connector._writer
        return {
            "elapsed": elapsed,
            "inside_write_back": inside,
            "written": stats.written,
            "retried": stats.retried,
            "dead": stats.dead,
            "batches": stats.batches,
            "error": stats.error,
            "states": {str(k): int(v) for k, v in states.items()},
            "client_calls": connector.client.calls,
            "client_call_seconds": connector.client.call_seconds,
            "timeline_lookups": writer.timeline_lookups.lookups,
            "timeline_keys_looked_up": writer.timeline_lookups.keys,
            "rss_ready_mib": rss_ready,
            "rss_peak_mib": max_rss_mib(),
        }
    finally:
        await hub.close()


# --- child: the naive baseline -------------------------------------------------------------------------


def naive_summary(history: list[Answer], now: datetime) -> dict[str, Any]:
    """The person summary after the latest answer, as a naive integration would compute it."""
    latest = history[-1]
    ratings = [a.rating for a in history]
    recent = [a.rating for a in history if a.answered_at >= now - timedelta(days=30)]
    comments = [a.comment for a in history if a.comment]
    return {
        "latest_rating": latest.rating,
        "latest_score": latest.rating * 10.0,
        "latest_category": nps_category(latest.rating),
        "latest_date": latest.answered_at,
        "latest_comment": comments[-1] if comments else None,
        "average_rating": round(sum(ratings) / len(ratings), 2),
        "average_rating_30_days": round(sum(recent) / len(recent), 2) if recent else None,
        "average_score": round(10.0 * sum(ratings) / len(ratings), 2),
        "count": len(history),
    }


async def run_baseline(state: State, private_key: str) -> dict[str, Any]:
    raw = connector_settings(state)
    raw.pop("plugin")
    raw["auth"] |= {
        "application_token": SecretStr(os.environ[APP_TOKEN_ENV]),
        "system_user_token": SecretStr(os.environ[SYSTEM_USER_TOKEN_ENV]),
        "private_key": SecretStr(private_key),
    }
    settings = SuperOfficeSettings.model_validate(raw)
    client = SuperOfficeClient(settings, make_client)  # the hub's client: same auth, same HTTP stack
    sample = state.answers()[: state.baseline_sample]
    person_fields = settings.person.mapped()
    ticket = settings.ticket
    history: dict[int, list[Answer]] = defaultdict(list)
    rss_ready = max_rss_mib()
    started = time.perf_counter()
    try:
        for answer in sample:
            person_id = state.person_ids[answer.person]
            ticket_id = state.ticket_ids[answer.index]
            history[answer.person].append(answer)
            summary = naive_summary(history[answer.person], state.moment)
            for name, field in person_fields.items():  # one request per summary field
                await client.patch_entity("Person", person_id, field_operations({field: summary[name]}))
            when = answer.answered_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            values = {
                "rating": answer.rating,
                "category": nps_category(answer.rating),
                "comment": truncate(answer.comment, settings.comment_max_length),
                "campaign": CAMPAIGN,
                "channel": "memory",
                "ticket": str(ticket_id),
            }
            await client.create_appointment(
                {
                    "Person": {"PersonId": person_id},
                    "StartDate": when,
                    "EndDate": when,
                    "Type": settings.timeline.appointment_type,
                    "Completed": "Completed",
                    "Description": render(settings.timeline.template, values),
                }
            )
            feedback: dict[str | None, Any] = {
                ticket.rating_field: answer.rating,
                ticket.comment_field: truncate(answer.comment, settings.comment_max_length) or "",
                ticket.processed_field: answer.answered_at,
                ticket.received_field: True,
            }
            for ticket_field, value in feedback.items():  # one request per feedback field
                if ticket_field:
                    await client.patch_entity("Ticket", ticket_id, field_operations({ticket_field: value}))
            if state.internal_message:
                text = render(ticket.message_template, values)
                await client.post_ticket_message(
                    {
                        "Ticket": {"TicketId": ticket_id},
                        "Slevel": "Internal",
                        "Type": "Html",
                        "Author": "CX Hub",
                        "Body": text,
                        "HtmlBody": html.escape(text).replace("\n", "<br>"),
                        "Important": False,
                    }
                )
        elapsed = time.perf_counter() - started
    finally:
        await client.aclose()
    return {
        "elapsed": elapsed,
        "responses": len(sample),
        "client_calls": client.calls,
        "client_call_seconds": client.call_seconds,
        "rss_ready_mib": rss_ready,
        "rss_peak_mib": max_rss_mib(),
    }


def child(phase: str, state_file: str) -> None:
    configure("warning")
    state = State(**json.loads(Path(state_file).read_text()))
    if phase == "hub":
        result = asyncio.run(run_hub(state))
    else:
        result = asyncio.run(run_baseline(state, Path(state.key_file).read_text()))
    print("RESULT " + json.dumps(result), flush=True)


# --- this process: running the phases and reporting -------------------------------------------------


@dataclass
class Phase:
    name: str
    result: dict[str, Any]
    calls: Counter[str]
    api_calls: int
    logins: int
    max_in_flight_seen: int


def call_kind(method: str, path: str) -> str:
    if "/PartnerSystemUser/" in path:
        return "POST login (PartnerSystemUser/Authenticate)"
    resource_path = path.split("/api/v1/", 1)[-1]
    parts = resource_path.split("/")
    name = "/".join(part if not part.isdigit() else "{id}" for part in parts)
    return f"{method} {name}"


def run_phase(name: str, emulator: SuperOfficeEmulator, state_file: Path, env: dict[str, str]) -> Phase:
    emulator.clear_calls()
    emulator.max_in_flight_seen = 0
    completed = subprocess.run(
        [sys.executable, __file__, "--phase", name, "--state", str(state_file)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    if completed.returncode != 0 or not lines:
        sys.stdout.write(completed.stdout)
        raise SystemExit(f"the {name} phase failed (exit code {completed.returncode})")
    calls = list(emulator.calls)
    kinds = Counter(call_kind(call.method, call.path) for call in calls)
    logins = sum(count for kind, count in kinds.items() if "login" in kind)
    return Phase(
        name=name,
        result=json.loads(lines[-1].removeprefix("RESULT ")),
        calls=kinds,
        api_calls=len(calls) - logins,
        logins=logins,
        max_in_flight_seen=emulator.max_in_flight_seen,
    )


def verify_hub_writes(emulator: SuperOfficeEmulator, state: State) -> list[str]:
    """What the hub's path should have left in SuperOffice; an empty list when it is all there, once."""
    problems = []
    answers = state.answers()
    keys = Counter(
        appointment["ExtraFields"].get("x_cxhub_response_id", "")
        for appointment in list(emulator.store.data.appointments.values())
    )
    expected = {f"timeline:{a.response_id}" for a in answers}
    missing = expected - set(keys)
    doubled = [key for key, count in keys.items() if key in expected and count > 1]
    if missing:
        problems.append(f"{len(missing)} timeline entries missing")
    if doubled:
        problems.append(f"{len(doubled)} timeline entries written more than once")
    wrong_tickets = sum(
        1
        for a in answers
        if (emulator.ticket(state.ticket_ids[a.index]) or {}).get("CustomFields", {}).get("x_cxhub_rating")
        != str(a.rating)
    )
    if wrong_tickets:
        problems.append(f"{wrong_tickets} tickets without their rating")
    per_person = Counter(a.person for a in answers)
    if state.internal_message:
        counts = Counter(
            message["TicketId"]
            for message in list(emulator.store.data.messages.values())
            if str(message.get("MessageId", "")).startswith("<cxhub-")
        )
        unmessaged = sum(1 for ticket_id in state.ticket_ids if counts[ticket_id] != 1)
        if unmessaged:
            problems.append(f"{unmessaged} tickets without exactly one internal message")
    wrong_people = sum(
        1
        for j, person_id in enumerate(state.person_ids)
        if (emulator.person(person_id) or {}).get("CustomFields", {}).get("x_cxhub_count")
        != str(per_person[j])
    )
    if wrong_people:
        problems.append(f"{wrong_people} persons without the right answer count")
    return problems


def fmt(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def report(
    args: argparse.Namespace, hub: Phase, baseline: Phase | None, problems: list[str]
) -> dict[str, Any]:
    n = args.responses
    h = hub.result
    hub_rate = n / h["elapsed"]
    hub_per_response = hub.api_calls / n
    in_flight_inside = h["client_call_seconds"] / h["inside_write_back"] if h["inside_write_back"] else 0.0
    in_flight_overall = h["client_call_seconds"] / h["elapsed"]
    round_trip = h["client_call_seconds"] / max(h["client_calls"], 1)
    summary: dict[str, Any] = {
        "responses": n,
        "persons": args.persons,
        "latency_seconds": args.latency,
        "max_in_flight": args.max_in_flight,
        "internal_message": args.internal_message,
        "tcp_nodelay": not args.keep_nagle,
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "hub": {
            "api_calls": hub.api_calls,
            "logins": hub.logins,
            "api_calls_per_response": hub_per_response,
            "seconds": h["elapsed"],
            "responses_per_second": hub_rate,
            "seconds_inside_write_back": h["inside_write_back"],
            "mean_call_round_trip_seconds": round_trip,
            "mean_calls_in_flight_inside_write_back": in_flight_inside,
            "mean_calls_in_flight_overall": in_flight_overall,
            "max_calls_in_flight_seen": hub.max_in_flight_seen,
            "rss_peak_mib": h["rss_peak_mib"],
            "rss_before_write_back_mib": h["rss_ready_mib"],
            "calls_by_kind": dict(hub.calls),
            "sync": {k: h[k] for k in ("written", "retried", "dead", "batches", "error", "states")},
            "timeline_lookups": h["timeline_lookups"],
            "timeline_keys_looked_up": h["timeline_keys_looked_up"],
            "verified": not problems,
            "problems": problems,
        },
    }
    rows = [
        ("responses written", fmt(n), ""),
        ("API calls", fmt(hub.api_calls), ""),
        ("API calls per response", fmt(hub_per_response, 2), ""),
        ("wall time, s", fmt(h["elapsed"], 1), ""),
        ("responses per second", fmt(hub_rate, 1), ""),
        ("peak memory (peak RSS), MiB", fmt(h["rss_peak_mib"], 0), ""),
    ]
    if baseline is not None:
        b = baseline.result
        sample = b["responses"]
        per_response = baseline.api_calls / sample
        rate = sample / b["elapsed"]
        summary["baseline"] = {
            "sampled_responses": sample,
            "api_calls_in_sample": baseline.api_calls,
            "logins": baseline.logins,
            "seconds_in_sample": b["elapsed"],
            "mean_call_round_trip_seconds": b["client_call_seconds"] / max(b["client_calls"], 1),
            "api_calls_per_response": per_response,
            "responses_per_second": rate,
            "extrapolated_api_calls": per_response * n,
            "extrapolated_seconds": n / rate,
            "rss_peak_mib": b["rss_peak_mib"],
            "rss_before_write_back_mib": b["rss_ready_mib"],
            "calls_by_kind": dict(baseline.calls),
        }
        summary["ratios"] = {"fewer_calls": per_response / hub_per_response, "faster": hub_rate / rate}
        rows = [
            ("responses written", fmt(n), f"{fmt(sample)} measured, {fmt(n)} extrapolated"),
            ("API calls", fmt(hub.api_calls), f"{fmt(per_response * n)} (extrapolated)"),
            ("API calls per response", fmt(hub_per_response, 2), fmt(per_response, 2)),
            ("wall time, s", fmt(h["elapsed"], 1), f"{fmt(n / rate, 0)} (extrapolated)"),
            ("responses per second", fmt(hub_rate, 1), fmt(rate, 2)),
            ("peak memory (peak RSS), MiB", fmt(h["rss_peak_mib"], 0), fmt(b["rss_peak_mib"], 0)),
        ]

    print()
    print(
        f"SuperOffice write-back: {fmt(n)} responses of {fmt(args.persons)} persons, "
        f"{args.latency * 1000:.0f} ms per API call, max_in_flight {args.max_in_flight}, "
        f"internal ticket message {'on' if args.internal_message else 'off (the default)'}"
    )
    print(f"machine: {summary['machine']}")
    print()
    baseline_title = (
        f"naive baseline (first {baseline.result['responses']} measured, rest extrapolated)"
        if baseline
        else ""
    )
    print(f"| | hub (real path, full size) | {baseline_title} |")
    print("|---|---:|---:|")
    for label, hub_value, baseline_value in rows:
        print(f"| {label} | {hub_value} | {baseline_value} |")
    if baseline is not None:
        ratios = summary["ratios"]
        print()
        print(
            f"ratios: {ratios['fewer_calls']:.1f}x fewer API calls, {ratios['faster']:.1f}x more responses "
            "per second (target: 5x and 5x)"
        )
    print()
    print("API calls of the hub's path by kind (login not counted above):")
    for kind, count in hub.calls.most_common():
        print(f"  {count:>8,}  {kind}")
    if baseline is not None:
        print(f"API calls of the baseline sample ({baseline.result['responses']} responses) by kind:")
        for kind, count in baseline.calls.most_common():
            print(f"  {count:>8,}  {kind}")
    print()
    print(
        f"hub sync: {h['written']:,} items written in {h['batches']} batches, {h['retried']} retried, "
        f"{h['dead']} dead; {h['timeline_keys_looked_up']:,} timeline keys looked up in "
        f"{h['timeline_lookups']} batched look-ups"
    )
    print(
        f"concurrency: {h['inside_write_back']:.1f} s of {h['elapsed']:.1f} s inside connector.write_back "
        f"(the rest is the hub's own database work between batches); mean calls in flight "
        f"{in_flight_inside:.1f} inside write_back, {in_flight_overall:.1f} over the whole run; most seen "
        f"at once by the emulator {hub.max_in_flight_seen}"
    )
    print(
        f"round trip per API call as the client saw it: hub {round_trip * 1000:.0f} ms"
        + (
            f", baseline {summary['baseline']['mean_call_round_trip_seconds'] * 1000:.0f} ms"
            if baseline
            else ""
        )
        + f" ({args.latency * 1000:.0f} ms injected"
        + (", TCP_NODELAY on the emulator's socket)" if not args.keep_nagle else ", Nagle left on)")
    )
    print(
        f"memory: peak RSS (VmHWM) of the write-back process, emulator not included; hub {h['rss_ready_mib']:.0f} MiB before the "
        f"sync started, {h['rss_peak_mib']:.0f} MiB peak"
        + (
            f"; baseline {baseline.result['rss_ready_mib']:.0f} MiB before, "
            f"{baseline.result['rss_peak_mib']:.0f} MiB peak"
            if baseline
            else ""
        )
    )
    print(f"written data verified in the emulator: {'yes' if not problems else '; '.join(problems)}")
    return summary


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--responses", type=int, default=5000)
    parser.add_argument("--persons", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per API call (emulator)")
    parser.add_argument("--max-in-flight", type=int, default=8, help="the connector's max_in_flight")
    parser.add_argument(
        "--baseline-sample",
        type=int,
        default=300,
        help="answers the naive baseline really writes (the first N; 0 = no baseline)",
    )
    parser.add_argument(
        "--internal-message",
        action="store_true",
        help="campaign write_back.internal_comment = true: an internal message on every request as well",
    )
    parser.add_argument("--seed", type=int, default=20300304)
    parser.add_argument("--workdir", help="where the database and key go (default: a temporary folder)")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument(
        "--keep-nagle",
        action="store_true",
        help="serve the emulator exactly as serve_in_background does today: its listening socket has no "
        "TCP_NODELAY, so every request on a kept-alive connection waits ~40 ms for a delayed ACK",
    )
    parser.add_argument("--phase", choices=["hub", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--state", help=argparse.SUPPRESS)
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.phase:
        child(args.phase, args.state)
        return
    if args.persons < 1 or args.responses < args.persons:
        parser.error("need at least one person and at least as many responses as persons")

    configure("warning")
    with tempfile.TemporaryDirectory(prefix="cxhub-bench-") as temporary:
        workdir = Path(args.workdir or temporary)
        workdir.mkdir(parents=True, exist_ok=True)
        emulator = SuperOfficeEmulator()
        assert emulator.partner_private_key_pem is not None
        key_file = workdir / "partner.pem"
        key_file.write_text(emulator.partner_private_key_pem)
        database = workdir / "bench.db"
        database.unlink(missing_ok=True)
        print(f"seeding the emulator: {args.persons:,} persons, {args.responses:,} requests ...", flush=True)
        person_ids, ticket_ids = seed_emulator(emulator, args.persons, args.responses)
        env = {
            **os.environ,
            APP_TOKEN_ENV: "emulator-application-token",
            SYSTEM_USER_TOKEN_ENV: "CXHub-emulator-7f3a",
        }
        os.environ.update(
            {APP_TOKEN_ENV: env[APP_TOKEN_ENV], SYSTEM_USER_TOKEN_ENV: env[SYSTEM_USER_TOKEN_ENV]}
        )
        try:
            with serve_in_background(emulator.app) as server:
                if not args.keep_nagle:
                    # BackgroundServer binds a socket made without proto=IPPROTO_TCP, so asyncio does not set
                    # TCP_NODELAY on the connections it accepts, and uvicorn's response head and body (two
                    # writes) meet Nagle's algorithm and the client's delayed ACK: +40 ms per request on a
                    # kept-alive connection. Linux copies TCP_NODELAY from the listening socket to accepted
                    # ones, so setting it here gives the injected latency alone.
                    server._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                state = State(
                    base_url=f"{server.url}/{TENANT}",
                    key_file=str(key_file),
                    database=str(database),
                    responses=args.responses,
                    persons=args.persons,
                    seed=args.seed,
                    now=datetime.now(UTC).isoformat(),
                    max_in_flight=args.max_in_flight,
                    internal_message=args.internal_message,
                    baseline_sample=min(args.baseline_sample, args.responses),
                    person_ids=person_ids,
                    ticket_ids=ticket_ids,
                )
                state_file = workdir / "state.json"
                state_file.write_text(json.dumps(asdict(state)))
                print("storing the responses and queueing their write-backs in the hub ...", flush=True)
                queued = asyncio.run(queue_write_backs(state))
                print(f"  {queued:,} write-back items queued", flush=True)
                emulator.set_latency(args.latency)
                print("running the hub's path (hub.sync.run) ...", flush=True)
                hub = run_phase("hub", emulator, state_file, env)
                problems = verify_hub_writes(emulator, state)
                baseline = None
                if state.baseline_sample:
                    print(
                        f"running the naive baseline on {state.baseline_sample:,} responses ...", flush=True
                    )
                    baseline = run_phase("baseline", emulator, state_file, env)
        finally:
            emulator.close()
        summary = report(args, hub, baseline, problems)
        if args.json:
            Path(args.json).write_text(json.dumps(summary, indent=2, default=str))
    if problems:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
