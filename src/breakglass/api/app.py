"""The HTTP API (FastAPI), versioned under ``/v1``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Response
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy import text
from starlette.types import ASGIApp, Receive, Scope, Send

from breakglass import __version__
from breakglass.api import problems
from breakglass.api.deps import ContainerDep, CurrentPrincipal, IncidentId, RequestId, _bearer
from breakglass.api.routes_audit import router as audit_router
from breakglass.api.routes_extensions import router as extensions_router
from breakglass.api.routes_ops import router as ops_router
from breakglass.api.schemas import (
    Credentials,
    Decision,
    DevLogin,
    EventOut,
    NewRequest,
    RequestOut,
    Revocation,
    TokenOut,
)
from breakglass.bootstrap import Container
from breakglass.domain.durations import parse_duration
from breakglass.domain.errors import NotFound
from breakglass.domain.events import serving
from breakglass.web.routes import router as web_router

v1 = APIRouter(prefix="/v1")


@v1.post("/requests", status_code=201, response_model=RequestOut)
def create_request(body: NewRequest, who: CurrentPrincipal, c: ContainerDep) -> RequestOut:
    ttl = parse_duration(body.ttl) if body.ttl is not None else None
    view = c.broker.request_access(
        who, body.roles, incident=body.incident, reason=body.reason, ttl=ttl,
        justification=body.justification, runbook=body.runbook, public_key=body.public_key,
        workload=body.workload,
    )
    return RequestOut.of(view)


@v1.get("/requests", response_model=list[RequestOut])
def list_requests(
    who: CurrentPrincipal,
    c: ContainerDep,
    state: Annotated[str | None, Query(max_length=20)] = None,
    incident: Annotated[str | None, Query(max_length=200)] = None,
    mine: bool = False,
) -> list[RequestOut]:
    views = c.broker.search(state=state, incident=incident,
                            requester_subject=who.subject_id if mine else None)
    return [RequestOut.of(v) for v in views]


@v1.get("/requests/{request_id}", response_model=RequestOut)
def show_request(request_id: RequestId, who: CurrentPrincipal, c: ContainerDep) -> RequestOut:
    del who
    return RequestOut.of(c.broker.view(request_id))


@v1.post("/requests/{request_id}/approvals", response_model=RequestOut)
def approve(request_id: RequestId, body: Decision,
            who: CurrentPrincipal, c: ContainerDep) -> RequestOut:
    return RequestOut.of(c.broker.approve(who, request_id, body.comment))


@v1.post("/requests/{request_id}/denials", response_model=RequestOut)
def deny(request_id: RequestId, body: Decision,
         who: CurrentPrincipal, c: ContainerDep) -> RequestOut:
    return RequestOut.of(c.broker.deny(who, request_id, body.comment))


@v1.post("/requests/{request_id}/cancellation", response_model=RequestOut)
def cancel(request_id: RequestId, body: Decision,
           who: CurrentPrincipal, c: ContainerDep) -> RequestOut:
    return RequestOut.of(c.broker.cancel(who, request_id, body.comment))


@v1.post("/requests/{request_id}/revocations", response_model=RequestOut)
def revoke(
    request_id: RequestId, body: Revocation, who: CurrentPrincipal, c: ContainerDep
) -> RequestOut:
    return RequestOut.of(c.broker.revoke(who, request_id, body.reason))


@v1.post("/requests/{request_id}/credentials", response_model=Credentials)
def credentials(
    request_id: RequestId, who: CurrentPrincipal, c: ContainerDep, response: Response
) -> Credentials:
    found = c.broker.credentials(who, request_id)
    response.headers["Cache-Control"] = "no-store"
    view = c.broker.view(request_id)
    return Credentials(request_id=request_id, expires_at=view.request.expires_at,
                       credentials=found)


@v1.get("/incidents/{incident}/timeline", response_model=list[EventOut])
def timeline(incident: IncidentId, who: CurrentPrincipal, c: ContainerDep) -> list[EventOut]:
    del who
    return [EventOut.of(e) for e in c.broker.timeline(incident)]


@v1.post("/incidents/{incident}/close")
def close_incident(incident: IncidentId, who: CurrentPrincipal, c: ContainerDep) -> dict[str, Any]:
    """Revoke every active grant of the incident at once (both tracks)."""
    return {"incident": incident, "revoked": c.broker.close_incident(who, incident)}


@v1.post("/hooks/incidents/{incident}/closed")
def incident_closed_hook(
    incident: IncidentId, c: ContainerDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> dict[str, Any]:
    """The same, for incident tools: authenticated by the shared hook secret."""
    c.check_hook_secret(creds.credentials if creds else "")
    return {"incident": incident,
            "revoked": c.broker.revoker.close_incident(incident, "incident-hook")}


@v1.get("/inventory")
def inventory(
    who: CurrentPrincipal, c: ContainerDep,
    target: Annotated[str | None, Query(max_length=100)] = None,
) -> list[dict[str, str]]:
    """Standing privileges found on the targets (superusers, +@all users, long-lived keys)."""
    return [vars_of(p) for p in c.broker.inventory(who, target)]


def vars_of(found: Any) -> dict[str, str]:
    return {"target": found.target, "subject": found.subject, "privilege": found.privilege,
            "detail": found.detail}


@v1.get("/catalog")
def catalog(who: CurrentPrincipal, c: ContainerDep) -> dict[str, Any]:
    del who
    cat = c.loaded.catalog
    return {
        "organization": cat.organization,
        "reason_codes": cat.reason_codes,
        "incident_pattern": cat.incident.id_pattern,
        "zones": {z: {"description": v.description,
                      "default_ttl": int(v.default_ttl.total_seconds()),
                      "max_ttl": int(v.max_ttl.total_seconds()), "approvals": v.approvals}
                  for z, v in cat.zones.items()},
        "roles": {n: {"zone": r.zone, "target": r.target, "description": r.description,
                      "environment": cat.targets[r.target].environment}
                  for n, r in cat.roles.items()},
        "runbooks": {k: {"title": v.title, "roles": v.roles} for k, v in cat.runbooks.items()},
    }


@v1.get("/auth/config")
def auth_config(c: ContainerDep) -> dict[str, Any]:
    """What a client needs to log in: the issuer and the CLI's client ID (no secrets)."""
    identity = c.loaded.catalog.identity
    return {
        "dev": c.dev_issuer is not None,
        "issuer": c.dev_issuer.issuer if c.dev_issuer else identity.issuer,
        "client_id": identity.client_id or "breakglass-cli",
        "audience": identity.audience,
    }


@v1.post("/dev/token", response_model=TokenOut)
def dev_token(body: DevLogin, c: ContainerDep) -> TokenOut:
    """Local tokens for the catalog's directory; exists only on a ``--dev`` server."""
    if c.dev_issuer is None:
        raise NotFound("dev login is only available on a server started with --dev",
                       rule="identity.dev_disabled")
    token, ttl = c.dev_login(body.username)
    return TokenOut(access_token=token, expires_in=ttl)


class CallerAddress:
    """ASGI middleware: while a request is served, the events it causes carry the client's
    address (:func:`breakglass.domain.events.serving`), the one uvicorn reports (the
    client's own behind a proxy trusted with ``--forwarded-allow-ips``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client") if scope["type"] == "http" else None
        with serving(str(client[0]) if client else None):
            await self.app(scope, receive, send)


def create_app(c: Container) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        del app
        c.start_background()
        try:
            yield
        finally:
            c.stop_background()

    app = FastAPI(title="breakglass", version=__version__, lifespan=lifespan,
                  description="Emergency access broker for cloud AI operations")
    app.state.container = c
    app.add_middleware(CallerAddress)
    problems.install(app)
    app.include_router(v1)
    app.include_router(audit_router)

    app.include_router(ops_router)

    app.include_router(extensions_router)
    app.include_router(web_router)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz(response: Response) -> dict[str, str]:
        try:
            with c.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception:  # noqa: BLE001 - any database failure means not ready
            response.status_code = 503
            return {"status": "database unavailable"}
        return {"status": "ready"}

    return app
