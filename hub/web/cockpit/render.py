"""One way to render a cockpit page: the layout's navigation, the user, the language, the CSRF field, and the
security headers every admin page carries."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse

from hub.app import Hub
from hub.web.cockpit.access import CSRF_SCOPE, User, has_session, slide
from hub.web.cockpit.i18n import LANGUAGE_COOKIE, LANGUAGE_NAMES, page_language, translator
from hub.web.protection import CSRF_COOKIE, csrf_token, new_csrf_cookie
from hub.web.survey import secure, set_csrf_cookie, templates

PAGE_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self'; script-src 'self'; frame-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
ONE_YEAR = 365 * 24 * 3600


def render(
    request: Request, hub: Hub, name: str, user: User | None = None, status: int = 200, **context: Any
) -> HTMLResponse:
    """Render ``name`` (a template under ``admin/``) for ``user`` (None on the login page)."""
    cookie = request.cookies.get(CSRF_COOKIE) or new_csrf_cookie()
    language = page_language(request)
    context.setdefault("error", None)
    context.update(
        csrf=csrf_token(hub.secret_key, cookie, CSRF_SCOPE),
        user=user,
        logout=user is not None and has_session(request),
        demo=hub.config.hub.demo,
        lang=language,
        languages=LANGUAGE_NAMES,
        _=translator(language),
        path=request.url.path,
    )
    response = templates.TemplateResponse(request, name, context, status_code=status)
    secure_cookie = request.url.scheme == "https"
    if CSRF_COOKIE not in request.cookies:
        set_csrf_cookie(response, request, cookie, same_site="strict")
    if request.query_params.get("lang") == language and request.cookies.get(LANGUAGE_COOKIE) != language:
        response.set_cookie(
            LANGUAGE_COOKIE, language, max_age=ONE_YEAR, path="/admin", samesite="lax", secure=secure_cookie
        )
    slide(response, request, hub)
    secure(response, PAGE_POLICY)
    return response
