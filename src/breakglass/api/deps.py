"""FastAPI dependencies shared by every router: the container and the caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from breakglass.bootstrap import Container
from breakglass.domain.errors import Unauthenticated
from breakglass.domain.model import Principal

_bearer = HTTPBearer(auto_error=False)


def container(request: Request) -> Container:
    found: Container = request.app.state.container
    return found


ContainerDep = Annotated[Container, Depends(container)]

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"
RequestId = Annotated[str, Path(max_length=64, pattern=_ID)]
ExtensionId = Annotated[str, Path(max_length=64, pattern=_ID)]
ReviewId = Annotated[str, Path(max_length=64, pattern=_ID)]
TaskId = Annotated[str, Path(max_length=64, pattern=_ID)]
IncidentId = Annotated[str, Path(min_length=1, max_length=200)]
"""Path parameters, bounded at the edge: anything else is a 422 naming the field."""


def current_principal(
    request: Request,
    c: ContainerDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if creds is None or not creds.credentials:
        missing = Unauthenticated("a bearer token is required (breakglass login)",
                                  rule="identity.token_missing")
        c.record_auth_refusal(missing)
        raise missing
    who = c.authenticate(creds.credentials, "api")
    remember_caller(request, who)
    return who


def remember_caller(request: Request, who: Principal) -> None:
    """Keep the authenticated caller with the request, so a refusal of its input names it."""
    request.state.breakglass_caller = who


def caller_of(request: Request) -> Principal | None:
    """The caller authenticated for this request, if authentication has run."""
    found = getattr(request.state, "breakglass_caller", None)
    return found if isinstance(found, Principal) else None


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def metrics_scraper(
    c: ContainerDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    c.check_metrics_token(creds.credentials if creds is not None else "")


MetricsScraper = Annotated[None, Depends(metrics_scraper)]
