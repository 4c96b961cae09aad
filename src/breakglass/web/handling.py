"""Refusals become a page with a red banner, never a stack trace or problem+json."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute

from breakglass.api.problems import STATUS, record_input_refusal, validation_refusal
from breakglass.domain.errors import BreakglassError, InvalidInput, Unauthenticated
from breakglass.web.session import LoginRequired, clear_session, render


def status_of(exc: BreakglassError) -> int:
    return next((code for cls, code in STATUS if isinstance(exc, cls)), 500)


def banner_page(request: Request, exc: BreakglassError) -> Response:
    status = status_of(exc)
    if isinstance(exc, Unauthenticated):
        response = render(request, "login.html", 401, error=exc, who=None,
                          users=_dev_users(request))
        clear_session(response)
        return response
    return render(request, "refused.html", status, error=exc, who=None)


def _dev_users(request: Request) -> list[str]:
    c = request.app.state.container
    return sorted(c.loaded.catalog.directory) if c.dev_issuer is not None else []


class WebRoute(APIRoute):
    """A route whose domain errors render as HTML with the error's reason and rule."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except LoginRequired:
                return RedirectResponse("/ui/login", status_code=303)
            except InvalidInput as exc:
                await record_input_refusal(request, exc)
                return banner_page(request, exc)
            except BreakglassError as exc:
                return banner_page(request, exc)
            except RequestValidationError as exc:
                refused = validation_refusal(exc)
                await record_input_refusal(request, refused)
                return render(request, "refused.html", 422, error=refused, who=None)

        return guarded
