"""Cookies, CSRF protection and page rendering of the web page.

The page uses the API's bearer tokens, kept in an HttpOnly, SameSite=Strict
cookie. Every state-changing form carries a CSRF token bound to the browser's
session: an HMAC, under a key derived from the broker's secret key, of the
session cookie (or, before login, of a random pre-session cookie). It is
recomputed from the request's own cookies and compared in constant time, so a
cookie and field pair planted from another session never matches.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from breakglass.api.deps import ContainerDep, remember_caller
from breakglass.domain.display import visible
from breakglass.domain.errors import PolicyRefused
from breakglass.domain.model import Principal

SESSION_COOKIE = "bg_session"
CSRF_COOKIE = "bg_csrf"
COOKIE_PATH = "/ui"

def _shown(value: Any) -> Any:
    """Every ``{{ value }}`` of a page: people's text with its hidden characters shown
    (:func:`breakglass.domain.display.visible`), then HTML-escaped by autoescape.
    An editable field's own text (``{{ x | e }}``, a form value given back after a
    refusal) keeps its line breaks: it is escaped HTML already."""
    return visible(value) if isinstance(value, str) and not isinstance(value, Markup) else value


_env = Environment(loader=PackageLoader("breakglass.web", "templates"),
                   autoescape=select_autoescape(default=True, default_for_string=True),
                   finalize=_shown)


def _moment(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _iso(value: datetime | None) -> str:
    return value.astimezone(UTC).isoformat() if value is not None else ""


_env.filters["moment"] = _moment
_env.filters["iso"] = _iso


class LoginRequired(Exception):
    """No session cookie: the caller is sent to the login page."""


def _browser_id(request: Request) -> str:
    """This browser's random pre-session value, or a new one (set by :func:`render`)."""
    found = request.cookies.get(CSRF_COOKIE, "")
    return found if len(found) >= 32 else secrets.token_urlsafe(32)


def csrf_token(request: Request, browser_id: str | None = None) -> str:
    """The CSRF token of this request's session (or, before login, of its browser)."""
    key: bytes = request.app.state.container.form_key
    session = request.cookies.get(SESSION_COOKIE)
    bound = f"session\0{session}" if session else f"browser\0{browser_id or _browser_id(request)}"
    return hmac.new(key, bound.encode(), hashlib.sha256).hexdigest()


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """One page, with a fresh CSP nonce for its inline script and the CSRF cookie."""
    nonce = secrets.token_urlsafe(16)
    browser = _browser_id(request)
    html = _env.get_template(template).render(
        request=request, csrf=csrf_token(request, browser), nonce=nonce, **context)
    response = HTMLResponse(html, status_code=status)
    response.headers["Content-Security-Policy"] = (
        f"default-src 'self'; script-src 'nonce-{nonce}'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; frame-ancestors 'self'; form-action 'self'; base-uri 'none'")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    if request.cookies.get(CSRF_COOKIE) != browser:
        set_cookie(request, response, CSRF_COOKIE, browser)
    return response


def set_cookie(request: Request, response: HTMLResponse | RedirectResponse, name: str,
               value: str, max_age: int | None = None) -> None:
    response.set_cookie(name, value, max_age=max_age, path=COOKIE_PATH, httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")


def clear_session(response: HTMLResponse | RedirectResponse) -> None:
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")


def check_csrf(request: Request, csrf: Annotated[str, Form(max_length=200)] = "") -> None:
    """Refuse a form whose hidden CSRF field is not the token of this request's session."""
    has_browser_id = len(request.cookies.get(CSRF_COOKIE, "")) >= 32
    bound = request.cookies.get(SESSION_COOKIE) or has_browser_id
    expected = csrf_token(request).encode()
    if not bound or not csrf or not hmac.compare_digest(expected, csrf.encode()):
        raise PolicyRefused("the form is missing its CSRF token or it does not match; "
                            "reload the page and try again", rule="web.csrf")


def web_principal(request: Request, c: ContainerDep) -> Principal:
    """The caller, from the session cookie, verified exactly like an API bearer token."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise LoginRequired
    who = c.authenticate(token, "web")
    remember_caller(request, who)
    return who


Csrf = Annotated[None, Depends(check_csrf)]
WebPrincipal = Annotated[Principal, Depends(web_principal)]
