"""The cockpit's home page, ``/admin``: how customers rate the service, and what they wrote.

For the answers in a filter (a GET form, so a filtered page is a link to share): the score of each survey kind
(the NPS with its promoters, passives and detractors; the average rating of CSAT, CES and smiley surveys), the
number of answers, the response rate, the trend by week or month as an inline SVG chart with its table, the
newest comments, and the same answers as CSV (``/admin/answers.csv``). Viewers see it all, export included.
The figures come from ``figures`` (counted by the database), the filter from ``answer_filter``.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from hub.app import Hub
from hub.models import SurveyKind
from hub.texts import LANGUAGES
from hub.web.cockpit.access import Viewer, audit
from hub.web.cockpit.answer_filter import PERIODS, AnswerFilter, parse_filter
from hub.web.cockpit.charts import LineChart, Part, line_chart, stacked_bar
from hub.web.cockpit.export import answers_csv
from hub.web.cockpit.figures import KindFigures, dashboard_figures
from hub.web.cockpit.render import PAGE_POLICY, render
from hub.web.deps import HubDep
from hub.web.survey import secure

router = APIRouter(prefix="/admin", include_in_schema=False)


@dataclass(frozen=True)
class KindView:
    """One survey kind as the page shows it: its figures and its charts."""

    figures: KindFigures
    trend: LineChart
    parts: list[Part]  # the NPS categories' bar; empty for other kinds

    @property
    def kind(self) -> str:
        return self.figures.kind.value


def kind_view(figures: KindFigures) -> KindView:
    if figures.kind is SurveyKind.NPS:
        low, high = -100, 100
        total = figures.total
        parts = stacked_bar(
            [("detractors", total.detractors), ("passives", total.passives), ("promoters", total.promoters)]
        )
    else:
        low, high = figures.scale
        parts = []
    buckets = figures.buckets
    trend = line_chart(
        [b.label for b in buckets],
        [figures.score(b.tally) for b in buckets],
        [b.tally.count for b in buckets],
        low,
        high,
    )
    return KindView(figures, trend, parts)


def filter_options(hub: Hub, chosen: AnswerFilter) -> dict[str, list[str]]:
    """The choices of the form's menus, from the config (no query): the configured campaigns, connectors and
    channels, the languages the hub speaks; a value in the link that is not among them is kept as a choice."""
    config = hub.config
    options = {
        "campaign": sorted(config.campaigns),
        "connector": sorted(config.connectors),
        "channel": sorted(config.channels),
        "language": list(LANGUAGES),
    }
    for name, values in options.items():
        current = getattr(chosen, name)
        if current is not None and current not in values:
            values.append(current)
    return options


@router.get("", response_class=HTMLResponse)
async def dashboard(request: Request, hub: HubDep, user: Viewer) -> Response:
    chosen = parse_filter(request.query_params, hub.now())
    figures = await dashboard_figures(hub.store.engine, chosen, hub.config)
    return render(
        request,
        hub,
        "admin/dashboard.html",
        user,
        chosen=chosen,
        figures=figures,
        kinds=[kind_view(k) for k in figures.kinds],
        options=filter_options(hub, chosen),
        periods=PERIODS,
        survey_kinds=[k.value for k in SurveyKind],
        api_on=hub.config.hub.api_token is not None,
        metrics_on=hub.config.hub.metrics_token is not None,
    )


@router.get("/answers.csv")
async def answers_export(request: Request, hub: HubDep, user: Viewer) -> Response:
    """The answers of the dashboard's filter as CSV. Personal data leaves the hub: the audit log says who
    took which answers (the filter), as it does for the admins' actions."""
    chosen = parse_filter(request.query_params, hub.now())
    await audit(hub, user.name, "answers.export", None, filter=chosen.query())
    name = f"answers-{hub.now():%Y%m%d-%H%M}.csv"
    response = StreamingResponse(
        answers_csv(hub.store, chosen),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
    secure(response, PAGE_POLICY)
    return response
