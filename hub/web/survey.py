"""The survey pages: ``/s/{token}`` (question, follow-up, thank-you) and ``/u/{token}`` (unsubscribe).

Nothing is ever recorded by a GET: mail scanners and link previews open links. A score in the query string
(a one-click button in the email) only pre-selects it; the customer's POST records it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from hub.app import Hub
from hub.engine import SurveyPage
from hub.errors import BadInput
from hub.models import SCALES
from hub.texts import followup_key, text
from hub.web.deps import HubDep, client_address
from hub.web.protection import CSRF_COOKIE, RateLimiter, csrf_token, csrf_valid, new_csrf_cookie

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))

per_token = RateLimiter(limit=30, window_seconds=60)
per_client = RateLimiter(limit=120, window_seconds=60)


def _render(
    request: Request, hub: Hub, name: str, status: int = 200, lang: str = "en", **context: Any
) -> HTMLResponse:
    cookie = request.cookies.get(CSRF_COOKIE) or new_csrf_cookie()
    page: SurveyPage | None = context.get("page")
    context.update(
        branding=hub.config.hub.branding,
        lang=lang,
        t=lambda key, **kw: text(lang, key, **kw),
        csrf=csrf_token(hub.secret_key, cookie, page.token_hash) if page else "",
    )
    response = templates.TemplateResponse(request, name, context, status_code=status)
    if CSRF_COOKIE not in request.cookies:
        response.set_cookie(
            CSRF_COOKIE, cookie, httponly=True, samesite="lax", secure=request.url.scheme == "https"
        )
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    return response


def _message(request: Request, hub: Hub, key: str, status: int, lang: str = "en") -> HTMLResponse:
    return _render(request, hub, "message.html", status=status, lang=lang, message=text(lang, key))


def _scale(page: SurveyPage) -> list[int]:
    low, high = SCALES[page.survey_kind]
    return list(range(low, high + 1))


@router.get("/s/{token}", response_class=HTMLResponse)
async def show_survey(token: str, request: Request, hub: HubDep, score: str | None = None) -> Response:
    state, page = await hub.engine.page_for_token(token)
    if page is None:
        return _message(request, hub, "unknown", 404)
    if state != "ok":
        return _message(request, hub, state, 410 if state == "expired" else 200, page.language)
    if page.response is not None:
        return _followup(request, hub, page)
    selected = int(score) if score is not None and score.isdigit() and int(score) in _scale(page) else None
    return _render(
        request, hub, "survey.html", lang=page.language, page=page, scale=_scale(page), selected=selected
    )


def _followup(request: Request, hub: Hub, page: SurveyPage, error: str | None = None) -> HTMLResponse:
    assert page.response is not None
    lang = page.language
    question = text(lang, followup_key(page.survey_kind, page.response.category))
    topics = page.survey.topics.get(lang) or page.survey.topics.get("en") or []
    return _render(
        request,
        hub,
        "followup.html",
        status=400 if error else 200,
        lang=lang,
        page=page,
        question=question,
        topics=topics,
        error=error,
    )


@router.post("/s/{token}", response_class=HTMLResponse)
async def answer_survey(token: str, request: Request, hub: HubDep) -> Response:
    if not per_client.allow(client_address(request)) or not per_token.allow(token):
        return HTMLResponse("Too many requests; please wait a minute.", status_code=429)
    state, page = await hub.engine.page_for_token(token)
    if page is None:
        return _message(request, hub, "unknown", 404)
    if state != "ok":
        return _message(request, hub, state, 410 if state == "expired" else 409, page.language)
    form = await request.form()
    submitted = form.get("csrf")
    if not csrf_valid(
        hub.secret_key,
        request.cookies.get(CSRF_COOKIE),
        page.token_hash,
        submitted if isinstance(submitted, str) else None,
    ):
        return _message(request, hub, "csrf", 403, page.language)
    raw_score = form.get("score")
    comment = form.get("comment")
    topic = form.get("topic")
    rating: int | None = None
    if isinstance(raw_score, str) and raw_score.strip():
        try:
            rating = int(raw_score)
        except ValueError:
            rating = -1
    try:
        await hub.engine.record_answer(
            page.invitation_id,
            rating,
            comment=comment if isinstance(comment, str) else None,
            topic=topic if isinstance(topic, str) else None,
        )
    except BadInput as exc:
        if page.response is not None:
            return _followup(request, hub, page, error=str(exc))
        return _render(
            request,
            hub,
            "survey.html",
            status=400,
            lang=page.language,
            page=page,
            scale=_scale(page),
            selected=None,
            error=str(exc),
        )
    done = "comment" in form or page.response is not None
    target = f"/s/{token}/thanks" if done else f"/s/{token}"
    return RedirectResponse(target, status_code=303)


@router.get("/s/{token}/thanks", response_class=HTMLResponse)
async def thank_you(token: str, request: Request, hub: HubDep) -> Response:
    _state, page = await hub.engine.page_for_token(token)
    if page is None:
        return _message(request, hub, "unknown", 404)
    return _render(
        request, hub, "thanks.html", lang=page.language, page=page, link=page.survey.thank_you_link
    )


@router.get("/u/{token}", response_class=HTMLResponse)
async def confirm_unsubscribe(token: str, request: Request, hub: HubDep) -> Response:
    return _render(request, hub, "unsubscribe.html", token=token)


@router.post("/u/{token}", response_class=HTMLResponse)
async def unsubscribe(token: str, request: Request, hub: HubDep) -> Response:
    """Both the page's button and RFC 8058 one-click (``List-Unsubscribe=One-Click``) land here."""
    if not per_client.allow(client_address(request)):
        return HTMLResponse("Too many requests; please wait a minute.", status_code=429)
    if not await hub.engine.unsubscribe(token):
        return _message(request, hub, "unknown", 404)
    return _message(request, hub, "unsubscribed", 200)
