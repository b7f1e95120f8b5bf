"""Salesforce write-back: the hub's real path against a naive one-record-per-call integration.

    .venv-boot/bin/uv run --all-packages python bench/salesforce_writeback.py            # 10,000 x 2,000, 50 ms
    .venv-boot/bin/uv run --all-packages python bench/salesforce_writeback.py --responses 1000 --contacts 200

One run, three processes:

* this process seeds the Salesforce emulator (contacts, one closed Case per answer) and serves it over
  TLS on loopback (``serve_tls``, a throwaway test CA) with ``latency_seconds`` per API call (token
  endpoint included); it builds the hub's SQLite database (responses stored, write-backs queued by
  ``Engine._queue_write_backs``, the function ``record_answer`` queues with) and counts every call with
  the emulator's own call log;
* a child runs the hub's path: ``Hub.open`` with a Salesforce connector pointed at the emulator (JWT
  bearer login, ``ca_bundle`` = the test CA), then ``hub.sync.run(connector)``, the real sync and the
  real connector, at full size;
* a child runs the naive baseline with simple-salesforce and the same session, sequentially: per
  answer ``Contact.update`` (the summary fields), ``Survey_Response__c.create`` and ``Case.update``
  (the feedback fields), one record per call. It runs on the first ``--baseline-sample`` answers and
  its call count and time are extrapolated linearly (its per-answer work does not depend on how many
  answers there are).

The lower bound is what the sObject Collections limit (200 records a call) allows for the default
campaign (internal comment off): ceil(contacts/200) Contact updates + ceil(responses/200)
``Survey_Response__c`` upserts + ceil(responses/200) Case updates. One login per process is counted
apart, in neither column.

Peak memory is the peak resident set size of each child, the process that does the write-back (the
emulator runs in this one): ``VmHWM`` from ``/proc/self/status`` on Linux. Results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import resource
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

from hub_salesforce.auth import login
from hub_salesforce.client import COLLECTION_LIMIT, build_session
from hub_salesforce.config import SalesforceSettings
from hub_salesforce.emulator import SalesforceEmulator, generate_key_pair, serve_tls
from pydantic import SecretStr
from simple_salesforce import Salesforce
from sqlalchemy import func, select

from hub.app import Hub
from hub.config import HubConfig, parse_config
from hub.logging import configure
from hub.models import CaseEvent, nps_category
from hub.store.tables import Event, Identity, Invitation, Person, Response, WriteBack
from hub.testing.memory import memory_channel_plugin

CONNECTOR = "sf"
CAMPAIGN = "bench"
CONSUMER_KEY = "3MVG9-cxhub-bench"
USERNAME = "integration@cxhub-bench.example"
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
    contact: int  # index into the emulator's contacts
    rating: int
    comment: str | None
    answered_at: datetime


def make_answers(count: int, contacts: int, seed: int, now: datetime) -> list[Answer]:
    """``count`` NPS answers spread over the last 60 days; answer i comes from contact ``i % contacts``."""
    rng = random.Random(seed)
    start = now - timedelta(days=60)
    step = timedelta(days=60) / max(count, 1)
    answers = []
    for i in range(count):
        rating = rng.choices(range(11), weights=(2, 1, 1, 1, 2, 3, 4, 6, 9, 12, 10))[0]
        comment = rng.choice(COMMENTS) if rng.random() < 0.4 else None
        response_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        answers.append(Answer(i, response_id, i % contacts, rating, comment, start + step * i))
    return answers


@dataclass
class State:
    """What the children need to know: where the emulator and the database are, and the ids in it."""

    login_url: str
    ca_file: str
    key_file: str
    organization_id: str
    database: str
    responses: int
    contacts: int
    seed: int
    now: str
    baseline_sample: int
    contact_ids: list[str]
    case_ids: list[str]

    @property
    def moment(self) -> datetime:
        return datetime.fromisoformat(self.now)

    def answers(self) -> list[Answer]:
        return make_answers(self.responses, self.contacts, self.seed, self.moment)


def connector_settings(state: State) -> dict[str, Any]:
    """The connector's settings as an admin writes them in the config file (the key by reference)."""
    return {
        "plugin": "salesforce",
        "login_url": state.login_url,
        "auth": {
            "type": "jwt_bearer",
            "consumer_key": CONSUMER_KEY,
            "username": USERNAME,
            "private_key": f"file:{state.key_file}",
        },
        "ca_bundle": state.ca_file,
        "organization_id": state.organization_id,
        "poll_cases": False,
        "poll_opportunities": False,
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
            }
        },
    }
    return parse_config(data, Path(state.database).with_suffix(".toml"))


def max_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB (``VmHWM`` on Linux, see the SuperOffice bench)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


# --- this process: the emulator and the hub's queue --------------------------------------------------


def seed_emulator(
    emulator: SalesforceEmulator, contacts: int, answers: list[Answer]
) -> tuple[list[str], list[str]]:
    owner = emulator.add_user("Bench Owner", "owner@bench.example")
    contact_ids = [
        emulator.add_contact("Bench", f"Contact {j}", email=f"contact{j}@bench.example")
        for j in range(contacts)
    ]
    case_ids = []
    for answer in answers:
        case_id = emulator.add_case(f"Request {answer.index}", contact_ids[answer.contact], owner)
        closed = answer.answered_at - timedelta(hours=2)
        emulator.close_case(case_id, closed.strftime("%Y-%m-%dT%H:%M:%S.000+0000"))
        case_ids.append(case_id)
    return contact_ids, case_ids


async def queue_write_backs(state: State) -> int:
    """Store the answers as the engine would have, and queue their write-backs with the engine's own code."""
    hub = await Hub.open(hub_config(state), plugin_objects=[memory_channel_plugin()])
    try:
        campaign = hub.config.campaigns[CAMPAIGN]
        survey = hub.config.surveys[campaign.survey]
        answers = state.answers()
        async with hub.store.session() as s:
            people = [
                Person(email=f"contact{j}@bench.example", name=f"Bench Contact {j}", language="en")
                for j in range(state.contacts)
            ]
            s.add_all(people)
            await s.flush()
            s.add_all(
                Identity(person_id=person.id, connector=CONNECTOR, crm_id=crm_id)
                for person, crm_id in zip(people, state.contact_ids, strict=True)
            )
            events = []
            for answer in answers:
                case_id = state.case_ids[answer.index]
                closed = answer.answered_at - timedelta(hours=2)
                case = CaseEvent(
                    event_id=f"case:{case_id}:closed:{closed:%Y%m%dT%H%M%SZ}",
                    event_type="case.closed",
                    occurred_at=closed,
                    record_type="Case",
                    record_id=case_id,
                    person_id=state.contact_ids[answer.contact],
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
                    person_id=people[answer.contact].id,
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
                    person_id=people[answer.contact].id,
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
        batch_kinds: list[dict[str, int]] = []
        write_back = connector.write_back

        async def timed_write_back(batch: Any) -> Any:  # measurement only: the same call, timed
            nonlocal inside
            batch_kinds.append(dict(Counter(type(item.payload).__name__ for item in batch)))
            started = time.perf_counter()
            try:
                return await write_back(batch)
            finally:
                inside += time.perf_counter() - started

        connector.write_back = timed_write_back
        await connector.client.connect()  # the login, before the clock starts (counted apart)
        rss_ready = max_rss_mib()
        started = time.perf_counter()
        stats = await hub.sync.run(CONNECTOR)
        elapsed = time.perf_counter() - started
        async with hub.store.session() as s:
            states = dict(
                (await s.execute(select(WriteBack.state, func.count()).group_by(WriteBack.state))).all()
            )
        return {
            "elapsed": elapsed,
            "inside_write_back": inside,
            "written": stats.written,
            "retried": stats.retried,
            "dead": stats.dead,
            "batches": stats.batches,
            "error": stats.error,
            "states": {str(k): int(v) for k, v in states.items()},
            "batch_kinds": batch_kinds,
            "rss_ready_mib": rss_ready,
            "rss_peak_mib": max_rss_mib(),
        }
    finally:
        await hub.close()


# --- child: the naive baseline -------------------------------------------------------------------------


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def naive_summary(history: list[Answer], now: datetime) -> dict[str, Any]:
    """The contact summary after the latest answer, as a naive integration would compute it."""
    latest = history[-1]
    ratings = [a.rating for a in history]
    recent = [a.rating for a in history if a.answered_at >= now - timedelta(days=30)]
    comments = [a.comment for a in history if a.comment]
    return {
        "latest_rating": latest.rating,
        "latest_score": latest.rating * 10.0,
        "latest_category": nps_category(latest.rating).value,
        "latest_date": iso(latest.answered_at),
        "latest_comment": comments[-1] if comments else None,
        "average_rating": round(sum(ratings) / len(ratings), 2),
        "average_rating_30_days": round(sum(recent) / len(recent), 2) if recent else None,
        "average_score": round(10.0 * sum(ratings) / len(ratings), 2),
        "count": len(history),
    }


def run_baseline(state: State) -> dict[str, Any]:
    raw = connector_settings(state)
    raw.pop("plugin")
    raw["auth"]["private_key"] = SecretStr(Path(state.key_file).read_text())
    settings = SalesforceSettings.model_validate(raw)
    session = build_session(settings)  # same trust (the test CA) and the same HTTP stack
    token = login(settings, session)
    sf = Salesforce(
        instance_url=token.instance_url,
        session_id=token.access_token,
        session=session,
        version=settings.api_version,
    )
    contact_fields = settings.contact.mapped()
    target = settings.response_object
    case = settings.case.mapped()
    sample = state.answers()[: state.baseline_sample]
    history: dict[int, list[Answer]] = defaultdict(list)
    calls = 0
    rss_ready = max_rss_mib()
    started = time.perf_counter()
    for answer in sample:
        contact_id = state.contact_ids[answer.contact]
        case_id = state.case_ids[answer.index]
        history[answer.contact].append(answer)
        summary = naive_summary(history[answer.contact], state.moment)
        sf.Contact.update(contact_id, {field: summary[name] for name, field in contact_fields.items()})
        category = nps_category(answer.rating).value
        getattr(sf, target.object).create(
            {
                target.external_id_field: answer.response_id,
                target.contact_field: contact_id,
                target.case_field: case_id,
                target.rating_field: answer.rating,
                target.score_field: answer.rating * 10.0,
                target.category_field: category,
                target.comment_field: answer.comment,
                target.campaign_field: CAMPAIGN,
                target.survey_kind_field: "nps",
                target.channel_field: "memory",
                target.answered_at_field: iso(answer.answered_at),
            }
        )
        feedback = {
            "rating": answer.rating,
            "category": category,
            "comment": answer.comment,
            "processed_at": iso(answer.answered_at),
            "response_id": answer.response_id,
        }
        sf.Case.update(case_id, {field: feedback[name] for name, field in case.items()})
        calls += 3
    elapsed = time.perf_counter() - started
    session.close()
    return {
        "elapsed": elapsed,
        "responses": len(sample),
        "client_calls": calls,
        "rss_ready_mib": rss_ready,
        "rss_peak_mib": max_rss_mib(),
    }


def child(phase: str, state_file: str) -> None:
    configure("warning")
    state = State(**json.loads(Path(state_file).read_text()))
    result = asyncio.run(run_hub(state)) if phase == "hub" else run_baseline(state)
    print("RESULT " + json.dumps(result), flush=True)


# --- this process: running the phases and reporting -------------------------------------------------


@dataclass
class Phase:
    name: str
    result: dict[str, Any]
    calls: Counter[str]
    api_calls: int
    logins: int


def call_kind(method: str, path: str) -> str:
    if path.startswith("/services/oauth2/"):
        return "POST login (oauth2/token)"
    parts = path.strip("/").split("/")
    if parts[0] == "sobjects" and len(parts) == 3:
        parts[2] = "{id}"
    return f"{method} /{'/'.join(parts)}"


def run_phase(name: str, emulator: SalesforceEmulator, state_file: Path) -> Phase:
    emulator.calls.clear()
    completed = subprocess.run(
        [sys.executable, __file__, "--phase", name, "--state", str(state_file)],
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
    failed = [call for call in calls if call.status >= 400]
    if failed:
        print(
            f"  {len(failed)} calls of the {name} phase failed, e.g. {failed[0].method} {failed[0].path} {failed[0].status}"
        )
    return Phase(name, json.loads(lines[-1].removeprefix("RESULT ")), kinds, len(calls) - logins, logins)


def verify_hub_writes(emulator: SalesforceEmulator, state: State) -> list[str]:
    """What the hub's path should have left in Salesforce; an empty list when it is all there, once."""
    problems = []
    answers = state.answers()
    keys = Counter(r.get("Response_Id__c") for r in emulator.records("Survey_Response__c"))
    missing = sum(1 for a in answers if keys[a.response_id] == 0)
    doubled = sum(1 for a in answers if keys[a.response_id] > 1)
    if missing:
        problems.append(f"{missing} Survey_Response__c records missing")
    if doubled:
        problems.append(f"{doubled} Survey_Response__c records written more than once")
    cases = emulator.org.records["Case"]
    wrong_cases = sum(
        1
        for a in answers
        if cases[state.case_ids[a.index]].get("CXHub_Response_Id__c")
        != f"{a.response_id}{'+comment' if a.comment else ''}"  # the marker of the answer noted
        or cases[state.case_ids[a.index]].get("CXHub_Rating__c") != a.rating
    )
    if wrong_cases:
        problems.append(f"{wrong_cases} cases without their answer")
    per_contact = Counter(a.contact for a in answers)
    contacts = emulator.org.records["Contact"]
    wrong_contacts = sum(
        1
        for j, contact_id in enumerate(state.contact_ids)
        if contacts[contact_id].get("CXHub_Response_Count__c") != per_contact[j]
    )
    if wrong_contacts:
        problems.append(f"{wrong_contacts} contacts without the right answer count")
    return problems


def fmt(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def lower_bound(responses: int, contacts: int) -> int:
    return math.ceil(contacts / COLLECTION_LIMIT) + 2 * math.ceil(responses / COLLECTION_LIMIT)


def report(
    args: argparse.Namespace, hub: Phase, baseline: Phase | None, problems: list[str]
) -> dict[str, Any]:
    n = args.responses
    h = hub.result
    hub_rate = n / h["elapsed"]
    bound = lower_bound(n, args.contacts)
    batches = h["batch_kinds"]
    kinds_per_batch = Counter(len(kinds) for kinds in batches)
    summary: dict[str, Any] = {
        "responses": n,
        "contacts": args.contacts,
        "latency_seconds": args.latency,
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "lower_bound_calls": bound,
        "hub": {
            "api_calls": hub.api_calls,
            "logins": hub.logins,
            "api_calls_per_response": hub.api_calls / n,
            "times_lower_bound": hub.api_calls / bound,
            "seconds": h["elapsed"],
            "seconds_inside_write_back": h["inside_write_back"],
            "seconds_per_call_inside_write_back": h["inside_write_back"] / max(hub.api_calls, 1),
            "responses_per_second": hub_rate,
            "rss_peak_mib": h["rss_peak_mib"],
            "rss_before_write_back_mib": h["rss_ready_mib"],
            "calls_by_kind": dict(hub.calls),
            "sync": {k: h[k] for k in ("written", "retried", "dead", "batches", "error", "states")},
            "batches_by_number_of_kinds": dict(kinds_per_batch),
            "verified": not problems,
            "problems": problems,
        },
    }
    rows = [
        ("responses written", fmt(n), ""),
        ("API calls", fmt(hub.api_calls), ""),
        ("API calls per response", fmt(hub.api_calls / n, 3), ""),
        ("lower bound of calls (200 records a call)", fmt(bound), ""),
        ("calls / lower bound", f"{hub.api_calls / bound:.2f}x", ""),
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
            "api_calls_per_response": per_response,
            "responses_per_second": rate,
            "extrapolated_api_calls": per_response * n,
            "extrapolated_seconds": n / rate,
            "rss_peak_mib": b["rss_peak_mib"],
            "rss_before_write_back_mib": b["rss_ready_mib"],
            "calls_by_kind": dict(baseline.calls),
        }
        summary["ratios"] = {
            "fewer_calls": per_response * n / hub.api_calls,
            "faster": hub_rate / rate,
        }
        rows = [
            ("responses written", fmt(n), f"{fmt(sample)} measured, {fmt(n)} extrapolated"),
            ("API calls", fmt(hub.api_calls), f"{fmt(per_response * n)} (extrapolated)"),
            ("API calls per response", fmt(hub.api_calls / n, 3), fmt(per_response, 2)),
            ("lower bound of calls (200 records a call)", fmt(bound), ""),
            ("calls / lower bound", f"{hub.api_calls / bound:.2f}x", f"{per_response * n / bound:.0f}x"),
            ("wall time, s", fmt(h["elapsed"], 1), f"{fmt(n / rate, 0)} (extrapolated)"),
            ("responses per second", fmt(hub_rate, 1), fmt(rate, 2)),
            ("peak memory (peak RSS), MiB", fmt(h["rss_peak_mib"], 0), fmt(b["rss_peak_mib"], 0)),
        ]

    print()
    print(
        f"Salesforce write-back: {fmt(n)} responses of {fmt(args.contacts)} contacts, "
        f"{args.latency * 1000:.0f} ms per API call, emulator over TLS on loopback"
    )
    print(f"machine: {summary['machine']}")
    print()
    title = (
        f"naive baseline (first {baseline.result['responses']} measured, rest extrapolated)"
        if baseline
        else ""
    )
    print(f"| | hub (real path, full size) | {title} |")
    print("|---|---:|---:|")
    for label, hub_value, baseline_value in rows:
        print(f"| {label} | {hub_value} | {baseline_value} |")
    print()
    met_bound = hub.api_calls <= 1.1 * bound
    print(
        f"targets: calls within 1.1x of the lower bound ({bound:,}): "
        f"{'met' if met_bound else 'NOT met'} ({hub.api_calls / bound:.2f}x)"
        + (
            f"; at least 20x fewer calls than the baseline: "
            f"{'met' if summary['ratios']['fewer_calls'] >= 20 else 'NOT met'} "
            f"({summary['ratios']['fewer_calls']:.1f}x); {summary['ratios']['faster']:.1f}x more responses per second"
            if baseline
            else ""
        )
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
        f"hub sync: {h['written']:,} items written in {h['batches']} batches of up to {COLLECTION_LIMIT}, "
        f"{h['retried']} retried, {h['dead']} dead; batches holding 1/2/3 kinds of item: "
        + "/".join(str(kinds_per_batch.get(k, 0)) for k in (1, 2, 3))
    )
    print(
        f"time: {h['inside_write_back']:.1f} s of {h['elapsed']:.1f} s inside connector.write_back "
        "(the rest is the hub's own database work between batches); "
        f"{h['inside_write_back'] / max(hub.api_calls, 1) * 1000:.0f} ms per call inside it "
        f"(one call at a time, {args.latency * 1000:.0f} ms injected)"
    )
    print(
        f"memory: peak RSS (VmHWM) of the write-back process, emulator not included; hub {h['rss_ready_mib']:.0f} MiB "
        f"before the sync started, {h['rss_peak_mib']:.0f} MiB peak"
        + (
            f"; baseline {baseline.result['rss_ready_mib']:.0f} MiB before, {baseline.result['rss_peak_mib']:.0f} MiB peak"
            if baseline
            else ""
        )
    )
    print(f"written data verified in the emulator: {'yes' if not problems else '; '.join(problems)}")
    return summary


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--responses", type=int, default=10_000)
    parser.add_argument("--contacts", type=int, default=2_000)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per API call (emulator)")
    parser.add_argument(
        "--baseline-sample",
        type=int,
        default=200,
        help="answers the naive baseline really writes (the first N; 0 = no baseline)",
    )
    parser.add_argument("--seed", type=int, default=20261123)
    parser.add_argument("--workdir", help="where the database and key go (default: a temporary folder)")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--phase", choices=["hub", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--state", help=argparse.SUPPRESS)
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.phase:
        child(args.phase, args.state)
        return
    if args.contacts < 1 or args.responses < args.contacts:
        parser.error("need at least one contact and at least as many responses as contacts")

    configure("warning")
    private_key, public_key = generate_key_pair()
    emulator = SalesforceEmulator(
        consumer_key=CONSUMER_KEY, username=USERNAME, public_key_pem=public_key, daily_limit=10_000_000
    )
    now = datetime.now(UTC)
    answers = make_answers(args.responses, args.contacts, args.seed, now)
    with tempfile.TemporaryDirectory(prefix="cxhub-bench-") as temporary:
        workdir = Path(args.workdir or temporary)
        workdir.mkdir(parents=True, exist_ok=True)
        key_file = workdir / "app-key.pem"
        key_file.write_text(private_key)
        database = workdir / "bench.db"
        database.unlink(missing_ok=True)
        print(
            f"seeding the emulator: {args.contacts:,} contacts, {args.responses:,} closed cases ...",
            flush=True,
        )
        contact_ids, case_ids = seed_emulator(emulator, args.contacts, answers)
        with serve_tls(emulator.app) as server:
            state = State(
                login_url=server.url,
                ca_file=server.ca_file,
                key_file=str(key_file),
                organization_id=emulator.org.org_id,
                database=str(database),
                responses=args.responses,
                contacts=args.contacts,
                seed=args.seed,
                now=now.isoformat(),
                baseline_sample=min(args.baseline_sample, args.responses),
                contact_ids=contact_ids,
                case_ids=case_ids,
            )
            state_file = workdir / "state.json"
            state_file.write_text(json.dumps(asdict(state)))
            print("storing the responses and queueing their write-backs in the hub ...", flush=True)
            queued = asyncio.run(queue_write_backs(state))
            print(f"  {queued:,} write-back items queued", flush=True)
            emulator.latency_seconds = args.latency
            print("running the hub's path (hub.sync.run) ...", flush=True)
            hub = run_phase("hub", emulator, state_file)
            problems = verify_hub_writes(emulator, state)
            baseline = None
            if state.baseline_sample:
                print(f"running the naive baseline on {state.baseline_sample:,} responses ...", flush=True)
                baseline = run_phase("baseline", emulator, state_file)
        summary = report(args, hub, baseline, problems)
        if args.json:
            Path(args.json).write_text(json.dumps(summary, indent=2, default=str))
    if problems:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
