"""The CLI's HTTP client: the CLI is a client of the API, like any other."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx

from breakglass.domain import errors

DEFAULT_SERVER = "http://127.0.0.1:8080"


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "breakglass"


def token_path() -> Path:
    return config_dir() / "token.json"


def save_token(server: str, token: dict[str, Any]) -> Path:
    path = token_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"server": server, **token}, fh)
    os.replace(tmp, path)
    return path


def load_token() -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(token_path().read_text())
    except (OSError, ValueError):
        return None
    return data


def clear_token() -> bool:
    try:
        token_path().unlink()
    except FileNotFoundError:
        return False
    return True


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
            stored = load_token()
            if stored is not None:
                self._token = stored.get("access_token")
        self._http = httpx.Client(base_url=self.server, timeout=30)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             params: dict[str, Any] | None = None) -> Any:
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
        return response.json()


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
