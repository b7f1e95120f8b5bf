"""Dynamics 365 (Dataverse) write-back: the hub's real path against a naive one-record-per-request integration.

    .venv-boot/bin/uv run --all-packages python bench/dynamics_writeback.py            # 10,000 x 2,000, 50 ms
    .venv-boot/bin/uv run --all-packages python bench/dynamics_writeback.py --responses 1000 --contacts 200

One run, three processes:

* this process seeds the Dataverse emulator (contacts, one resolved incident per answer) and serves it over
  TLS on loopback (``serve``, a throwaway test CA) with its ``latency`` switch adding ``--latency`` to
  every Web API request (not to Entra ID's token endpoint); it builds the hub's SQLite database (responses
  stored, write-backs queued by ``Engine._queue_write_backs``, the function ``record_answer`` queues with)
  and counts every request, every ``$batch`` operation and every 429 with the emulator's own call log;
* a child runs the hub's path: ``Hub.open`` with a Dynamics connector pointed at the emulator (certificate
  auth through msal, ``ca_bundle`` = the test CA), then ``hub.sync.run(connector)``, the real sync and the
  real connector, at full size, run again after a hold until nothing is queued (as the worker's prompt
  sync does);
* a child runs the naive baseline with the connector's own client and token: per answer a PATCH of the
  contact (the summary recomputed), a PATCH upsert of the activity and a PATCH of the incident, one record
  per request, sequentially. It runs on the first ``--baseline-sample`` answers and its request count and
  time are extrapolated linearly (its per-answer work does not depend on how many answers there are).

``--throttle`` (default 1) makes the emulator answer that many of the hub's ``$batch`` requests, half-way
through, with 429 and ``Retry-After: --retry-after``; the report counts every 429 and checks in the call
log that the hub's next request came no sooner than Retry-After after the 429 was answered.

The lower bound is what the ``$batch`` limit (1000 operations a request) allows for the default campaign
(internal comment off): one coalesced PATCH per contact, one activity upsert per answer and the case
feedback per answer as the connector builds it (one incident PATCH; with a note, a changeset of two), in
ceil(operations / 1000) requests. The token calls (msal's discovery and token request) are counted apart,
in neither column.

What the write-back benchmarks do alike (the answers, the hub's queue, the children, the report's common
lines) is in ``common.py`` next to this file. Results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import common
from hub_dynamics.client import DataverseClient
from hub_dynamics.config import DynamicsSettings
from hub_dynamics.emulator import BATCH_LIMIT, Call, DataverseEmulator, certificate_pair, serve
from hub_dynamics.mapping import hub_id
from hub_dynamics.writeback import WriteBack

from hub import CaseFeedback, PersonSummary, PluginContext, TimelineEntry, WriteBackItem
from hub.config import HubConfig
from hub.http import make_client
from hub.logging import configure
from hub.models import nps_category

CONNECTOR = "d365"
TENANT = "contoso.onmicrosoft.com"
CLIENT_ID = "11111111-2222-3333-4444-555555555555"


# --- the state the children get: where the emulator is, the ids in it ----------------------------------


@dataclass
class State(common.BenchState):
    """What the children need to know besides the answers: where the emulator is, and the ids in it."""

    url: str
    ca_file: str
    certificate_file: str
    contact_ids: list[str]
    incident_ids: list[str]


def connector_settings(state: State) -> dict[str, Any]:
    """The connector's settings as an admin writes them in the config file (the certificate by reference)."""
    return {
        "plugin": "dynamics",
        "url": state.url,
        "tenant_id": TENANT,
        "authority_host": state.url,
        "auth": {
            "type": "certificate",
            "client_id": CLIENT_ID,
            "certificate": f"file:{state.certificate_file}",
        },
        "ca_bundle": state.ca_file,
        "poll_cases": False,
        "poll_opportunities": False,
    }


def hub_config(state: State) -> HubConfig:
    return common.make_hub_config(state, CONNECTOR, connector_settings(state))


def dynamics_settings(state: State) -> DynamicsSettings:
    """The connector's settings (the certificate read from its file), for the baseline's client."""
    raw = connector_settings(state)
    raw.pop("plugin")
    return DynamicsSettings.model_validate(raw)


# --- this process: the emulator ------------------------------------------------------------------------


def seed_emulator(
    emulator: DataverseEmulator, contacts: int, answers: list[common.Answer]
) -> tuple[list[str], list[str]]:
    """Contacts, and one incident per answer, resolved by an agent two hours before the answer."""
    owner = emulator.add("systemuser", fullname="Bench Owner", internalemailaddress="owner@bench.example")
    contact_ids = [
        emulator.add(
            "contact", firstname="Bench", lastname=f"Contact {j}", emailaddress1=f"contact{j}@bench.example"
        )
        for j in range(contacts)
    ]
    incident_ids = []
    for answer in answers:
        incident = emulator.add(
            "incident",
            title=f"Request {answer.index}",
            ticketnumber=f"CAS-{answer.index:06d}",
            customerid=contact_ids[answer.person],
            ownerid=owner,
        )
        emulator.update("incident", incident, statecode=1, statuscode=5)
        incident_ids.append(incident)
    return contact_ids, incident_ids


def crm_records(state: State) -> common.CrmRecords:
    """The seeded contacts and incidents as the hub refers to them (``common.queue_write_backs``)."""
    return common.CrmRecords(
        connector=CONNECTOR,
        person_noun="contact",
        person_ids=state.contact_ids,
        record_type="incident",
        event_prefix="incident",
        case_ids=state.incident_ids,
    )


# --- child: the hub's path -----------------------------------------------------------------------------


async def run_hub(state: State) -> dict[str, Any]:
    """``common.run_hub_sync`` with the token fetched before the clock, drained through any 429's hold."""

    async def log_in(connector: Any) -> None:
        await connector.client.tokens.token()  # msal's discovery and token call, counted apart

    return await common.run_hub_sync(
        hub_config(state),
        CONNECTOR,
        before_clock=log_in,
        counters=lambda connector: {"batch_size": connector.batch_size},
        until_drained=True,
    )


# --- child: the naive baseline -------------------------------------------------------------------------


def baseline_operations(
    writer: WriteBack, state: State, answer: common.Answer, history: list[common.Answer]
) -> list[Any]:
    """The answer's writes as the connector builds them, to be sent one record per request."""
    contact_id = state.contact_ids[answer.person]
    incident_id = state.incident_ids[answer.index]
    category = nps_category(answer.rating)
    entry = TimelineEntry(
        response_id=answer.response_id,
        campaign=common.CAMPAIGN,
        survey_kind="nps",
        rating=answer.rating,
        score=answer.rating * 10.0,
        category=category,
        comment=answer.comment,
        answered_at=answer.answered_at,
        channel="memory",
        case_id=incident_id,
        language="en",
    )
    feedback = CaseFeedback(
        response_id=answer.response_id,
        rating=answer.rating,
        score=answer.rating * 10.0,
        category=category,
        comment=answer.comment,
        processed_at=answer.answered_at,
    )
    timeline = WriteBackItem(
        id=answer.index, key=f"timeline:{answer.response_id}", record_id=contact_id, payload=entry
    )
    case = WriteBackItem(
        id=answer.index, key=f"case:{answer.response_id}", record_id=incident_id, payload=feedback
    )
    summary = PersonSummary(**common.naive_summary(history, state.moment))
    return [
        writer.summary(contact_id, summary),
        writer.timeline(timeline, entry)[1],
        *writer.feedback(case, feedback),
    ]


async def run_baseline(state: State) -> dict[str, Any]:
    settings = dynamics_settings(state)
    context = PluginContext(instance=CONNECTOR, public_url="http://127.0.0.1:9", http_client=make_client)
    client = DataverseClient(settings, context)  # the same token source, trust and HTTP stack
    writer = WriteBack(client, settings)
    sample = state.answers()[: state.baseline_sample]
    history: dict[int, list[common.Answer]] = defaultdict(list)
    requests = 0
    try:
        await client.tokens.token()
        rss_ready = common.max_rss_mib()
        started = time.perf_counter()
        for answer in sample:
            history[answer.person].append(answer)
            for operation in baseline_operations(writer, state, answer, history[answer.person]):
                await client.request(
                    operation.method, operation.url, json=operation.body, headers=operation.headers
                )
                requests += 1
        elapsed = time.perf_counter() - started
    finally:
        await client.aclose()
    return {
        "elapsed": elapsed,
        "responses": len(sample),
        "client_calls": requests,
        "rss_ready_mib": rss_ready,
        "rss_peak_mib": common.max_rss_mib(),
    }


def child(phase: str, state_file: str) -> None:
    common.child_phase(
        phase,
        state_file,
        State,
        {
            "hub": lambda state: asyncio.run(run_hub(state)),
            "baseline": lambda state: asyncio.run(run_baseline(state)),
        },
    )


# --- this process: running the phases and reporting ----------------------------------------------------


def call_kind(method: str, path: str) -> str:
    if path.startswith(f"/{TENANT}/"):
        return f"{method} login ({path.split('/', 2)[2]})"
    table, _, key = path.lstrip("/").partition("(")
    return f"{method} /{table}" + ("({id})" if key else "")


@dataclass
class DynamicsPhase(common.Phase):
    """A phase with what only Dataverse has: the operations inside ``$batch`` requests, and the 429s."""

    operations: Counter[str]  # batch parts by kind, refused ones included
    throttled: list[Call]  # the requests answered 429
    unhonoured: list[str]  # a 429 whose Retry-After the next request did not wait out
    waited: float  # seconds from the 429s' answers to the next requests
    batch_sizes: list[int]  # operations of each $batch request that was answered 200, in order


def batch_sizes(calls: Sequence[Call]) -> list[int]:
    """The operations of each executed ``$batch``: its parts are logged just before the request itself."""
    sizes: list[int] = []
    parts = 0
    for call in calls:
        if call.kind == "batch-part":
            parts += 1
        elif call.kind == "api" and call.path == "/$batch":
            if call.status < 300:
                sizes.append(parts)
            parts = 0
    return sizes


def waits_after_429s(requests: Sequence[Call]) -> tuple[list[str], float]:
    """Each 429 after which the next Web API request came in before its Retry-After had passed, and the
    seconds waited after all 429s.

    The calls are in the order they were answered; the clients here send one request at a time.
    """
    api = [call for call in requests if call.kind == "api"]
    late = []
    total = 0.0
    for refused, following in itertools.pairwise(api):
        if refused.status != 429 or refused.retry_after is None:
            continue
        waited = following.received - refused.answered
        total += waited
        if waited < refused.retry_after:
            late.append(
                f"{following.method} {following.path} {waited:.2f} s after a 429 asking for {refused.retry_after:.0f} s"
            )
    return late, total


def run_phase(
    name: str, emulator: DataverseEmulator, state_file: Path, throttle: tuple[int, float, int]
) -> DynamicsPhase:
    emulator.calls.clear()
    count, retry_after, after = throttle
    emulator.throttle(count if name == "hub" else 0, 429, retry_after, writes_only=True, after=after)
    result = common.spawn_phase(__file__, name, state_file)
    calls = list(emulator.calls)
    requests = [call for call in calls if call.kind != "batch-part"]
    parts = [call for call in calls if call.kind == "batch-part"]
    failed = [call for call in calls if call.status >= 400 and call.status != 429]
    late, waited = waits_after_429s(requests)
    if failed:
        print(
            f"  {len(failed)} calls of the {name} phase failed, e.g. {failed[0].method} {failed[0].path} {failed[0].status}"
        )
    return DynamicsPhase.from_calls(
        name,
        result,
        requests,
        call_kind,
        operations=Counter(call_kind(call.method, call.path) for call in parts),
        throttled=[call for call in requests if call.status == 429],
        unhonoured=late,
        waited=waited,
        batch_sizes=batch_sizes(calls),
    )


def verify_hub_writes(emulator: DataverseEmulator, state: State, phase_calls: Sequence[Call]) -> list[str]:
    """What the hub's path should have left in Dataverse; an empty list when it is all there, once.

    "Once": every answer's activity (its id the uuid5 of the hub's key) was upserted by exactly one
    successful operation, every incident and every contact patched by exactly one.
    """
    problems = []
    answers = state.answers()
    writes = Counter(call.path for call in phase_calls if call.kind == "batch-part" and call.status < 300)
    activities = emulator.tables["cxhub_surveyresponse"].rows
    expected = {hub_id(f"timeline:{a.response_id}"): a for a in answers}
    missing = sum(1 for row_id in expected if row_id not in activities)
    twice = sum(1 for row_id in expected if writes[f"/cxhub_surveyresponses({row_id})"] != 1)
    wrong = sum(
        1
        for row_id, a in expected.items()
        if row_id in activities
        and (
            activities[row_id].get("cxhub_responseid") != a.response_id
            or activities[row_id].get("cxhub_score") != a.rating
        )
    )
    for count, what in (
        (missing, "activities missing"),
        (twice, "activities not written exactly once"),
        (wrong, "activities with another answer's values"),
        (len(activities) - len(expected), "activities the hub should not have written"),
    ):
        if count:
            problems.append(f"{count} {what}")
    incidents = emulator.tables["incident"].rows
    wrong_cases = sum(
        1
        for a in answers
        if incidents[state.incident_ids[a.index]].get("cxhub_feedbackscore") != a.rating
        or writes[f"/incidents({state.incident_ids[a.index]})"] != 1
    )
    if wrong_cases:
        problems.append(f"{wrong_cases} incidents without their answer, or not written exactly once")
    latest: dict[int, common.Answer] = {a.person: a for a in answers}  # answers come in time order
    per_contact = Counter(a.person for a in answers)
    contacts = emulator.tables["contact"].rows
    wrong_contacts = sum(
        1
        for j, contact_id in enumerate(state.contact_ids)
        if contacts[contact_id].get("cxhub_responsecount") != per_contact[j]
        or contacts[contact_id].get("cxhub_lastscore") != latest[j].rating
        or writes[f"/contacts({contact_id})"] != 1
    )
    if wrong_contacts:
        problems.append(
            f"{wrong_contacts} contacts without the right count and latest score, or not written once"
        )
    return problems


@dataclass(frozen=True)
class LowerBound:
    """The least the hub must write, in operations, and the fewest ``$batch`` requests that holds them."""

    contact_operations: int
    activity_operations: int
    feedback_operations: int

    @property
    def operations(self) -> int:
        return self.contact_operations + self.activity_operations + self.feedback_operations

    @property
    def requests(self) -> int:
        return math.ceil(self.operations / BATCH_LIMIT)

    @classmethod
    def of(cls, state: State, responses: int, contacts: int) -> LowerBound:
        """The case feedback's operations counted by the connector's own writer, with the campaign's
        setting of the internal comment (a note makes it a changeset of two)."""
        config = hub_config(state)
        writer = WriteBack(None, dynamics_settings(state))  # type: ignore[arg-type]  # builds, never sends
        feedback = CaseFeedback(
            response_id="bound",
            rating=5,
            score=50.0,
            category=None,
            comment=None,
            processed_at=datetime.now(UTC),
            internal_comment=config.campaigns[common.CAMPAIGN].write_back.internal_comment,
        )
        item = WriteBackItem(id=0, key="case:bound", record_id=state.incident_ids[0], payload=feedback)
        return cls(contacts, responses, responses * len(writer.feedback(item, feedback)))


def report(
    args: argparse.Namespace,
    bound: LowerBound,
    hub: DynamicsPhase,
    baseline: DynamicsPhase | None,
    problems: list[str],
) -> dict[str, Any]:
    n = args.responses
    h = hub.result
    shared = common.Report(n, hub, baseline, problems)
    operations = sum(hub.operations.values())
    refused = sum(1 for call in hub.throttled if call.path == "/$batch")
    times_bound = hub.api_calls / bound.requests
    summary: dict[str, Any] = {
        "responses": n,
        "contacts": args.contacts,
        "latency_seconds": args.latency,
        "machine": common.machine(),
        "lower_bound": {
            "operations": bound.operations,
            "contact_operations": bound.contact_operations,
            "activity_operations": bound.activity_operations,
            "feedback_operations": bound.feedback_operations,
            "batch_requests": bound.requests,
        },
        "hub": shared.hub_summary(
            (*common.SYNC_KEYS, "runs"),
            times_lower_bound=times_bound,
            batch_operations=operations,
            batch_operations_per_response=operations / n,
            throttled_429=len(hub.throttled),
            unhonoured_429=hub.unhonoured,
            seconds_waited_after_429=hub.waited,
            operations_by_kind=dict(hub.operations),
            operations_per_batch_request=hub.batch_sizes,
        ),
    }
    shared.add_baseline(summary)
    scale = shared.scale
    rows = common.comparison_rows(n, hub, scale, per_response_digits=4)
    rows[1:3] = [
        (label.replace("API calls", "HTTP requests"), hub_value, baseline_value)
        for label, hub_value, baseline_value in rows[1:3]
    ]
    rows[3:3] = [
        ("$batch operations per response", common.fmt(operations / n, 2), "(no $batch)" if scale else ""),
        (f"lower bound of requests ({BATCH_LIMIT:,} operations a $batch)", common.fmt(bound.requests), ""),
        (
            "requests / lower bound",
            f"{times_bound:.2f}x",
            f"{scale.per_response * n / bound.requests:,.0f}x" if scale else "",
        ),
        (
            "429 answers (all waited out)" if not hub.unhonoured else "429 answers (NOT all waited out)",
            common.fmt(len(hub.throttled)),
            common.fmt(len(baseline.throttled)) if baseline else "",
        ),
    ]

    shared.print_head(
        f"Dynamics 365 write-back: {common.fmt(n)} responses of {common.fmt(args.contacts)} contacts, "
        f"{args.latency * 1000:.0f} ms per Web API request, emulator over TLS on loopback",
        rows,
    )
    print()
    print(
        f"lower bound: {bound.contact_operations:,} contact PATCHes + {bound.activity_operations:,} activity upserts + "
        f"{bound.feedback_operations:,} case feedback operations = {bound.operations:,} operations, in "
        f"ceil({bound.operations:,}/{BATCH_LIMIT:,}) = {bound.requests} $batch requests; {hub.logins} token calls apart"
    )
    print(
        "targets: "
        + shared.bound_verdict(bound.requests, "requests")
        + f" ({refused} of them refused with 429 and sent again)"
        + shared.baseline_verdict("requests")
        + f"; every 429 waited out: {'met' if not hub.unhonoured else 'NOT met: ' + '; '.join(hub.unhonoured[:3])}"
        + f" ({len(hub.throttled)} answered 429, Retry-After {args.retry_after:.0f} s)"
    )
    common.print_calls_by_kind(hub, baseline)
    print("$batch operations of the hub's path by kind:")
    for kind, count in hub.operations.most_common():
        print(f"  {count:>8,}  {kind}")
    sizes = hub.batch_sizes
    full = sum(1 for size in sizes if size == BATCH_LIMIT)
    print(
        f"hub sync: {h['written']:,} items written in {h['batches']} batches of up to {h['batch_size']} items "
        f"over {h['runs']} runs, {h['retried']} retried, {h['dead']} dead; $batch requests executed: {len(sizes)}, "
        f"{full} of them full ({BATCH_LIMIT:,} operations), the others {sorted(s for s in sizes if s != BATCH_LIMIT)}"
    )
    print(
        "time: "
        + shared.time_line(
            f"the rest is the hub's own database work between batches, and {hub.waited:.1f} s from the 429's answer "
            "to the next request: its Retry-After, or the retry's backoff when longer, then the prompt sync's settling"
        )
    )
    common.print_memory_and_verdict(hub, baseline, problems)
    return summary


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--responses", type=int, default=10_000)
    parser.add_argument("--contacts", type=int, default=2_000)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per Web API request (emulator)")
    parser.add_argument(
        "--throttle", type=int, default=1, help="the hub's $batch requests answered 429 half-way"
    )
    parser.add_argument(
        "--retry-after", type=float, default=2.0, help="the Retry-After of those 429s, seconds"
    )
    common.add_baseline_sample_argument(parser, default=200)
    parser.add_argument("--seed", type=int, default=20261123)
    parser.add_argument(
        "--workdir", help="where the database and certificate go (default: a temporary folder)"
    )
    parser.add_argument("--json", help="also write the results to this file")
    args = common.parse_arguments(parser, argv, child)
    if args is None:
        return
    common.check_sizes(parser, args.responses, args.contacts, "contact")

    configure("warning")
    certificate, public_certificate = certificate_pair(CLIENT_ID)
    emulator = DataverseEmulator(TENANT, window_requests=10_000_000, window_execution_ms=1e12)
    emulator.register_app(CLIENT_ID, certificate_pem=public_certificate)
    now = datetime.now(UTC)
    answers = common.make_answers(args.responses, args.contacts, args.seed, now)
    with tempfile.TemporaryDirectory(prefix="cxhub-bench-") as temporary:
        workdir = Path(args.workdir or temporary)
        workdir.mkdir(parents=True, exist_ok=True)
        certificate_file = workdir / "app-certificate.pem"
        certificate_file.write_text(certificate)
        database = workdir / "bench.db"
        database.unlink(missing_ok=True)
        print(
            f"seeding the emulator: {args.contacts:,} contacts, {args.responses:,} resolved incidents ...",
            flush=True,
        )
        contact_ids, incident_ids = seed_emulator(emulator, args.contacts, answers)
        with serve(emulator) as server:
            state = State(
                url=server.url,
                ca_file=server.ca_file,
                certificate_file=str(certificate_file),
                database=str(database),
                responses=args.responses,
                people=args.contacts,
                seed=args.seed,
                now=now.isoformat(),
                baseline_sample=min(args.baseline_sample, args.responses),
                contact_ids=contact_ids,
                incident_ids=incident_ids,
            )
            state_file = common.save_state(state, workdir)
            bound = LowerBound.of(state, args.responses, args.contacts)
            common.queue_write_backs(hub_config(state), state, crm_records(state))
            emulator.latency = args.latency
            throttle = (args.throttle, args.retry_after, bound.requests // 2)
            hub_calls: list[Call] = []

            def phase(name: str) -> DynamicsPhase:
                result = run_phase(name, emulator, state_file, throttle)
                if name == "hub":
                    hub_calls.extend(emulator.calls)
                return result

            hub, baseline, problems = common.run_hub_then_baseline(
                state.baseline_sample, phase, lambda: verify_hub_writes(emulator, state, hub_calls)
            )
        common.finish(report(args, bound, hub, baseline, problems), args.json, problems)


if __name__ == "__main__":
    main()
