"""RFC 9457 problem+json: the one place errors become HTTP responses."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from breakglass.api.deps import caller_of
from breakglass.domain import errors

STATUS: list[tuple[type[errors.BreakglassError], int]] = [
    (errors.PolicyRefused, 403),
    (errors.NotFound, 404),
    (errors.InvalidInput, 422),
    (errors.Conflict, 409),
    (errors.Unauthenticated, 401),
    (errors.CatalogError, 500),
    (errors.TargetError, 502),
    (errors.AuditError, 503),
]
MEDIA_TYPE = "application/problem+json"


def problem(status: int, title: str, detail: str, rule: str, instance: str) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="breakglass"'} if status == 401 else None
    return JSONResponse(
        {
            "type": f"https://breakglass.dev/problems/{rule}",
            "title": title,
            "status": status,
            "detail": detail,
            "rule": rule,
            "instance": instance,
        },
        status_code=status,
        media_type=MEDIA_TYPE,
        headers=headers,
    )


def validation_refusal(exc: RequestValidationError) -> errors.InvalidInput:
    """A schema refusal as the domain's error: where and what, never the value sent."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{loc}: {err.get('msg')}")
    return errors.InvalidInput("; ".join(parts)[:2000], rule="input.invalid")


async def record_input_refusal(request: Request, exc: errors.InvalidInput) -> None:
    """Every input refusal is an audit event (``api:input:refused``), within the refusal
    budget; written off the event loop, since it is a database write."""
    container = request.app.state.container
    await run_in_threadpool(container.record_input_refusal, exc, caller_of(request),
                            request.method, request.url.path)


def install(app: FastAPI) -> None:
    @app.exception_handler(errors.BreakglassError)
    async def _domain(request: Request, exc: errors.BreakglassError) -> JSONResponse:
        status = next((code for cls, code in STATUS if isinstance(exc, cls)), 500)
        if isinstance(exc, errors.InvalidInput):
            await record_input_refusal(request, exc)
        return problem(status, type(exc).__name__, exc.message, exc.rule, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        refused = validation_refusal(exc)
        await record_input_refusal(request, refused)
        return problem(422, "InvalidInput", refused.message, refused.rule, request.url.path)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        return problem(exc.status_code, "HTTPError", str(exc.detail), "http", request.url.path)
