"""What the write-back benchmarks share, whatever the CRM: the answers, the hub's queue, the child processes,
and the report.

``salesforce_writeback.py``, ``superoffice_writeback.py`` and ``dynamics_writeback.py`` measure the same
thing the same way: this process seeds an emulator and stores answered surveys in the hub's database, a
child runs the hub's real sync against the emulator, another child runs a naive one-record-at-a-time
baseline, and this process counts the calls in the emulator's log and prints one report (``Report``: the
rates, ratios, verdicts and the common part of the JSON results). Only the CRM's ids, record types, the
baseline's calls, the lower bound and the check of what was written differ; they stay in each script.
``run_live_sync`` is live operation, answers arriving one at a time, for a bench that reports it.

Each script imports this module as ``common``: a script run as a file (``python bench/<name>.py``, as
``uv run`` does and as the children are started) has its own folder first on ``sys.path``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import resource
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, Self, TypeVar

from sqlalchemy import func, select

from hub.app import Hub
from hub.config import HubConfig, parse_config
from hub.logging import configure
from hub.models import CaseEvent, nps_category
from hub.store.tables import Event, Identity, Invitation, Person, Response, WriteBack
from hub.testing.memory import memory_channel_plugin

CAMPAIGN = "bench"
COMMENTS = (
    "Quick and friendly help",
    "Took three days to get an answer",
    "Solved on the first call, thank you!",
    "The invoice is still wrong",
    "Good, but I had to explain the problem twice",
    "Excellent service from Mette",
)
RESULT_PREFIX = "RESULT "  # the line a child prints its result on; everything else it prints is noise


# --- the data: the same answers in every process -------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One answered NPS survey, as the hub stores it and as the naive baseline writes it."""

    index: int
    response_id: str
    person: int  # index into the emulator's people (Salesforce contacts, SuperOffice persons)
    rating: int
    comment: str | None
    answered_at: datetime


def make_answers(count: int, people: int, seed: int, now: datetime) -> list[Answer]:
    """``count`` NPS answers spread over the last 60 days; answer i comes from person ``i % people``.

    Seeded, so that every process remakes the same answers from a few numbers instead of passing
    thousands of them around.
    """
    rng = random.Random(seed)
    start = now - timedelta(days=60)
    step = timedelta(days=60) / max(count, 1)
    answers = []
    for i in range(count):
        rating = rng.choices(range(11), weights=(2, 1, 1, 1, 2, 3, 4, 6, 9, 12, 10))[0]
        comment = rng.choice(COMMENTS) if rng.random() < 0.4 else None
        response_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        answers.append(Answer(i, response_id, i % people, rating, comment, start + step * i))
    return answers


@dataclass
class BenchState:
    """What every child needs to know whatever the CRM: the hub's database and how to remake the answers.

    Each script subclasses it with where its emulator is and the ids in it; the state goes to the
    children as a JSON file (``save_state``, ``child_phase``).
    """

    database: str
    responses: int
    people: int
    seed: int
    now: str
    baseline_sample: int

    @property
    def moment(self) -> datetime:
        return datetime.fromisoformat(self.now)

    def answers(self) -> list[Answer]:
        return make_answers(self.responses, self.people, self.seed, self.moment)


StateT = TypeVar("StateT", bound=BenchState)


def save_state(state: BenchState, workdir: Path, name: str = "state.json") -> Path:
    """Write the state to ``name`` in ``workdir``, where the children read it (``child_phase``)."""
    path = workdir / name
    path.write_text(json.dumps(asdict(state)))
    return path


def make_hub_config(
    state: BenchState,
    connector: str,
    settings: dict[str, Any],
    write_back: dict[str, Any] | None = None,
) -> HubConfig:
    """The hub's config: the connector, a memory channel and one NPS campaign triggered by closed cases.

    ``write_back`` is the campaign's ``write_back`` table, left out (the defaults) when None.
    """
    campaign: dict[str, Any] = {
        "trigger": {"connector": connector, "event": "case.closed"},
        "survey": "nps",
        "channels": ["memory"],
    }
    if write_back is not None:
        campaign["write_back"] = write_back
    data = {
        "hub": {
            "database_url": f"sqlite+aiosqlite:///{state.database}",
            "public_url": "http://127.0.0.1:9",
            "log_level": "warning",
        },
        "connectors": {connector: settings},
        "channels": {"memory": {"plugin": "memory"}},
        "surveys": {"nps": {"kind": "nps"}},
        "campaigns": {CAMPAIGN: campaign},
    }
    return parse_config(data, Path(state.database).with_suffix(".toml"))


async def open_hub(config: HubConfig) -> Hub:
    """The hub with the in-memory channel plugin the campaign names, so that nothing is really sent."""
    return await Hub.open(config, plugin_objects=[memory_channel_plugin()])


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


# --- this process: the hub's queue ---------------------------------------------------------------------


@dataclass(frozen=True)
class CrmRecords:
    """The emulator's records the answers belong to, as the hub refers to them (CRM ids as text)."""

    connector: str  # the connector's name in the hub config
    person_noun: str  # "contact", "person": the hub's people get the emulator's e-mail addresses and names
    person_ids: Sequence[str]  # by person index
    record_type: str  # the closed record's type in the case event ("Case", "ticket")
    event_prefix: str  # event ids are "<prefix>:<record id>:closed:<time>"
    case_ids: Sequence[str]  # one closed record per answer, by answer index


def queue_write_backs(config: HubConfig, state: BenchState, records: CrmRecords) -> None:
    """Store the answers as the engine would have, and queue their write-backs with the engine's own code.

    The surveys are not sent and answered through the hub (that is not what is measured): the Event,
    Invitation and Response rows are written directly, then ``Engine._queue_write_backs``, the function
    ``record_answer`` queues with, queues what the sync will write.
    """
    print("storing the responses and queueing their write-backs in the hub ...", flush=True)
    queued = asyncio.run(_store_answered_surveys(config, state, records))
    print(f"  {queued:,} write-back items queued", flush=True)


async def _store_answered_surveys(config: HubConfig, state: BenchState, records: CrmRecords) -> int:
    """The rows of ``queue_write_backs``; returns how many write-back items are queued."""
    hub = await open_hub(config)
    try:
        async with hub.store.session() as s:
            people = await _store_people(s, state, records)
            await _store_answers(hub, s, people, state.answers(), records)
        async with hub.store.session() as s:
            return int(await s.scalar(select(func.count()).select_from(WriteBack)) or 0)
    finally:
        await hub.close()


async def _store_people(s: Any, state: BenchState, records: CrmRecords) -> list[Person]:
    """The hub's persons, each known to the CRM by its id there."""
    noun = records.person_noun
    people = [
        Person(email=f"{noun}{j}@bench.example", name=f"Bench {noun.capitalize()} {j}", language="en")
        for j in range(state.people)
    ]
    s.add_all(people)
    await s.flush()
    s.add_all(
        Identity(person_id=person.id, connector=records.connector, crm_id=crm_id)
        for person, crm_id in zip(people, records.person_ids, strict=True)
    )
    return people


async def _store_answers(
    hub: Hub, s: Any, people: list[Person], answers: Sequence[Answer], records: CrmRecords
) -> None:
    """Each answer's closed case, invitation and response, and its write-backs queued by the engine."""
    campaign = hub.config.campaigns[CAMPAIGN]
    survey = hub.config.surveys[campaign.survey]
    events = []
    for answer in answers:
        case_id = records.case_ids[answer.index]
        closed = answer.answered_at - timedelta(hours=2)
        case = CaseEvent(
            event_id=f"{records.event_prefix}:{case_id}:closed:{closed:%Y%m%dT%H%M%SZ}",
            event_type="case.closed",
            occurred_at=closed,
            record_type=records.record_type,
            record_id=case_id,
            person_id=records.person_ids[answer.person],
        )
        events.append(
            Event(
                connector=records.connector,
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


# --- child: the hub's path -----------------------------------------------------------------------------


async def run_hub_sync(
    config: HubConfig,
    connector_name: str,
    *,
    before_clock: Callable[[Any], Awaitable[object]] | None = None,
    on_batch: Callable[[Any], None] | None = None,
    counters: Callable[[Any], dict[str, Any]] | None = None,
    until_drained: bool = False,
) -> dict[str, Any]:
    """Run ``hub.sync.run``, the real sync with the real connector, and time it.

    ``until_drained``: run it again until nothing is queued, when and as the worker's prompt sync would
    (``_sync_runs``), so that a run the CRM stopped with a 429 (the queue held for its Retry-After) is
    followed by the runs after the hold; ``runs`` in the result says how many it took.

    ``connector.write_back`` is wrapped to time the calls (the same call, only measured), so that the
    report can tell the time spent writing to the CRM from the hub's own database work between batches.
    The CRM-specific figures come from the hooks: ``before_clock`` runs on the connector before the
    clock starts (a login counted apart), ``on_batch`` sees every batch before it is written, and
    ``counters`` adds the connector's own counters to the result after the sync.
    """
    hub = await open_hub(config)
    try:
        connector: Any = hub.connectors[connector_name]
        inside = 0.0
        write_back = connector.write_back

        async def timed_write_back(batch: Any) -> Any:  # measurement only: the same call, timed
            nonlocal inside
            if on_batch is not None:
                on_batch(batch)
            started = time.perf_counter()
            try:
                return await write_back(batch)
            finally:
                inside += time.perf_counter() - started

        connector.write_back = timed_write_back
        if before_clock is not None:
            await before_clock(connector)
        rss_ready = max_rss_mib()
        started = time.perf_counter()
        totals = await _sync_runs(hub, connector_name, until_drained)
        elapsed = time.perf_counter() - started
        async with hub.store.session() as s:
            states = dict(
                (await s.execute(select(WriteBack.state, func.count()).group_by(WriteBack.state))).all()
            )
        return {
            "elapsed": elapsed,
            "inside_write_back": inside,
            **totals,
            "states": {str(k): int(v) for k, v in states.items()},
            **(counters(connector) if counters is not None else {}),
            "rss_ready_mib": rss_ready,
            "rss_peak_mib": max_rss_mib(),
        }
    finally:
        await hub.close()


async def _sync_runs(hub: Hub, connector_name: str, until_drained: bool) -> dict[str, Any]:
    """One sync run, or runs until nothing is queued; their summed stats.

    The runs after the first follow the worker's prompt sync (``hub.scheduler``): every quarter of
    ``sync.prompt_seconds`` it looks, and runs when an item is ready (``SyncService.settled``). The
    error is the first run's that had one. Items that keep failing go dead after the sync's attempts, so
    the loop ends.
    """
    quiet = hub.config.sync.prompt_seconds
    totals: dict[str, Any] = {"written": 0, "retried": 0, "dead": 0, "batches": 0, "error": None, "runs": 0}
    while True:
        stats = await hub.sync.run(connector_name)
        totals["runs"] += 1
        for key in ("written", "retried", "dead", "batches"):
            totals[key] += getattr(stats, key)
        totals["error"] = totals["error"] or stats.error
        if not until_drained:
            return totals
        while not await hub.sync.settled(connector_name):
            if not await hub.sync.pending(connector_name, due_only=False):
                return totals
            await asyncio.sleep(max(0.1, quiet / 4))


async def run_live_sync(
    config: HubConfig,
    connector_name: str,
    state: BenchState,
    records: CrmRecords,
    sample: int,
    *,
    counters: Callable[[Any], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Live operation: the first ``sample`` answers arrive one at a time, and each is written to
    the CRM (``hub.sync.run``) before the next arrives, as the prompt sync does when answers trickle in.

    Nothing is coalesced across answers: a person's summary is written once per answer, and every batch
    holds one answer's item of one kind. The hub's database is ``state.database``, empty but for the
    persons this stores first (before the clock).
    """
    hub = await open_hub(config)
    try:
        connector: Any = hub.connectors[connector_name]
        async with hub.store.session() as s:
            people = await _store_people(s, state, records)
        answers = state.answers()[:sample]
        totals: dict[str, Any] = {"written": 0, "retried": 0, "dead": 0, "batches": 0, "error": None}
        rss_ready = max_rss_mib()
        started = time.perf_counter()
        for answer in answers:
            async with hub.store.session() as s:
                await _store_answers(hub, s, people, [answer], records)
            stats = await hub.sync.run(connector_name)
            for key in ("written", "retried", "dead", "batches"):
                totals[key] += getattr(stats, key)
            totals["error"] = totals["error"] or stats.error
        elapsed = time.perf_counter() - started
        return {
            "elapsed": elapsed,
            "responses": len(answers),
            **totals,
            **(counters(connector) if counters is not None else {}),
            "rss_ready_mib": rss_ready,
            "rss_peak_mib": max_rss_mib(),
        }
    finally:
        await hub.close()


# --- child: the naive baseline -------------------------------------------------------------------------


def naive_summary(history: list[Answer], now: datetime) -> dict[str, Any]:
    """The person's summary after the latest answer, as a naive integration would compute it.

    Values as Python gives them (the category an enum, the date a datetime); a client that wants
    text converts them.
    """
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


# --- the child processes -------------------------------------------------------------------------------


def parse_arguments(
    parser: argparse.ArgumentParser, argv: Iterable[str] | None, child: Callable[[str, str], None]
) -> argparse.Namespace | None:
    """Parse the command line; None when the script was started as a child, after running its phase.

    A child (``spawn_phase``) is the same script with the hidden ``--phase`` and ``--state``: it runs
    ``child(phase, state_file)`` and nothing else.
    """
    parser.add_argument("--phase", choices=["hub", "baseline", "live"], help=argparse.SUPPRESS)
    parser.add_argument("--state", help=argparse.SUPPRESS)
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.phase:
        child(args.phase, args.state)
        return None
    return args


def check_sizes(parser: argparse.ArgumentParser, responses: int, people: int, noun: str) -> None:
    """Every person answers at least once (answer i comes from person ``i % people``), else a usage error."""
    if people < 1 or responses < people:
        parser.error(f"need at least one {noun} and at least as many responses as {noun}s")


def child_phase(
    phase: str,
    state_file: str,
    state_type: type[StateT],
    phases: Mapping[str, Callable[[StateT], dict[str, Any]]],
) -> None:
    """In a child: read the state, run the phase and print its result on the line ``spawn_phase`` reads."""
    configure("warning")
    state = state_type(**json.loads(Path(state_file).read_text()))
    result = phases[phase](state)
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def spawn_phase(
    script: str, phase: str, state_file: Path, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Run one phase of ``script`` in a child process and return the result it printed.

    A process of its own per phase, so that each one's peak memory is its own and none of it is the
    emulator's, which keeps serving from this process (and logging the calls) meanwhile.
    """
    completed = subprocess.run(
        [sys.executable, script, "--phase", phase, "--state", str(state_file)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if completed.returncode != 0 or not lines:
        sys.stdout.write(completed.stdout)
        raise SystemExit(f"the {phase} phase failed (exit code {completed.returncode})")
    result: dict[str, Any] = json.loads(lines[-1].removeprefix(RESULT_PREFIX))
    return result


class Call(Protocol):
    """One call in an emulator's log (both emulators log these two, and more)."""

    @property
    def method(self) -> str: ...

    @property
    def path(self) -> str: ...


@dataclass
class Phase:
    """One phase as this process saw it: the child's result and the emulator's calls meanwhile."""

    name: str
    result: dict[str, Any]
    calls: Counter[str]  # by kind, logins included
    api_calls: int  # logins not included
    logins: int

    @classmethod
    def from_calls(
        cls,
        name: str,
        result: dict[str, Any],
        calls: Iterable[Call],
        call_kind: Callable[[str, str], str],
        **extra: Any,
    ) -> Self:
        """Count the calls by ``call_kind(method, path)``; a kind with "login" in it is a login.

        ``extra``: the fields a subclass adds.
        """
        calls = list(calls)
        kinds = Counter(call_kind(call.method, call.path) for call in calls)
        logins = sum(count for kind, count in kinds.items() if "login" in kind)
        return cls(
            name=name, result=result, calls=kinds, api_calls=len(calls) - logins, logins=logins, **extra
        )


PhaseT = TypeVar("PhaseT", bound=Phase)


def run_hub_then_baseline(
    baseline_sample: int,
    run_phase: Callable[[str], PhaseT],
    verify: Callable[[], list[str]],
) -> tuple[PhaseT, PhaseT | None, list[str]]:
    """The hub's path, the check of what it wrote, then the baseline on its sample (none when 0).

    The check comes before the baseline because the baseline writes to the same records.
    """
    print("running the hub's path (hub.sync.run) ...", flush=True)
    hub = run_phase("hub")
    problems = verify()
    baseline = None
    if baseline_sample:
        print(f"running the naive baseline on {baseline_sample:,} responses ...", flush=True)
        baseline = run_phase("baseline")
    return hub, baseline, problems


def add_baseline_sample_argument(parser: argparse.ArgumentParser, default: int) -> None:
    """``--baseline-sample``: the naive baseline is too slow to run at full size, so it runs on a sample."""
    parser.add_argument(
        "--baseline-sample",
        type=int,
        default=default,
        help="answers the naive baseline really writes (the first N; 0 = no baseline)",
    )


# --- this process: reporting ---------------------------------------------------------------------------


Row = tuple[str, str, str]  # label, hub, baseline


def fmt(value: float, digits: int = 0) -> str:
    """A figure of the report: thousands separated, ``digits`` decimals."""
    return f"{value:,.{digits}f}"


def machine() -> str:
    """What the figures were measured on, for the report and the JSON results."""
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


@dataclass(frozen=True)
class BaselineScale:
    """The baseline's sample and what it scales to at full size.

    Linearly: the baseline's work per answer does not depend on how many answers there are.
    """

    phase: Phase
    sample: int  # answers really written
    per_response: float  # API calls per answer
    rate: float  # answers per second

    @classmethod
    def of(cls, baseline: Phase) -> BaselineScale:
        sample = baseline.result["responses"]
        return cls(baseline, sample, baseline.api_calls / sample, sample / baseline.result["elapsed"])

    def summary(self, responses: int, round_trip_seconds: float | None = None) -> dict[str, Any]:
        """The baseline's part of the JSON results; the mean round trip where its client measured it."""
        b = self.phase.result
        return {
            "sampled_responses": self.sample,
            "api_calls_in_sample": self.phase.api_calls,
            "logins": self.phase.logins,
            "seconds_in_sample": b["elapsed"],
            **(
                {"mean_call_round_trip_seconds": round_trip_seconds} if round_trip_seconds is not None else {}
            ),
            "api_calls_per_response": self.per_response,
            "responses_per_second": self.rate,
            "extrapolated_api_calls": self.per_response * responses,
            "extrapolated_seconds": responses / self.rate,
            "rss_peak_mib": b["rss_peak_mib"],
            "rss_before_write_back_mib": b["rss_ready_mib"],
            "calls_by_kind": dict(self.phase.calls),
        }


#: the sync's totals every report keeps in its JSON results
SYNC_KEYS = ("written", "retried", "dead", "batches", "error", "states")


@dataclass
class Report:
    """What every write-back report derives from its phases alike: rates, ratios, the JSON results' common
    part, the table's head, the verdicts and the time line. Each script adds what only its CRM has."""

    responses: int
    hub: Phase
    baseline: Phase | None
    problems: list[str]

    @property
    def scale(self) -> BaselineScale | None:
        return BaselineScale.of(self.baseline) if self.baseline is not None else None

    @property
    def hub_rate(self) -> float:
        return self.responses / float(self.hub.result["elapsed"])

    def hub_summary(self, sync_keys: Sequence[str] = SYNC_KEYS, **extra: Any) -> dict[str, Any]:
        """The hub's part of the JSON results: calls, time, memory, the sync's totals, the verdict."""
        h = self.hub.result
        return {
            "api_calls": self.hub.api_calls,
            "logins": self.hub.logins,
            "api_calls_per_response": self.hub.api_calls / self.responses,
            "seconds": h["elapsed"],
            "seconds_inside_write_back": h["inside_write_back"],
            "responses_per_second": self.hub_rate,
            "rss_peak_mib": h["rss_peak_mib"],
            "rss_before_write_back_mib": h["rss_ready_mib"],
            "calls_by_kind": dict(self.hub.calls),
            "sync": {k: h[k] for k in sync_keys},
            **extra,
            "verified": not self.problems,
            "problems": self.problems,
        }

    def ratios(self) -> dict[str, float] | None:
        """How many times fewer calls and how many times more answers a second than the baseline."""
        scale = self.scale
        if scale is None:
            return None
        return {
            "fewer_calls": scale.per_response * self.responses / self.hub.api_calls,
            "faster": self.hub_rate / scale.rate,
        }

    def add_baseline(self, summary: dict[str, Any], round_trip_seconds: float | None = None) -> None:
        """The baseline's part of the JSON results and the ratios, when there is a baseline."""
        scale, ratios = self.scale, self.ratios()
        if scale is not None and ratios is not None:
            summary["baseline"] = scale.summary(self.responses, round_trip_seconds)
            summary["ratios"] = ratios

    def print_head(self, title: str, rows: Sequence[Row]) -> None:
        """The title, the machine and the results table."""
        print()
        print(title)
        print(f"machine: {machine()}")
        print()
        print_table(rows, self.baseline)

    def bound_verdict(self, bound: int, noun: str = "calls") -> str:
        """Whether the hub stayed within 1.1x of the lower bound."""
        times = self.hub.api_calls / bound
        return (
            f"{noun} within 1.1x of the lower bound ({bound:,}): "
            f"{'met' if times <= 1.1 else 'NOT met'} ({times:.2f}x)"
        )

    def baseline_verdict(self, noun: str = "calls", target: float = 20.0) -> str:
        """Whether the hub made ``target`` times fewer calls than the baseline; empty without one."""
        ratios = self.ratios()
        if ratios is None:
            return ""
        return (
            f"; at least {target:.0f}x fewer {noun} than the baseline: "
            f"{'met' if ratios['fewer_calls'] >= target else 'NOT met'} ({ratios['fewer_calls']:.1f}x); "
            f"{ratios['faster']:.1f}x more responses per second"
        )

    def time_line(self, rest: str = "the rest is the hub's own database work between batches") -> str:
        """How much of the hub's time was spent inside ``connector.write_back``."""
        h = self.hub.result
        return f"{h['inside_write_back']:.1f} s of {h['elapsed']:.1f} s inside connector.write_back ({rest})"


def comparison_rows(
    responses: int, hub: Phase, baseline: BaselineScale | None, per_response_digits: int
) -> list[Row]:
    """The rows of the results table both benchmarks print, the baseline's column empty without one."""
    n = responses
    h = hub.result
    rows = [
        ("responses written", fmt(n), ""),
        ("API calls", fmt(hub.api_calls), ""),
        ("API calls per response", fmt(hub.api_calls / n, per_response_digits), ""),
        ("wall time, s", fmt(h["elapsed"], 1), ""),
        ("responses per second", fmt(n / h["elapsed"], 1), ""),
        ("peak memory (peak RSS), MiB", fmt(h["rss_peak_mib"], 0), ""),
    ]
    if baseline is None:
        return rows
    b = baseline
    values = [
        f"{fmt(b.sample)} measured, {fmt(n)} extrapolated",
        f"{fmt(b.per_response * n)} (extrapolated)",
        fmt(b.per_response, 2),
        f"{fmt(n / b.rate, 0)} (extrapolated)",
        fmt(b.rate, 2),
        fmt(b.phase.result["rss_peak_mib"], 0),
    ]
    return [(label, hub_value, value) for (label, hub_value, _), value in zip(rows, values, strict=True)]


def print_table(rows: Sequence[Row], baseline: Phase | None) -> None:
    """The results table, Markdown, as docs/benchmarks.md shows it."""
    title = (
        f"naive baseline (first {baseline.result['responses']} measured, rest extrapolated)"
        if baseline
        else ""
    )
    print(f"| | hub (real path, full size) | {title} |")
    print("|---|---:|---:|")
    for label, hub_value, baseline_value in rows:
        print(f"| {label} | {hub_value} | {baseline_value} |")


def print_calls_by_kind(hub: Phase, baseline: Phase | None) -> None:
    """The emulator's calls of each phase by kind, between blank lines."""
    print()
    print("API calls of the hub's path by kind (login not counted above):")
    for kind, count in hub.calls.most_common():
        print(f"  {count:>8,}  {kind}")
    if baseline is not None:
        print(f"API calls of the baseline sample ({baseline.result['responses']} responses) by kind:")
        for kind, count in baseline.calls.most_common():
            print(f"  {count:>8,}  {kind}")
    print()


def print_memory_and_verdict(hub: Phase, baseline: Phase | None, problems: list[str]) -> None:
    """The last two lines of the report: the children's peak memory, and whether the hub's writes are there."""
    h = hub.result
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


def finish(summary: dict[str, Any], json_path: str | None, problems: list[str]) -> None:
    """Write the results as JSON too when ``--json`` asks for them; exit 1 when the hub's writes are not
    all in the emulator, so that a run that wrote wrong data fails."""
    if json_path:
        Path(json_path).write_text(json.dumps(summary, indent=2, default=str))
    if problems:
        raise SystemExit(1)
