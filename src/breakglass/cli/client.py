"""The CLI's HTTP client: the CLI is a client of the API, like any other."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from breakglass.domain import errors
from breakglass.identity.device_flow import (
    DeviceFlowClient,
    TokenSet,
    TokenStore,
    default_token_path,
)

DEFAULT_SERVER = "http://127.0.0.1:8080"


def token_store() -> TokenStore:
    return TokenStore(default_token_path())


def save_token(server: str, token: dict[str, Any]) -> Path:
    store = token_store()
    store.save({"server": server, **token})
    return store.path


def clear_token() -> bool:
    return token_store().clear()


def _stored_access_token() -> str | None:
    """The stored access token, refreshed first when it is about to expire."""
    stored = token_store().load()
    if stored is None:
        return None
    tokens = TokenSet.from_json(stored)
    issuer, client_id = stored.get("issuer"), stored.get("client_id")
    now = datetime.now(UTC)
    if tokens.refresh_token and issuer and client_id and tokens.expires_within(
        timedelta(seconds=60), now
    ):
        with httpx.Client(timeout=10) as http:
            fresh = DeviceFlowClient(issuer, client_id, http).refresh(tokens.refresh_token)
        token_store().save({**stored, **fresh.to_json(),
                            "refresh_token": fresh.refresh_token or tokens.refresh_token})
        return fresh.access_token
    return tokens.access_token


_BY_STATUS: dict[int, type[errors.BreakglassError]] = {
    401: errors.Unauthenticated,
    403: errors.PolicyRefused,
    404: errors.NotFound,
    409: errors.Conflict,
    422: errors.InvalidInput,
    502: errors.TargetError,
    503: errors.AuditError,
}


class ApiClient:
    def __init__(self, server: str | None = None, token: str | None = None) -> None:
        self.server = (server or os.environ.get("BREAKGLASS_SERVER") or DEFAULT_SERVER).rstrip("/")
        self._token = token or os.environ.get("BREAKGLASS_TOKEN")
        if self._token is None:
            self._token = _stored_access_token()
        self._http = httpx.Client(base_url=self.server, timeout=30)

    def _send(self, method: str, path: str, body: dict[str, Any] | None = None,
              params: dict[str, Any] | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        try:
            response = self._http.request(method, path, json=body, params=params,
                                          headers=headers)
        except httpx.HTTPError as exc:
            raise errors.BreakglassError(
                f"cannot reach the broker at {self.server}: {type(exc).__name__}"
            ) from exc
        if response.status_code >= 400:
            raise _problem(response)
        return response

    def raw(self, method: str, path: str) -> bytes:
        return self._send(method, path).content

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             params: dict[str, Any] | None = None) -> Any:
        return self._send(method, path, body, params).json()


def _problem(response: httpx.Response) -> errors.BreakglassError:
    try:
        data = response.json()
        detail = str(data.get("detail") or data.get("title") or response.reason_phrase)
        rule = data.get("rule")
    except ValueError:
        detail, rule = f"HTTP {response.status_code}", None
    cls = _BY_STATUS.get(response.status_code, errors.BreakglassError)
    if cls is errors.CatalogError:
        cls = errors.BreakglassError
    return cls(detail, rule=rule) if rule else cls(detail)
