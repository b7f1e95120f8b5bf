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

The lower bound is what Salesforce allows for the default campaign (internal comment off): a Composite
request carries five sObject Collections subrequests of 200 records for one API call, so ceil(contacts/1000)
Contact updates + ceil(responses/1000) ``Survey_Response__c`` upserts + ceil(responses/1000) Case updates
(22 calls for 10,000 answers of 2,000 contacts, where plain Collections calls need 110). One login per
process is counted apart, in neither column.

What both write-back benchmarks do alike (the answers, the hub's queue, the children, the report's
common lines) is in ``common.py`` next to this file.

Peak memory is the peak resident set size of each child, the process that does the write-back (the
emulator runs in this one): ``VmHWM`` from ``/proc/self/status`` on Linux. Results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import common
from hub_salesforce.auth import login
from hub_salesforce.client import COLLECTION_LIMIT, COMPOSITE_COLLECTION_LIMIT, build_session
from hub_salesforce.config import SalesforceSettings
from hub_salesforce.emulator import SalesforceEmulator, generate_key_pair, serve_tls
from pydantic import SecretStr
from simple_salesforce import Salesforce

from hub.config import HubConfig
from hub.logging import configure
from hub.models import nps_category

CONNECTOR = "sf"
#: records one Composite request carries: five sObject Collections subrequests of 200
COMPOSITE_RECORDS = COMPOSITE_COLLECTION_LIMIT * COLLECTION_LIMIT
CONSUMER_KEY = "3MVG9-cxhub-bench"
USERNAME = "integration@cxhub-bench.example"


# --- the state the children get: where the emulator is, the ids in it ----------------------------------


@dataclass
class State(common.BenchState):
    """What the children need to know besides the answers: where the emulator is, and the ids in it."""

    login_url: str
    ca_file: str
    key_file: str
    organization_id: str
    contact_ids: list[str]
    case_ids: list[str]


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
    return common.make_hub_config(state, CONNECTOR, connector_settings(state))


# --- this process: the emulator ------------------------------------------------------------------------


def seed_emulator(
    emulator: SalesforceEmulator, contacts: int, answers: list[common.Answer]
) -> tuple[list[str], list[str]]:
    owner = emulator.add_user("Bench Owner", "owner@bench.example")
    contact_ids = [
        emulator.add_contact("Bench", f"Contact {j}", email=f"contact{j}@bench.example")
        for j in range(contacts)
    ]
    case_ids = []
    for answer in answers:
        case_id = emulator.add_case(f"Request {answer.index}", contact_ids[answer.person], owner)
        closed = answer.answered_at - timedelta(hours=2)
        emulator.close_case(case_id, closed.strftime("%Y-%m-%dT%H:%M:%S.000+0000"))
        case_ids.append(case_id)
    return contact_ids, case_ids


def crm_records(state: State) -> common.CrmRecords:
    """The seeded contacts and cases as the hub refers to them (``common.queue_write_backs``)."""
    return common.CrmRecords(
        connector=CONNECTOR,
        person_noun="contact",
        person_ids=state.contact_ids,
        record_type="Case",
        event_prefix="case",
        case_ids=state.case_ids,
    )


# --- child: the hub's path -----------------------------------------------------------------------------


async def run_hub(state: State) -> dict[str, Any]:
    """``common.run_hub_sync`` with the login before the clock, and the kinds of item in each batch."""
    batch_kinds: list[dict[str, int]] = []

    def count_kinds(batch: Any) -> None:
        batch_kinds.append(dict(Counter(type(item.payload).__name__ for item in batch)))

    async def log_in(connector: Any) -> None:
        await connector.client.connect()  # the login, before the clock starts (counted apart)

    return await common.run_hub_sync(
        hub_config(state),
        CONNECTOR,
        before_clock=log_in,
        on_batch=count_kinds,
        counters=lambda _: {"batch_kinds": batch_kinds},
    )


# --- child: the naive baseline -------------------------------------------------------------------------


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


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
    history: dict[int, list[common.Answer]] = defaultdict(list)
    calls = 0
    rss_ready = common.max_rss_mib()
    started = time.perf_counter()
    for answer in sample:
        contact_id = state.contact_ids[answer.person]
        case_id = state.case_ids[answer.index]
        history[answer.person].append(answer)
        summary = common.naive_summary(history[answer.person], state.moment)
        summary["latest_category"] = summary["latest_category"].value  # as text, the way Salesforce gets it
        summary["latest_date"] = iso(summary["latest_date"])
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
                target.campaign_field: common.CAMPAIGN,
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
        "rss_peak_mib": common.max_rss_mib(),
    }


def child(phase: str, state_file: str) -> None:
    common.child_phase(
        phase, state_file, State, {"hub": lambda state: asyncio.run(run_hub(state)), "baseline": run_baseline}
    )


# --- this process: running the phases and reporting ----------------------------------------------------


def call_kind(method: str, path: str) -> str:
    if path.startswith("/services/oauth2/"):
        return "POST login (oauth2/token)"
    parts = path.strip("/").split("/")
    if parts[0] == "sobjects" and len(parts) == 3:
        parts[2] = "{id}"
    return f"{method} /{'/'.join(parts)}"


def run_phase(name: str, emulator: SalesforceEmulator, state_file: Path) -> common.Phase:
    emulator.calls.clear()
    result = common.spawn_phase(__file__, name, state_file)
    calls = list(emulator.calls)
    failed = [call for call in calls if call.status >= 400]
    if failed:
        print(
            f"  {len(failed)} calls of the {name} phase failed, e.g. {failed[0].method} {failed[0].path} {failed[0].status}"
        )
    return common.Phase.from_calls(name, result, calls, call_kind)


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
        != f"{a.response_id}+{'comment' if a.comment else 'score'}"  # the marker of the answer noted
        or cases[state.case_ids[a.index]].get("CXHub_Rating__c") != a.rating
    )
    if wrong_cases:
        problems.append(f"{wrong_cases} cases without their answer")
    per_contact = Counter(a.person for a in answers)
    contacts = emulator.org.records["Contact"]
    wrong_contacts = sum(
        1
        for j, contact_id in enumerate(state.contact_ids)
        if contacts[contact_id].get("CXHub_Response_Count__c") != per_contact[j]
    )
    if wrong_contacts:
        problems.append(f"{wrong_contacts} contacts without the right answer count")
    return problems


@dataclass(frozen=True)
class LowerBound:
    """The fewest API calls Salesforce allows for the write-back: Composite requests of five sObject
    Collections subrequests of 200 records, so 1,000 records a call.

    The default campaign (internal comment off) writes one record per contact (the summary) and two per
    answer (the ``Survey_Response__c`` upsert, the Case update): ceil(records / 1,000) calls. The sync hands
    the connector batches of one kind of item, so each kind packs alone: the bound counts a call per
    started 1,000 of each kind, which is also what packing every kind together would cost as long as each
    kind fills its calls (``packed`` says what it would be).
    """

    contacts: int
    responses: int

    @property
    def records(self) -> int:
        return self.contacts + 2 * self.responses

    @property
    def packed(self) -> int:
        return math.ceil(self.records / COMPOSITE_RECORDS)

    @property
    def calls(self) -> int:
        return math.ceil(self.contacts / COMPOSITE_RECORDS) + 2 * math.ceil(
            self.responses / COMPOSITE_RECORDS
        )

    @property
    def collections_calls(self) -> int:
        """The bound before Composite: plain sObject Collections calls of 200 records."""
        return math.ceil(self.contacts / COLLECTION_LIMIT) + 2 * math.ceil(self.responses / COLLECTION_LIMIT)


def report(
    args: argparse.Namespace, hub: common.Phase, baseline: common.Phase | None, problems: list[str]
) -> dict[str, Any]:
    n = args.responses
    h = hub.result
    shared = common.Report(n, hub, baseline, problems)
    bound = LowerBound(args.contacts, n)
    batches = h["batch_kinds"]
    kinds_per_batch = Counter(len(kinds) for kinds in batches)
    summary: dict[str, Any] = {
        "responses": n,
        "contacts": args.contacts,
        "latency_seconds": args.latency,
        "machine": common.machine(),
        "lower_bound_calls": bound.calls,
        "lower_bound_records": bound.records,
        "collections_bound_calls": bound.collections_calls,
        "hub": shared.hub_summary(
            times_lower_bound=hub.api_calls / bound.calls,
            seconds_per_call_inside_write_back=h["inside_write_back"] / max(hub.api_calls, 1),
            batches_by_number_of_kinds=dict(kinds_per_batch),
        ),
    }
    shared.add_baseline(summary)
    scale = shared.scale
    rows = common.comparison_rows(n, hub, scale, per_response_digits=4)
    rows[3:3] = [
        ("lower bound of calls (Composite: 5 x 200 records a call)", common.fmt(bound.calls), ""),
        (
            "calls / lower bound",
            f"{hub.api_calls / bound.calls:.2f}x",
            f"{scale.per_response * n / bound.calls:,.0f}x" if scale else "",
        ),
    ]

    shared.print_head(
        f"Salesforce write-back: {common.fmt(n)} responses of {common.fmt(args.contacts)} contacts, "
        f"{args.latency * 1000:.0f} ms per API call, emulator over TLS on loopback",
        rows,
    )
    print()
    print(
        f"lower bound: {args.contacts:,} Contact updates + {n:,} Survey_Response__c upserts + {n:,} Case updates "
        f"= {bound.records:,} records; ceil per kind at {COMPOSITE_RECORDS:,} records a Composite call = "
        f"{bound.calls} calls (ceil({bound.records:,}/{COMPOSITE_RECORDS:,}) = {bound.packed}); plain sObject "
        f"Collections calls of {COLLECTION_LIMIT} would need {bound.collections_calls}"
    )
    print("targets: " + shared.bound_verdict(bound.calls) + shared.baseline_verdict())
    common.print_calls_by_kind(hub, baseline)
    print(
        f"hub sync: {h['written']:,} items written in {h['batches']} batches of up to {COMPOSITE_RECORDS}, "
        f"{h['retried']} retried, {h['dead']} dead; batches holding 1/2/3 kinds of item: "
        + "/".join(str(kinds_per_batch.get(k, 0)) for k in (1, 2, 3))
    )
    print(
        "time: "
        + shared.time_line()
        + f"; {h['inside_write_back'] / max(hub.api_calls, 1) * 1000:.0f} ms per call inside it "
        f"(one call at a time, {args.latency * 1000:.0f} ms injected)"
    )
    common.print_memory_and_verdict(hub, baseline, problems)
    return summary


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--responses", type=int, default=10_000)
    parser.add_argument("--contacts", type=int, default=2_000)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per API call (emulator)")
    common.add_baseline_sample_argument(parser, default=200)
    parser.add_argument("--seed", type=int, default=20261123)
    parser.add_argument("--workdir", help="where the database and key go (default: a temporary folder)")
    parser.add_argument("--json", help="also write the results to this file")
    args = common.parse_arguments(parser, argv, child)
    if args is None:
        return
    common.check_sizes(parser, args.responses, args.contacts, "contact")

    configure("warning")
    private_key, public_key = generate_key_pair()
    emulator = SalesforceEmulator(
        consumer_key=CONSUMER_KEY, username=USERNAME, public_key_pem=public_key, daily_limit=10_000_000
    )
    now = datetime.now(UTC)
    answers = common.make_answers(args.responses, args.contacts, args.seed, now)
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
                people=args.contacts,
                seed=args.seed,
                now=now.isoformat(),
                baseline_sample=min(args.baseline_sample, args.responses),
                contact_ids=contact_ids,
                case_ids=case_ids,
            )
            state_file = common.save_state(state, workdir)
            common.queue_write_backs(hub_config(state), state, crm_records(state))
            emulator.latency_seconds = args.latency
            hub, baseline, problems = common.run_hub_then_baseline(
                state.baseline_sample,
                lambda name: run_phase(name, emulator, state_file),
                lambda: verify_hub_writes(emulator, state),
            )
        common.finish(report(args, hub, baseline, problems), args.json, problems)


if __name__ == "__main__":
    main()
