"""FastAPI dependencies shared by every router: the container and the caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from breakglass.bootstrap import Container
from breakglass.domain.errors import Unauthenticated
from breakglass.domain.model import Principal

_bearer = HTTPBearer(auto_error=False)


def container(request: Request) -> Container:
    found: Container = request.app.state.container
    return found


ContainerDep = Annotated[Container, Depends(container)]


def client_address(request: Request) -> str | None:
    """The caller's address (behind a proxy, the one the server was told to trust)."""
    return request.client.host if request.client is not None else None


def current_principal(
    request: Request,
    c: ContainerDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    source = client_address(request)
    if creds is None or not creds.credentials:
        missing = Unauthenticated("a bearer token is required (breakglass login)",
                                  rule="identity.token_missing")
        c.record_auth_refusal(missing, source)
        raise missing
    return c.authenticate(creds.credentials, "api", source)


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def metrics_scraper(
    request: Request,
    c: ContainerDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    c.check_metrics_token(creds.credentials if creds is not None else "",
                          client_address(request))


MetricsScraper = Annotated[None, Depends(metrics_scraper)]
