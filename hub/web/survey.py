"""The survey pages: ``/s/{token}`` (question, follow-up, thank-you) and ``/u/{token}`` (unsubscribe).

Nothing is ever recorded by a GET or HEAD: mail scanners and link previews open links. A score in the query
string (a one-click button in the email) only pre-selects it; the customer's POST records it.

The pages are plain server-rendered HTML forms, so they work with JavaScript off: the scale is a group of
native radio buttons (arrow keys, Space and screen readers work as everywhere), styled by a static stylesheet.
The brand colour arrives as CSS custom properties in one small inline style that carries the response's CSP
nonce; the policy allows no script at all.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import escape
from starlette.datastructures import FormData

from hub.app import Hub
from hub.engine import SurveyPage
from hub.engine.common import hash_token
from hub.errors import BadInput
from hub.models import SCALES, SurveyKind
from hub.texts import SMILEY_KEYS, answer_label, followup_key, preferred_language, text
from hub.web.deps import HubDep, client_address, hub_of
from hub.web.protection import CSRF_COOKIE, RateLimiter, csrf_token, form_csrf_valid, new_csrf_cookie

WEB_DIR = Path(__file__).parent
STATIC_DIR = WEB_DIR / "static"
#: the longest comment accepted; the text area says so too (maxlength)
COMMENT_LIMIT = 5000
#: a score as a form or link sends it: ASCII digits only (``int()`` would also take "٣" and refuse "²")
_SCORE = re.compile(r"-?[0-9]{1,3}")

router = APIRouter(include_in_schema=False)


@cache
def static_url(name: str) -> str:
    """``/static/<name>?v=<hash of its content>``: browsers may cache it, and a new release busts the cache."""
    digest = hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()[:12]
    return f"/static/{name}?v={digest}"


templates = Jinja2Templates(
    env=Environment(
        loader=FileSystemLoader(WEB_DIR / "templates"),
        autoescape=select_autoescape(default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,  # the templates ship with the release: no stat() of every file on every page
    )
)
templates.env.globals["static"] = static_url


# --- colours --------------------------------------------------------------------------------------------------

DEFAULT_COLOUR = "#1f5fa8"
_HEX = re.compile(r"#(?:[0-9a-fA-F]{3}){1,2}")
_WHITE = (1.0, 1.0, 1.0)
_BLACK = (0.0, 0.0, 0.0)
RGB = tuple[float, float, float]


def rgb_of(colour: str) -> RGB:
    """``#rrggbb`` / ``#rgb`` -> red, green, blue from 0 to 1."""
    digits = colour.lstrip("#")
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    return (int(digits[0:2], 16) / 255, int(digits[2:4], 16) / 255, int(digits[4:6], 16) / 255)


def _hex(rgb: RGB) -> str:
    return "#" + "".join(f"{round(c * 255):02x}" for c in rgb)


def _luminance(rgb: RGB) -> float:
    def linear(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: RGB, b: RGB) -> float:
    """WCAG 2 contrast ratio of two colours, 1 to 21."""
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def _mix(rgb: RGB, other: RGB, amount: float) -> RGB:
    r, g, b = (c + (o - c) * amount for c, o in zip(rgb, other, strict=True))
    return (r, g, b)


@dataclass(frozen=True)
class Theme:
    """The page's colours, derived from one brand colour so that every pair in use passes WCAG AA.

    ``brand`` fills the chosen answer and the button; ``on_brand`` (black or white, whichever contrasts more)
    is text on it. ``ink`` is the brand darkened until it reads as text on white (4.5:1): links, focus rings.
    ``edge`` outlines brand-filled shapes where a light brand would vanish on white (3:1). ``tint`` is a pale
    hover background.
    """

    brand: str
    on_brand: str
    ink: str
    edge: str
    tint: str


@cache
def theme_for(colour: str) -> Theme:
    """The theme of a configured colour; anything but a hex colour gets the default (it goes into CSS)."""
    brand = rgb_of(colour if _HEX.fullmatch(colour) else DEFAULT_COLOUR)
    on_brand = _WHITE if contrast(brand, _WHITE) >= contrast(brand, _BLACK) else _BLACK
    ink = brand
    while contrast(ink, _WHITE) < 4.5:  # measured on the rounded colour the page will use
        ink = rgb_of(_hex(_mix(ink, _BLACK, 0.05)))
    edge = brand if contrast(brand, _WHITE) >= 3 else ink
    return Theme(_hex(brand), _hex(on_brand), _hex(ink), _hex(edge), _hex(_mix(brand, _WHITE, 0.9)))


# --- rate limits ----------------------------------------------------------------------------------------------


@dataclass
class Limits:
    """Requests per minute: answers per survey link and per client address, and page views (survey, thank-you
    and unsubscribe pages) per client address, so nobody can try tokens by the thousand. One set per app, so
    tests stay apart. The client address is the connecting one, or what a trusted proxy (``hub.trusted_proxies``)
    forwarded; a forwarded header from anyone else is ignored by the server."""

    per_token: RateLimiter
    per_client: RateLimiter
    views_per_client: RateLimiter = field(default_factory=lambda: RateLimiter(limit=120, window_seconds=60))


def limits(request: Request) -> Limits:
    state = request.app.state
    found = getattr(state, "survey_limits", None)
    if not isinstance(found, Limits):
        found = Limits(
            RateLimiter(limit=30, window_seconds=60),
            RateLimiter(limit=120, window_seconds=60),
        )
        state.survey_limits = found
    return found


def too_many(request: Request, hub: Hub) -> Response:
    """The 429 page of every limit here, saying when to come back (the limits' window is a minute)."""
    response = message(request, hub, "too_many", 429)
    response.headers["Retry-After"] = "60"
    return response


def too_many_views(request: Request, hub: Hub) -> Response | None:
    """A 429 page when this client looked up too many links in the last minute, else None."""
    if limits(request).views_per_client.allow(client_address(request)):
        return None
    return too_many(request, hub)


# --- rendering ------------------------------------------------------------------------------------------------


def content_security_policy(nonce: str, logo_url: str | None) -> str:
    """No script, no foreign frames; styles from this hub (plus the nonce'd brand colours); the logo's host."""
    images = ["'self'", "data:"]
    if logo_url:
        parts = urlsplit(logo_url)
        if parts.scheme in ("http", "https") and parts.netloc:
            images.append(f"{parts.scheme}://{parts.netloc}")
    return (
        f"default-src 'none'; style-src 'self' 'nonce-{nonce}'; img-src {' '.join(images)}; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    )


#: the headers ``secure`` sets besides the page's policy, as the bytes they are sent as
_SECURE_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
]
_SECURE_NAMES = frozenset(name for name, _value in _SECURE_HEADERS) | {b"content-security-policy"}


def secure(response: Response, policy: str) -> Response:
    """Headers every page of a survey link carries: the link is a secret, so no caching and no referrer.

    Written as raw header pairs (replacing any of the same name): every survey page goes through here, and
    setting five headers one by one through ``MutableHeaders`` costs more than the rest of a cached page."""
    kept = [pair for pair in response.raw_headers if pair[0] not in _SECURE_NAMES]
    response.raw_headers[:] = [
        *kept,
        (b"content-security-policy", policy.encode("latin-1")),
        *_SECURE_HEADERS,
    ]
    return response


def set_csrf_cookie(response: Response, request: Request, cookie: str, same_site: str = "lax") -> None:
    """The CSRF cookie (HttpOnly; Secure over https), as ``Response.set_cookie`` would write it, without
    building an ``http.cookies`` jar for one random URL-safe value on every first page of a link."""
    secure_flag = "; secure" if request.url.scheme == "https" else ""
    header = f"{CSRF_COOKIE}={cookie}; HttpOnly; Path=/; SameSite={same_site}{secure_flag}"
    response.raw_headers.append((b"set-cookie", header.encode("latin-1")))


#: stand-ins rendered where a page's per-request values go (its CSP nonce, its CSRF field): a page rendered
#: once with them is kept, and each request puts its own values in their place. Random per process, letters
#: and digits only, so escaping leaves them as they are and no configured text can contain them by chance.
_MARKS = {name: f"cxhub{secrets.token_hex(12)}{name}" for name in ("nonce", "csrf", "token")}
#: rendered pages by what they show (see ``render``); dropped whole when full, they render again on demand
_RENDERED: dict[tuple[Any, ...], str] = {}
_RENDERED_MAX = 2048


def _page_key(
    hub: Hub, name: str, lang: str, status: int, page: SurveyPage | None, context: dict[str, Any]
) -> tuple[Any, ...] | None:
    """What a page's HTML depends on besides its nonce and CSRF field, as a key to keep it under; None for a
    page that shows something of one response or request (a comment, an error), which is rendered each time.

    Only the question page is kept: it is the page every survey link opens. Everything it shows comes from
    the configuration (branding, the survey's texts) and the choice pre-selected, and all of it is in the key,
    so a changed configuration (a test's other hub) can never be served an old page.
    """
    if name != "survey.html" or page is None or context.get("error") is not None:
        return None
    branding = hub.config.hub.branding
    return (
        name,
        lang,
        status,
        page.survey_kind,
        page.question,
        page.low_label,
        page.high_label,
        context.get("selected"),
        branding.company_name,
        branding.logo_url,
        branding.colour,
    )


def _render_html(hub: Hub, name: str, lang: str, page: SurveyPage | None, context: dict[str, Any]) -> str:
    branding = hub.config.hub.branding
    context.setdefault("error", None)
    context.update(
        page=page,
        branding=branding,
        theme=theme_for(branding.colour),
        lang=lang,
        t=lambda key, **kw: text(lang, key, company=branding.company_name, **kw),
    )
    return templates.env.get_template(name).render(context)


def render(
    request: Request,
    hub: Hub,
    name: str,
    *,
    lang: str,
    status: int = 200,
    page: SurveyPage | None = None,
    **context: Any,
) -> HTMLResponse:
    """A page in ``lang``, with the brand, a CSRF field bound to the survey (when there is one) and headers.

    The question page is rendered once per survey, language and choice, and then served from memory with this
    request's nonce and CSRF field put in (see ``_page_key``).
    """
    cookie = request.cookies.get(CSRF_COOKIE) or new_csrf_cookie()
    nonce = secrets.token_urlsafe(16)
    csrf = csrf_token(hub.secret_key, cookie, page.token_hash) if page else ""
    key = _page_key(hub, name, lang, status, page, context)
    if key is None:
        html = _render_html(hub, name, lang, page, {**context, "nonce": nonce, "csrf": csrf})
    else:
        kept = _RENDERED.get(key)
        if kept is None:
            if len(_RENDERED) >= _RENDERED_MAX:
                _RENDERED.clear()
            marked = {**context, "nonce": _MARKS["nonce"], "csrf": _MARKS["csrf"], "token": _MARKS["token"]}
            kept = _RENDERED[key] = _render_html(hub, name, lang, page, marked)
        token = str(escape(context.get("token", "")))
        html = (
            kept.replace(_MARKS["nonce"], nonce).replace(_MARKS["csrf"], csrf).replace(_MARKS["token"], token)
        )
    response = HTMLResponse(html, status_code=status)
    if CSRF_COOKIE not in request.cookies:
        set_csrf_cookie(response, request, cookie)
    secure(response, content_security_policy(nonce, hub.config.hub.branding.logo_url))
    return response


def message(
    request: Request, hub: Hub, key: str, status: int, lang: str | None = None, back: str | None = None
) -> HTMLResponse:
    """A friendly one-line page (expired, closed, unknown, ...); no person known -> the browser's language."""
    language = lang or preferred_language(request.headers.get("accept-language"))
    icon = "check" if key in ("closed", "unsubscribed") else "info"
    return render(request, hub, "message.html", lang=language, status=status, key=key, icon=icon, back=back)


def _state_message(request: Request, hub: Hub, state: str, page: SurveyPage, posting: bool) -> HTMLResponse:
    """The page for an expired (410) or closed (200 to look at, 409 to a POST) survey."""
    status = 410 if state == "expired" else (409 if posting else 200)
    return message(request, hub, state, status, page.language)


# --- the question -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One answer on the scale: what it shows, what a screen reader adds, and its face (3-smiley only)."""

    value: int
    label: str
    note: str | None = None
    face: str | None = None


def options(page: SurveyPage) -> tuple[Option, ...]:
    return _options(page.survey_kind, page.language, page.low_label, page.high_label)


@lru_cache(maxsize=1024)
def _options(kind: SurveyKind, language: str, low_label: str, high_label: str) -> tuple[Option, ...]:
    """The scale of a survey in a language: the same for every link of that survey, so made once."""
    low, high = SCALES[kind]
    if kind is SurveyKind.SMILEY:
        return tuple(
            Option(v, text(language, SMILEY_KEYS[v]), face=SMILEY_KEYS[v].split(".")[1])
            for v in range(low, high + 1)
        )
    notes = {low: low_label, high: high_label}
    return tuple(Option(v, str(v), note=notes.get(v)) for v in range(low, high + 1))


def _pre_selected(page: SurveyPage, score: str | None) -> int | None:
    low, high = SCALES[page.survey_kind]
    if score is not None and _SCORE.fullmatch(score.strip()) and low <= int(score) <= high:
        return int(score)
    return page.response.rating if page.response is not None else None


def _question(
    request: Request, hub: Hub, page: SurveyPage, token: str, selected: int | None, error: str | None = None
) -> HTMLResponse:
    return render(
        request,
        hub,
        "survey.html",
        lang=page.language,
        status=400 if error else 200,
        page=page,
        token=token,
        options=options(page),
        selected=selected,
        smiley=page.survey_kind is SurveyKind.SMILEY,
        error=error,
    )


def _topics(page: SurveyPage) -> list[str]:
    return page.survey.topics_in(page.language)


def has_followup(page: SurveyPage) -> bool:
    return page.survey.has_followup(page.language)


def _followup(
    request: Request,
    hub: Hub,
    page: SurveyPage,
    token: str,
    error: str | None = None,
    comment: str | None = None,
) -> HTMLResponse:
    assert page.response is not None
    lang = page.language
    return render(
        request,
        hub,
        "followup.html",
        lang=lang,
        status=400 if error else 200,
        page=page,
        token=token,
        question=text(lang, followup_key(page.survey_kind, page.response.category)),
        answer=answer_label(lang, page.survey_kind, page.response.rating),
        topics=_topics(page),
        comment=(page.response.comment or "") if comment is None else comment,
        comment_limit=COMMENT_LIMIT,
        with_comment=page.survey.comment,
        error=error,
    )


async def show_survey(request: Request) -> Response:
    """``GET /s/{token}``: a plain route, like the POST of an answer. The two pages every survey link opens
    take nothing FastAPI would check for them (the token is any text, the query only pre-selects), so they
    skip its dependency solving and parameter validation, and its layers of middleware and routers too
    (``hub.web.survey_links`` calls them first): together a large part of a page's cost."""
    token: str = request.path_params["token"]
    hub = hub_of(request)
    score = request.query_params.get("score")
    change = request.query_params.get("change")
    if (refused := too_many_views(request, hub)) is not None:
        return refused
    state, page = await hub.engine.page_for_token(token)
    if page is None:
        return message(request, hub, "unknown", 404)
    if state != "ok":
        return _state_message(request, hub, state, page, posting=False)
    if page.response is not None and change is None:
        if not has_followup(page):
            return RedirectResponse(f"/s/{token}/thanks", status_code=303)
        return _followup(request, hub, page, token)
    return _question(request, hub, page, token, _pre_selected(page, score))


# --- answering ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """What one POST carries, checked against the survey: a rating and/or the follow-up's comment and topic."""

    rating: int | None
    comment: str | None
    topic: str | None
    error: str | None = None
    #: True when the error belongs to the scale (shown on the question), else to the follow-up
    on_scale: bool = False


def read_answer(form: FormData, page: SurveyPage) -> Answer:
    lang = page.language
    raw_score, comment, topic = form.get("score"), form.get("comment"), form.get("topic")
    rating: int | None = None
    low, high = SCALES[page.survey_kind]
    if isinstance(raw_score, str):
        raw_score = raw_score.strip()
        if not raw_score:
            return Answer(None, None, None, text(lang, "choose"), on_scale=True)
        if not _SCORE.fullmatch(raw_score) or not low <= int(raw_score) <= high:
            return Answer(None, None, None, text(lang, "out_of_range", low=low, high=high), on_scale=True)
        rating = int(raw_score)
    elif page.response is None:
        return Answer(None, None, None, text(lang, "choose"), on_scale=True)
    comment_text = comment if isinstance(comment, str) else None
    if comment_text is not None and len(comment_text) > COMMENT_LIMIT:
        return Answer(rating, comment_text, None, text(lang, "too_long", limit=COMMENT_LIMIT))
    chosen = topic if isinstance(topic, str) and topic in _topics(page) else None
    return Answer(rating, comment_text, chosen)


def _plain_answer(form: FormData) -> tuple[int | None, str | None, str | None] | None:
    """The rating, comment and topic of a POST that needs nothing of its survey to be checked before it is
    stored (a score in digits, a comment within the limit, something new), else None."""
    raw_score, comment, topic = form.get("score"), form.get("comment"), form.get("topic")
    rating: int | None = None
    if isinstance(raw_score, str):
        raw_score = raw_score.strip()
        if not _SCORE.fullmatch(raw_score):
            return None
        rating = int(raw_score)
    comment_text = comment if isinstance(comment, str) else None
    topic_text = topic if isinstance(topic, str) else None
    if comment_text is not None and len(comment_text) > COMMENT_LIMIT:
        return None
    if rating is None and not (comment_text or "").strip() and topic_text is None:
        return None
    return rating, comment_text, topic_text


async def answer_survey(request: Request) -> Response:
    """``POST /s/{token}``: the answer (a plain route, see ``show_survey``).

    An answer that is plain as posted (``_plain_answer``) with a valid CSRF field is stored at once, the link
    looked up in the transaction that stores it (``Answers.answer_link``): no read of its own before. Anything
    else, and an answer the store refuses (an unknown or expired link, a score out of range, a closed
    survey), takes the careful way, which reads the page first and answers with its page and status.
    """
    token: str = request.path_params["token"]
    hub = hub_of(request)
    rate = limits(request)
    if not rate.per_client.allow(client_address(request)) or not rate.per_token.allow(token):
        return too_many(request, hub)
    form = await request.form()
    plain = _plain_answer(form)
    if plain is not None and form_csrf_valid(hub.secret_key, request, form, hash_token(token)):
        rating, comment, topic = plain
        try:
            record = await hub.engine.answer_link(token, rating, comment=comment, topic=topic)
        except BadInput:
            pass  # nothing was stored: the careful way finds out why and says so
        else:
            survey = hub.config.surveys[hub.config.campaigns[record.campaign].survey]
            return _after_answer(token, form, survey.has_followup(record.language))
    return await _answer_carefully(request, hub, token, form)


def _after_answer(token: str, form: FormData, followup: bool) -> Response:
    """A score (first answer or a change) leads to the follow-up; the follow-up leads to the thank-you page."""
    done = "score" not in form or "comment" in form or "topic" in form or not followup
    return RedirectResponse(f"/s/{token}/thanks" if done else f"/s/{token}", status_code=303)


async def _answer_carefully(request: Request, hub: Hub, token: str, form: FormData) -> Response:
    """The page read first, then each check with its own page: unknown, expired or closed link, CSRF, the
    answer against the survey."""
    state, page = await hub.engine.page_for_token(token)
    if page is None:
        return message(request, hub, "unknown", 404)
    if state != "ok":
        return _state_message(request, hub, state, page, posting=True)
    if not form_csrf_valid(hub.secret_key, request, form, page.token_hash):
        return message(request, hub, "csrf", 403, page.language, back=f"/s/{token}")
    answer = read_answer(form, page)
    if answer.error is not None:
        if answer.on_scale or page.response is None:
            return _question(request, hub, page, token, None, answer.error)
        return _followup(request, hub, page, token, answer.error, answer.comment)
    nothing_new = answer.rating is None and not (answer.comment or "").strip() and answer.topic is None
    if nothing_new:  # an empty follow-up: the score is already stored, nothing to write back again
        return RedirectResponse(f"/s/{token}/thanks", status_code=303)
    try:
        await hub.engine.record_answer(
            page.invitation_id, answer.rating, comment=answer.comment, topic=answer.topic
        )
    except BadInput as exc:  # the survey changed between the page and the POST
        if exc.status_code == 409:  # the amend window closed
            return message(request, hub, "closed", 409, page.language)
        if exc.status_code in (404, 410):  # the campaign or invitation is gone
            return message(request, hub, "expired", 410, page.language)
        return _question(request, hub, page, token, None, str(exc))
    return _after_answer(token, form, has_followup(page))


router.add_route("/s/{token}", show_survey, methods=["GET", "HEAD"], include_in_schema=False)
router.add_route("/s/{token}", answer_survey, methods=["POST"], include_in_schema=False)


@router.api_route("/s/{token}/thanks", methods=["GET", "HEAD"], response_class=HTMLResponse)
async def thank_you(token: str, request: Request, hub: HubDep) -> Response:
    if (refused := too_many_views(request, hub)) is not None:
        return refused
    state, page = await hub.engine.page_for_token(token)
    if page is None:
        return message(request, hub, "unknown", 404)
    if page.response is None:
        if state == "ok":
            return RedirectResponse(f"/s/{token}", status_code=303)
        return _state_message(request, hub, state, page, posting=False)
    return render(request, hub, "thanks.html", lang=page.language, page=page, link=page.survey.thank_you_link)


# --- unsubscribe ----------------------------------------------------------------------------------------------


async def _unsubscribe_language(hub: Hub, token: str) -> str | None:
    _state, page = await hub.engine.page_for_token(token, purpose="unsubscribe")
    return page.language if page is not None else None


@router.api_route("/u/{token}", methods=["GET", "HEAD"], response_class=HTMLResponse)
async def confirm_unsubscribe(token: str, request: Request, hub: HubDep) -> Response:
    if (refused := too_many_views(request, hub)) is not None:
        return refused
    lang = await _unsubscribe_language(hub, token)
    if lang is None:
        return message(request, hub, "unknown", 404)
    return render(request, hub, "unsubscribe.html", lang=lang)


@router.post("/u/{token}", response_class=HTMLResponse)
async def unsubscribe(token: str, request: Request, hub: HubDep) -> Response:
    """Both the page's button and RFC 8058 one-click (``List-Unsubscribe=One-Click``) land here.

    No CSRF field: a mail client's one-click POST carries no cookie, and the unguessable token in the path
    is what authorises it; a forged POST would have to know it.
    """
    if not limits(request).per_client.allow(client_address(request)):
        return too_many(request, hub)
    if not await hub.engine.unsubscribe(token):
        return message(request, hub, "unknown", 404)
    return message(request, hub, "unsubscribed", 200, await _unsubscribe_language(hub, token))
