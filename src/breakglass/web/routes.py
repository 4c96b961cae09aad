"""The web page's routes: log in, request, approve, watch grants, read the timeline."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from breakglass.api.deps import ContainerDep
from breakglass.bootstrap import Container
from breakglass.domain.durations import parse_duration
from breakglass.domain.errors import BreakglassError, NotFound, Unauthenticated
from breakglass.domain.model import Principal
from breakglass.notify.operations import Operations
from breakglass.web.handling import WebRoute, status_of
from breakglass.web.session import (
    SESSION_COOKIE,
    Csrf,
    WebPrincipal,
    clear_session,
    render,
    set_cookie,
)

router = APIRouter(prefix="/ui", route_class=WebRoute, include_in_schema=False)

Text = Annotated[str, Form(max_length=4000)]
Short = Annotated[str, Form(max_length=200)]
Comment = Annotated[str, Form(max_length=4000)]


def _see(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _catalog(c: Container) -> dict[str, Any]:
    cat = c.loaded.catalog
    return {"roles": cat.roles, "zones": cat.zones, "reasons": cat.reason_codes,
            "runbooks": cat.runbooks, "pattern": cat.incident.id_pattern,
            "organization": cat.organization}


def _done(c: Container, request_id: str | None) -> Any:
    if not request_id:
        return None
    try:
        return c.broker.view(request_id)
    except NotFound:
        return None


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, c: ContainerDep) -> Response:
    users = sorted(c.loaded.catalog.directory) if c.dev_issuer is not None else []
    return render(request, "login.html", users=users, who=None, error=None)


@router.post("/login")
def login(request: Request, _: Csrf, c: ContainerDep, username: Short = "",
          token: Annotated[str, Form(max_length=20000)] = "") -> Response:
    max_age: int | None = None
    if c.dev_issuer is not None and username:
        token, max_age = c.dev_login(username)
    else:
        token = token.strip()
        if not token:
            missing = Unauthenticated("paste the access_token that breakglass login saved in "
                                      "~/.config/breakglass/token.json",
                                      rule="identity.token_missing")
            c.record_auth_refusal(missing)
            raise missing
        c.authenticate(token, "web")
    response = _see("/ui/")
    set_cookie(request, response, SESSION_COOKIE, token, max_age)
    return response


@router.post("/logout")
def logout(_: Csrf) -> Response:
    response = _see("/ui/login")
    clear_session(response)
    return response


def _index(request: Request, c: Container, who: Principal, status: int = 200,
           error: BreakglassError | None = None, form: dict[str, Any] | None = None,
           done: str | None = None) -> Response:
    mine = c.broker.search(requester_subject=who.subject_id)
    mine.sort(key=lambda v: v.request.created_at, reverse=True)
    return render(request, "index.html", status, who=who, cat=_catalog(c), mine=mine,
                  error=error, form=form or {}, done=_done(c, done))


@router.get("/", response_class=HTMLResponse)
def index(request: Request, who: WebPrincipal, c: ContainerDep,
          done: Annotated[str | None, Query(max_length=40)] = None) -> Response:
    return _index(request, c, who, done=done)


@router.post("/requests")
def create_request(request: Request, _: Csrf, who: WebPrincipal, c: ContainerDep,
                   incident: Short, reason: Short,
                   roles: Annotated[list[str] | None, Form()] = None,
                   ttl: Short = "", justification: Text = "", runbook: Short = "") -> Response:
    form = {"roles": roles or [], "incident": incident, "reason": reason, "ttl": ttl,
            "justification": justification, "runbook": runbook}
    try:
        view = c.broker.request_access(
            who, roles or [], incident=incident.strip(), reason=reason,
            ttl=parse_duration(ttl) if ttl.strip() else None,
            justification=justification, runbook=runbook or None)
    except Unauthenticated:
        raise
    except BreakglassError as exc:
        return _index(request, c, who, status_of(exc), exc, form)
    return _see(f"/ui/?done={view.request.id}")


@router.get("/approvals", response_class=HTMLResponse)
def approvals(request: Request, who: WebPrincipal, c: ContainerDep,
              done: Annotated[str | None, Query(max_length=40)] = None) -> Response:
    pending = c.broker.search(state="pending")
    pending.sort(key=lambda v: v.request.created_at)
    return render(request, "approvals.html", who=who, pending=pending, done=_done(c, done),
                  error=None)


@router.post("/requests/{request_id}/approve")
def approve(request_id: str, _: Csrf, who: WebPrincipal, c: ContainerDep,
            comment: Comment = "") -> Response:
    view = c.broker.approve(who, request_id, comment)
    return _see(f"/ui/approvals?done={view.request.id}")


@router.post("/requests/{request_id}/deny")
def deny(request_id: str, _: Csrf, who: WebPrincipal, c: ContainerDep,
         comment: Comment = "") -> Response:
    view = c.broker.deny(who, request_id, comment)
    return _see(f"/ui/approvals?done={view.request.id}")


@router.get("/grants", response_class=HTMLResponse)
def grants(request: Request, who: WebPrincipal, c: ContainerDep,
           done: Annotated[str | None, Query(max_length=40)] = None) -> Response:
    live = [v for state in ("activating", "active", "revoking")
            for v in c.broker.search(state=state)]
    live.sort(key=lambda v: (not v.request.requested_by(who), v.request.created_at))
    return render(request, "grants.html", who=who, live=live, done=_done(c, done),
                  error=None)


@router.post("/requests/{request_id}/revoke")
def revoke(request_id: str, _: Csrf, who: WebPrincipal, c: ContainerDep,
           reason: Comment = "") -> Response:
    view = c.broker.revoke(who, request_id, reason)
    return _see(f"/ui/grants?done={view.request.id}")


@router.get("/timeline", response_class=HTMLResponse)
def timeline(request: Request, who: WebPrincipal, c: ContainerDep,
             incident: Annotated[str, Query(max_length=200)] = "") -> Response:
    events = c.broker.timeline(incident.strip()) if incident.strip() else []
    return render(request, "timeline.html", who=who, incident=incident, events=events,
                  error=None)


def _ops(c: Container) -> Operations:
    if c.operations is None:
        raise NotFound("reviews and metrics are not running on this broker",
                       rule="operations.disabled")
    return c.operations


@router.get("/reviews", response_class=HTMLResponse)
def reviews(request: Request, who: WebPrincipal, c: ContainerDep,
            state: Annotated[str, Query(max_length=20)] = "",
            mine: bool = False) -> Response:
    found = _ops(c).reviews.search(state=state or None, reviewer=who.name if mine else None)
    return render(request, "reviews.html", who=who, reviews=found, now=c.clock.now(),
                  state=state, mine=mine, error=None)


@router.get("/metrics", response_class=HTMLResponse)
def metrics(request: Request, who: WebPrincipal, c: ContainerDep,
            since: Annotated[str, Query(max_length=40)] = "7d") -> Response:
    _ops(c)
    return render(request, "metrics.html", who=who, since=since, error=None)


@router.get("/metrics/report", response_class=HTMLResponse)
def metrics_report(who: WebPrincipal, c: ContainerDep,
                   since: Annotated[str, Query(max_length=40)] = "7d") -> Response:
    """The same HTML report as ``breakglass report --format html``, for the frame."""
    del who
    report = _ops(c).reports.report(since or None)
    from breakglass.metrics.html import render_html  # noqa: PLC0415 - matplotlib is heavy

    response = HTMLResponse(render_html(report))
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; img-src data:; style-src 'unsafe-inline'; frame-ancestors 'self'")
    response.headers["Cache-Control"] = "no-store"
    return response
