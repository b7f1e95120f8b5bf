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
* a child runs live operation (``--live-sample``, default 300): answers of another seed arrive one at a
  time in a hub database of their own, and each is written (``hub.sync.run``) before the next arrives,
  as the prompt sync does when answers trickle in; nothing is coalesced across answers, so this is the
  cost per answer of a hub that keeps up with its answers, beside the coalesced cost of a backlog;
* a child runs the naive baseline with the same client and credentials, sequentially: per answer, one
  PATCH per person summary field, one POST of the activity, one PATCH per ticket feedback field. At
  ~0.6 s per answer the full baseline would take close to an hour, so it runs on the first
  ``--baseline-sample`` answers and its call count and time are extrapolated linearly (the per-answer
  work of the baseline does not depend on how many answers there are).

The emulator's listening socket gets TCP_NODELAY (``--keep-nagle`` leaves it as ``serve_in_background``
makes it): without it every request on a kept-alive connection waits ~40 ms for a delayed ACK, and the
calls would cost ~90 ms instead of the injected latency.

What both write-back benchmarks do alike (the answers, the hub's queue, the children, the report's
common lines) is in ``common.py`` next to this file.

Peak memory is the peak resident set size of each child, the process that does the write-back (the
emulator runs in this one): ``VmHWM`` from ``/proc/self/status`` on Linux, because a child's
``ru_maxrss`` starts at its parent's high-water mark. Results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import os
import socket
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import common
from hub_superoffice.client import SuperOfficeClient
from hub_superoffice.config import SuperOfficeSettings
from hub_superoffice.emulator import SuperOfficeEmulator, serve_in_background
from hub_superoffice.mapping import field_operations, render, truncate
from pydantic import SecretStr

from hub.config import HubConfig
from hub.http import make_client
from hub.logging import configure
from hub.models import nps_category

CONNECTOR = "so"
TENANT = "Cust12345"
APP_TOKEN_ENV = "SO_BENCH_APP_TOKEN"
SYSTEM_USER_TOKEN_ENV = "SO_BENCH_SYSTEM_USER_TOKEN"


# --- the state the children get: where the emulator is, the ids in it ----------------------------------


@dataclass
class State(common.BenchState):
    """What the children need to know besides the answers: where the emulator is, and the ids in it."""

    base_url: str
    key_file: str
    max_in_flight: int
    internal_message: bool
    live_sample: int
    person_ids: list[int]
    ticket_ids: list[int]


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
    return common.make_hub_config(
        state, CONNECTOR, connector_settings(state), write_back={"internal_comment": state.internal_message}
    )


# --- this process: the emulator ------------------------------------------------------------------------


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


def crm_records(state: State) -> common.CrmRecords:
    """The seeded persons and tickets as the hub refers to them (``common.queue_write_backs``)."""
    return common.CrmRecords(
        connector=CONNECTOR,
        person_noun="person",
        person_ids=[str(person_id) for person_id in state.person_ids],
        record_type="ticket",
        event_prefix="ticket",
        case_ids=[str(ticket_id) for ticket_id in state.ticket_ids],
    )


# --- child: the hub's path -----------------------------------------------------------------------------


def client_counters(connector: Any) -> dict[str, Any]:
    """The client's own call count and time, and the writer's batched timeline look-ups."""
    writer = connector._writer
    return {
        "client_calls": connector.client.calls,
        "client_call_seconds": connector.client.call_seconds,
        "timeline_lookups": writer.timeline_lookups.lookups,
        "timeline_keys_looked_up": writer.timeline_lookups.keys,
    }


async def run_hub(state: State) -> dict[str, Any]:
    return await common.run_hub_sync(hub_config(state), CONNECTOR, counters=client_counters)


# --- child: the naive baseline -------------------------------------------------------------------------


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
    history: dict[int, list[common.Answer]] = defaultdict(list)
    rss_ready = common.max_rss_mib()
    started = time.perf_counter()
    try:
        for answer in sample:
            person_id = state.person_ids[answer.person]
            ticket_id = state.ticket_ids[answer.index]
            history[answer.person].append(answer)
            summary = common.naive_summary(history[answer.person], state.moment)
            for name, field in person_fields.items():  # one request per summary field
                await client.patch_entity("Person", person_id, field_operations({field: summary[name]}))
            when = answer.answered_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            values = {
                "rating": answer.rating,
                "category": nps_category(answer.rating),
                "comment": truncate(answer.comment, settings.comment_max_length),
                "campaign": common.CAMPAIGN,
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
        "rss_peak_mib": common.max_rss_mib(),
    }


async def run_live(state: State) -> dict[str, Any]:
    return await common.run_live_sync(
        hub_config(state), CONNECTOR, state, crm_records(state), state.live_sample, counters=client_counters
    )


def child(phase: str, state_file: str) -> None:
    common.child_phase(
        phase,
        state_file,
        State,
        {
            "hub": lambda state: asyncio.run(run_hub(state)),
            "live": lambda state: asyncio.run(run_live(state)),
            "baseline": lambda state: asyncio.run(run_baseline(state, Path(state.key_file).read_text())),
        },
    )


# --- this process: running the phases and reporting ----------------------------------------------------


@dataclass
class SuperOfficePhase(common.Phase):
    """A phase with the most calls the emulator had in flight at once: the connector's concurrency."""

    max_in_flight_seen: int


def call_kind(method: str, path: str) -> str:
    if "/PartnerSystemUser/" in path:
        return "POST login (PartnerSystemUser/Authenticate)"
    resource_path = path.split("/api/v1/", 1)[-1]
    parts = resource_path.split("/")
    name = "/".join(part if not part.isdigit() else "{id}" for part in parts)
    return f"{method} {name}"


def run_phase(
    name: str, emulator: SuperOfficeEmulator, state_file: Path, env: dict[str, str]
) -> SuperOfficePhase:
    emulator.clear_calls()
    emulator.max_in_flight_seen = 0
    result = common.spawn_phase(__file__, name, state_file, env)
    return SuperOfficePhase.from_calls(
        name, result, emulator.calls, call_kind, max_in_flight_seen=emulator.max_in_flight_seen
    )


def activity_keys(emulator: SuperOfficeEmulator) -> Counter[str]:
    """How many activities hold each hub key."""
    return Counter(
        appointment["ExtraFields"].get("x_cxhub_response_id", "")
        for appointment in list(emulator.store.data.appointments.values())
    )


def verify_live_writes(emulator: SuperOfficeEmulator, state: State) -> list[str]:
    """Each answer of live operation has its activity in SuperOffice, once."""
    keys = activity_keys(emulator)
    wrong = sum(1 for a in state.answers()[: state.live_sample] if keys[f"timeline:{a.response_id}"] != 1)
    return [f"{wrong} live answers without exactly one activity"] if wrong else []


def verify_hub_writes(emulator: SuperOfficeEmulator, state: State) -> list[str]:
    """What the hub's path should have left in SuperOffice; an empty list when it is all there, once."""
    problems = []
    answers = state.answers()
    keys = activity_keys(emulator)
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


def report(
    args: argparse.Namespace,
    hub: SuperOfficePhase,
    baseline: common.Phase | None,
    live: common.Phase | None,
    problems: list[str],
) -> dict[str, Any]:
    n = args.responses
    h = hub.result
    shared = common.Report(n, hub, baseline, problems)
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
        "machine": common.machine(),
        "hub": shared.hub_summary(
            mean_call_round_trip_seconds=round_trip,
            mean_calls_in_flight_inside_write_back=in_flight_inside,
            mean_calls_in_flight_overall=in_flight_overall,
            max_calls_in_flight_seen=hub.max_in_flight_seen,
            timeline_lookups=h["timeline_lookups"],
            timeline_keys_looked_up=h["timeline_keys_looked_up"],
        ),
    }
    if baseline is not None:
        b = baseline.result
        shared.add_baseline(summary, round_trip_seconds=b["client_call_seconds"] / max(b["client_calls"], 1))
    rows = common.comparison_rows(n, hub, shared.scale, per_response_digits=2)
    live_per_response = live.api_calls / live.result["responses"] if live is not None else None
    if live is not None and live_per_response is not None:
        summary["live"] = {
            "responses": live.result["responses"],
            "api_calls": live.api_calls,
            "api_calls_per_response": live_per_response,
            "seconds": live.result["elapsed"],
            "calls_by_kind": dict(live.calls),
            "sync": {k: live.result[k] for k in ("written", "retried", "dead", "batches", "error")},
        }
        rows[3:3] = [
            (
                f"API calls per response, live (first {live.result['responses']:,} one at a time, each synced)",
                common.fmt(live_per_response, 2),
                "",
            )
        ]

    shared.print_head(
        f"SuperOffice write-back: {common.fmt(n)} responses of {common.fmt(args.persons)} persons, "
        f"{args.latency * 1000:.0f} ms per API call, max_in_flight {args.max_in_flight}, "
        f"internal ticket message {'on' if args.internal_message else 'off (the default)'}",
        rows,
    )
    ratios = shared.ratios()
    if ratios is not None:
        print()
        print(
            f"ratios: {ratios['fewer_calls']:.1f}x fewer API calls, {ratios['faster']:.1f}x more responses "
            "per second (target: 5x and 5x)"
        )
    common.print_calls_by_kind(hub, baseline)
    if live is not None and live_per_response is not None:
        print(
            f"live operation: {live.result['responses']:,} answers arriving one at a time, each written "
            f"(hub.sync.run) before the next: {live.api_calls:,} API calls, {live_per_response:.2f} per answer "
            f"against {hub_per_response:.2f} coalesced; by kind:"
        )
        for kind, count in live.calls.most_common():
            print(f"  {count:>8,}  {kind}")
        print()
    print(
        f"hub sync: {h['written']:,} items written in {h['batches']} batches, {h['retried']} retried, "
        f"{h['dead']} dead; {h['timeline_keys_looked_up']:,} timeline keys looked up in "
        f"{h['timeline_lookups']} batched look-ups"
    )
    print(
        "concurrency: "
        + shared.time_line()
        + f"; mean calls in flight {in_flight_inside:.1f} inside write_back, {in_flight_overall:.1f} over the "
        f"whole run; most seen at once by the emulator {hub.max_in_flight_seen}"
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
    common.print_memory_and_verdict(hub, baseline, problems)
    return summary


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--responses", type=int, default=5000)
    parser.add_argument("--persons", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per API call (emulator)")
    parser.add_argument("--max-in-flight", type=int, default=8, help="the connector's max_in_flight")
    common.add_baseline_sample_argument(parser, default=300)
    parser.add_argument(
        "--live-sample",
        type=int,
        default=300,
        help="answers written in live operation, one at a time, each synced before the next (0 = none)",
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
    args = common.parse_arguments(parser, argv, child)
    if args is None:
        return
    common.check_sizes(parser, args.responses, args.persons, "person")

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
                    people=args.persons,
                    seed=args.seed,
                    now=datetime.now(UTC).isoformat(),
                    max_in_flight=args.max_in_flight,
                    internal_message=args.internal_message,
                    baseline_sample=min(args.baseline_sample, args.responses),
                    live_sample=min(args.live_sample, args.responses),
                    person_ids=person_ids,
                    ticket_ids=ticket_ids,
                )
                state_file = common.save_state(state, workdir)
                common.queue_write_backs(hub_config(state), state, crm_records(state))
                emulator.set_latency(args.latency)
                hub, baseline, problems = common.run_hub_then_baseline(
                    state.baseline_sample,
                    lambda name: run_phase(name, emulator, state_file, env),
                    lambda: verify_hub_writes(emulator, state),
                )
                live = None
                if state.live_sample:
                    # answers of their own (another seed), in a hub database of their own
                    live_state = replace(state, database=str(workdir / "live.db"), seed=args.seed + 1)
                    live_file = common.save_state(live_state, workdir, "live-state.json")
                    print(
                        f"running live operation on {state.live_sample:,} answers, one at a time ...",
                        flush=True,
                    )
                    live = run_phase("live", emulator, live_file, env)
                    problems += verify_live_writes(emulator, live_state)
        finally:
            emulator.close()
        common.finish(report(args, hub, baseline, live, problems), args.json, problems)


if __name__ == "__main__":
    main()
