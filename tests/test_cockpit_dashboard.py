"""The dashboard (``/admin``) and its CSV export on SQLite and PostgreSQL: every figure shown is checked against
one computed here, in plain Python, from the list of answers the test seeded."""

from __future__ import annotations

import csv
import io
import random
import re
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from hub.app import Hub
from hub.models import SurveyKind
from hub.store.tables import AuditEntry
from hub.testing.answers import Seeded, seed
from hub.web import create_app
from hub.web.cockpit.answer_filter import parse_filter
from hub.web.cockpit.export import spreadsheet_safe
from hub.web.cockpit.figures import kind_figures, safe_link
from tests.helpers import asgi_client, csrf_of

PASSWORD = "correct horse battery staple"
#: a Wednesday at noon: the hub's clock during these tests
NOW = datetime(2026, 3, 18, 12, 0, tzinfo=UTC)
FORMULAS = ['=HYPERLINK("http://evil.example","x")', "+1+1", "-2+3", "@SUM(A1)", "\tTab", "\rReturn"]


def seeded_items(count: int = 240, seed_value: int = 7) -> list[Seeded]:
    """Answers and unanswered invitations over the last 120 days, across two campaigns, connectors, channels,
    languages and survey kinds; some with comments, some of them formulas."""
    rng = random.Random(seed_value)
    items = []
    for index in range(count):
        kind = SurveyKind.NPS if index % 3 else SurveyKind.CSAT
        low, high = (0, 10) if kind is SurveyKind.NPS else (1, 5)
        answered = index % 5 != 0
        comment = None
        if answered and index % 4 == 0:
            comment = FORMULAS[index % len(FORMULAS)] if index % 8 == 0 else f"Comment number {index}"
        items.append(
            Seeded(
                sent_at=NOW - timedelta(days=rng.uniform(1.25, 120)),  # answered by NOW
                rating=rng.randint(low, high) if answered else None,
                kind=kind,
                campaign="case_closed" if kind is SurveyKind.NPS else "deal_won",
                connector=rng.choice(["crm", "other"]),
                channel=rng.choice(["mail", "sms"]),
                language=rng.choice(["en", "da"]),
                comment=comment,
                person=index % 50,
                answered_after=timedelta(hours=rng.uniform(0.1, 30)),
                record_url=rng.choice([f"https://crm.example.com/case/{index}", "javascript:alert(1)", None]),
            )
        )
    return items


# --- what the page should show, computed from the seeded list ------------------------------------------------


def selected(item: Seeded, filters: dict[str, str], start: datetime, end: datetime, moment: datetime) -> bool:
    campaign_kind = {"case_closed": "nps", "deal_won": "csat"}
    return (
        start <= moment < end
        and filters.get("campaign", item.campaign) == item.campaign
        and filters.get("survey", campaign_kind[item.campaign]) == campaign_kind[item.campaign]
        and filters.get("connector", item.connector) == item.connector
        and filters.get("channel", item.channel) == item.channel
        and filters.get("language", item.language) == item.language
    )


def window(filters: dict[str, str]) -> tuple[datetime, datetime]:
    if "from" in filters:
        first, last = date.fromisoformat(filters["from"]), date.fromisoformat(filters["to"])
        return (
            datetime(first.year, first.month, first.day, tzinfo=UTC),
            datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1),
        )
    return NOW - timedelta(days=int(filters.get("period", "30"))), NOW


def expected(items: Sequence[Seeded], filters: dict[str, str]) -> dict[str, str]:
    start, end = window(filters)
    answers = [i for i in items if i.rating is not None and selected(i, filters, start, end, i.answered_at)]
    sent = [i for i in items if selected(i, filters, start, end, i.sent_at)]
    nps = [i.rating for i in answers if i.kind is SurveyKind.NPS and i.rating is not None]
    csat = [i.rating for i in answers if i.kind is SurveyKind.CSAT and i.rating is not None]
    figures = {"answers": str(len(answers))}
    if sent:
        rate = 100.0 * sum(i.rating is not None for i in sent) / len(sent)
        figures["response-rate"] = f"{rate:.1f} %"
    else:
        figures["response-rate"] = "–"
    if nps:
        promoters = sum(r >= 9 for r in nps)
        detractors = sum(r <= 6 for r in nps)
        figures["nps"] = f"{100.0 * (promoters - detractors) / len(nps):.1f}"
        figures["promoters"] = str(promoters)
        figures["passives"] = str(len(nps) - promoters - detractors)
        figures["detractors"] = str(detractors)
    if csat:
        figures["average-csat"] = f"{sum(csat) / len(csat):.2f}"
    return figures


def shown(html: str) -> dict[str, str]:
    return dict(re.findall(r'data-figure="([a-z-]+)">([^<]*)<', html))


# --- fixtures ------------------------------------------------------------------------------------------------


async def sign_in(client: httpx.AsyncClient) -> None:
    form = await client.get("/admin/login")
    signed = await client.post(
        "/admin/login",
        data={"csrf": csrf_of(form.text), "username": "admin", "password": PASSWORD, "next": "/admin"},
    )
    assert signed.status_code == 303


@pytest.fixture
async def dashboard(
    make_hub: Callable[..., Any],
) -> AsyncIterator[tuple[Hub, httpx.AsyncClient, list[Seeded]]]:
    hub: Hub = await make_hub(
        """
        [surveys.csat]
        kind = "csat"

        [campaigns.deal_won]
        trigger = { connector = "crm", event = "deal.won" }
        survey = "csat"
        channels = ["mail"]
        """
    )
    hub.config.hub.admin_password = SecretStr(PASSWORD)
    hub.now = lambda: NOW
    items = seeded_items()
    async with hub.store.engine.begin() as conn:
        await seed(conn, items)
    async with asgi_client(create_app(hub, scheduler=False)) as client:
        await sign_in(client)
        yield hub, client, items


# --- the page -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"period": "90"},
        {"period": "365", "campaign": "case_closed"},
        {"period": "90", "survey": "csat"},
        {"period": "90", "connector": "other"},
        {"period": "90", "channel": "sms", "language": "da"},
        {"period": "365", "connector": "crm", "channel": "mail", "survey": "nps"},
        {"from": "2026-01-01", "to": "2026-02-28"},
        {"period": "7"},
    ],
)
async def test_the_figures_are_those_of_the_seeded_answers(dashboard, filters: dict[str, str]) -> None:
    _hub, client, items = dashboard
    page = await client.get("/admin", params=filters)
    assert page.status_code == 200
    figures = expected(items, filters)
    assert int(figures["answers"]) > 0, "the filter should select some answers"
    assert shown(page.text) == figures


async def test_an_empty_filter_says_so(dashboard) -> None:
    _hub, client, _items = dashboard
    page = await client.get("/admin", params={"campaign": "no_such_campaign"})
    assert page.status_code == 200
    assert shown(page.text) == {"answers": "0", "response-rate": "–"}
    assert "No answers in this filter." in page.text and "No comments in this filter." in page.text
    assert '<option value="no_such_campaign" selected>' in page.text  # the link's value stays chosen


async def test_a_link_the_page_does_not_understand_still_shows_the_page(dashboard) -> None:
    _hub, client, items = dashboard
    page = await client.get("/admin", params={"period": "12", "survey": "stars", "from": "yesterday"})
    assert page.status_code == 200
    assert 'role="alert"' in page.text and "period" in page.text
    assert shown(page.text) == expected(items, {})  # the default filter instead


@pytest.mark.parametrize(
    "filters",
    [
        {"period": "7", "bucket": "week"},
        {"period": "90", "bucket": "week"},
        {"period": "365", "bucket": "week"},
        {"period": "90", "bucket": "month"},
        {"period": "90", "bucket": "week", "connector": "crm"},  # joined: each row's bucket by CASE
        {"from": "2021-01-01", "to": "2026-03-18", "bucket": "week"},  # more weeks than a union takes
    ],
)
async def test_the_trend_buckets_hold_the_answers_of_their_week_or_month(
    dashboard, filters: dict[str, str]
) -> None:
    hub, client, items = dashboard
    chosen = parse_filter(filters, NOW)
    bucket = chosen.bucket
    async with hub.store.engine.connect() as conn:
        kinds = {k.kind: k for k in await kind_figures(conn, chosen)}

    def key(moment: datetime) -> str:
        if bucket == "month":
            return f"{moment:%Y-%m}"
        return (moment.date() - timedelta(days=moment.weekday())).isoformat()

    for kind in (SurveyKind.NPS, SurveyKind.CSAT):
        ratings: dict[str, list[int]] = {}
        for item in items:
            if (
                item.kind is kind
                and item.rating is not None
                and selected(item, filters, *window(filters), item.answered_at)
            ):
                ratings.setdefault(key(item.answered_at), []).append(item.rating)
        assert (kind in kinds) == bool(ratings)
        if not ratings:
            continue
        buckets = kinds[kind].buckets
        labels = [b.label for b in buckets]
        assert labels == sorted(labels) and len(set(labels)) == len(labels)
        assert set(ratings) <= set(labels)
        assert labels[0] == key(chosen.start) and labels[-1] == key(chosen.end)
        for b in buckets:
            found = ratings.get(b.label, [])
            assert b.tally.count == len(found), b.label
            if kind is SurveyKind.NPS and found:
                nps = 100.0 * (sum(r >= 9 for r in found) - sum(r <= 6 for r in found)) / len(found)
                assert b.tally.nps == round(nps, 1)
            if kind is SurveyKind.CSAT and found:
                assert b.tally.average == round(sum(found) / len(found), 2)
    assert SurveyKind.NPS in kinds
    page = await client.get("/admin", params=filters)
    table = page.text.split('data-trend="nps"', 1)[1].split("</table>", 1)[0]
    assert len(re.findall(r'<th scope="row">', table)) == len(kinds[SurveyKind.NPS].buckets)
    assert "<svg" in page.text and "<title" in page.text and "<desc" in page.text


async def test_the_newest_comments_with_their_person_and_crm_link(dashboard) -> None:
    _hub, client, items = dashboard
    page = await client.get("/admin", params={"period": "365"})
    commented = sorted(
        (
            i
            for i in items
            if i.rating is not None and i.comment and i.answered_at >= NOW - timedelta(days=365)
        ),
        key=lambda i: i.answered_at,
        reverse=True,
    )[:20]
    section = page.text.split('id="comments-heading"', 1)[1].split("</section>", 1)[0]
    entries = section.split('<li class="comment">')[1:]
    assert len(entries) == 20
    for item, entry in zip(commented, entries, strict=True):
        assert f'<time datetime="{item.answered_at.isoformat()}"' in entry
        assert f"Person {item.person}</a>" in entry
        assert f"Score {item.rating} of {10 if item.kind is SurveyKind.NPS else 5}" in entry
        if item.record_url and item.record_url.startswith("https://"):
            assert f'href="{item.record_url}"' in entry
        else:
            assert "Open the record in the CRM" not in entry
    assert "javascript:" not in section


# --- the export ---------------------------------------------------------------------------------------------


async def test_the_csv_holds_the_answers_of_the_filter_with_formulas_defused(dashboard) -> None:
    hub, client, items = dashboard
    filters = {"period": "365", "connector": "crm"}
    reply = await client.get("/admin/answers.csv", params=filters)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/csv")
    assert reply.headers["content-disposition"].startswith("attachment;")
    assert reply.content.startswith(b"\xef\xbb\xbf")  # UTF-8 with BOM, for Excel
    rows = list(csv.DictReader(io.StringIO(reply.content.decode("utf-8-sig"), newline="")))
    start, end = window(filters)
    wanted = sorted(
        (i for i in items if i.rating is not None and selected(i, filters, start, end, i.answered_at)),
        key=lambda i: i.answered_at,
    )
    assert len(rows) == len(wanted) > 0
    assert list(rows[0]) == [
        "answered_at", "response_id", "campaign", "survey_kind", "rating", "score", "nps_category", "comment",
        "topic", "language", "channel", "connector", "crm_record_id", "crm_record_url", "person_id",
        "person_name",
    ]  # fmt: skip
    for row, item in zip(rows, wanted, strict=True):
        assert datetime.fromisoformat(row["answered_at"]) == item.answered_at
        assert (row["campaign"], row["survey_kind"], row["rating"]) == (
            item.campaign,
            item.kind.value,
            str(item.rating),
        )
        assert (row["connector"], row["channel"], row["person_name"]) == (
            "crm",
            item.channel,
            f"Person {item.person}",
        )
        comment = item.comment or ""
        assert row["comment"] == (
            "'" + comment if comment[:1] in ("=", "+", "-", "@", "\t", "\r") else comment
        )
        assert row["crm_record_url"] == (
            item.record_url if item.record_url and "https" in item.record_url else ""
        )
    assert any(row["comment"].startswith("'=") for row in rows)
    async with hub.store.session() as s:
        entry = (
            (await s.execute(select(AuditEntry).where(AuditEntry.action != "user.login"))).scalars().one()
        )  # the export, beside the sign-in
    assert (entry.actor, entry.action) == ("admin", "answers.export")
    assert entry.detail is not None and "connector=crm" in entry.detail["filter"]


async def test_a_large_export_comes_in_batches_without_losing_or_repeating_a_row(
    dashboard, monkeypatch
) -> None:
    _hub, client, items = dashboard
    monkeypatch.setattr("hub.web.cockpit.export.BATCH", 7)
    reply = await client.get("/admin/answers.csv", params={"period": "365"})
    ids = [row["response_id"] for row in csv.DictReader(io.StringIO(reply.content.decode("utf-8-sig")))]
    assert len(ids) == len(set(ids)) == sum(i.rating is not None for i in items)


def test_a_cell_that_starts_like_a_formula_gets_a_quote() -> None:
    for text in FORMULAS:
        assert spreadsheet_safe(text) == "'" + text
    for value in ("Fine", "", " =not a formula", 3, -2, 4.5, None):
        assert spreadsheet_safe(value) == value


def test_only_http_links_to_a_record() -> None:
    assert safe_link("https://crm.example.com/x") == "https://crm.example.com/x"
    assert safe_link("HTTP://crm.example.com/x") == "HTTP://crm.example.com/x"
    for bad in ("javascript:alert(1)", "data:text/html,x", "//evil.example", None, 3):
        assert safe_link(bad) is None


# --- access -------------------------------------------------------------------------------------------------


async def test_the_dashboard_and_export_need_a_session(make_hub) -> None:
    hub = await make_hub()
    hub.config.hub.admin_password = SecretStr(PASSWORD)
    async with asgi_client(create_app(hub, scheduler=False)) as client:
        for path in ("/admin", "/admin/answers.csv"):
            reply = await client.get(path)
            assert reply.status_code == 303 and reply.headers["location"].startswith("/admin/login")
