"""How ``breakglass login`` gets a token from the identity provider.

* :meth:`DeviceFlowClient.start` / :meth:`DeviceFlowClient.poll`: the OAuth
  device authorization grant (RFC 8628). Works over SSH and on a phone.
* :meth:`DeviceFlowClient.authorization_code_pkce`: the fallback for a
  provider without device flow, an authorization code with PKCE (S256)
  received on a loopback port of 127.0.0.1 (RFC 8252), with a state check.
* :meth:`DeviceFlowClient.refresh`: a new access token from a refresh token.

:class:`TokenStore` keeps the result in one JSON file readable by its owner
only (``0600`` in a ``0700`` directory).

Every failure raises :class:`~breakglass.domain.errors.Unauthenticated`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx

from breakglass.domain.errors import Unauthenticated
from breakglass.identity.jwks import Clock, discover, utcnow

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
DEFAULT_SCOPE = "openid groups offline_access"
_EXPIRED = "the login code expired; run `breakglass login` again"


def _refuse(reason: str, rule: str) -> Unauthenticated:
    return Unauthenticated(reason, rule=f"identity.{rule}")


@dataclass(frozen=True, slots=True)
class DeviceAuthorization:
    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str
    interval: int
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class TokenSet:
    access_token: str
    refresh_token: str | None = None
    id_token: str | None = None
    expires_at: datetime | None = None

    def expires_within(self, margin: timedelta, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at - margin <= now

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["expires_at"] = self.expires_at.isoformat() if self.expires_at else None
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TokenSet:
        try:
            expires_at = data.get("expires_at")
            return cls(
                access_token=str(data["access_token"]),
                refresh_token=data.get("refresh_token"),
                id_token=data.get("id_token"),
                expires_at=datetime.fromisoformat(expires_at) if expires_at else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise _refuse("the stored login is unreadable; log in again", "token_store") from exc


class DeviceFlowClient:
    """A public OAuth client of one issuer, as the CLI uses it."""

    def __init__(
        self,
        issuer: str,
        client_id: str,
        http: httpx.Client,
        *,
        clock: Clock = utcnow,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.issuer = issuer
        self.client_id = client_id
        self._http = http
        self._clock = clock
        self._sleep = sleep
        self._metadata: dict[str, Any] | None = None

    def endpoint(self, name: str) -> str:
        if self._metadata is None:
            self._metadata = discover(self._http, self.issuer)
        url = self._metadata.get(name)
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise _refuse(f"the identity provider offers no {name}", "login_unsupported")
        return url

    def start(self, scope: str = DEFAULT_SCOPE, **extra: str) -> DeviceAuthorization:
        """Ask for a user code; the user confirms it at ``verification_uri_complete``."""
        body = self._post(
            "device_authorization_endpoint", {"client_id": self.client_id, "scope": scope, **extra}
        )
        try:
            uri = str(body["verification_uri"])
            return DeviceAuthorization(
                device_code=str(body["device_code"]),
                user_code=str(body["user_code"]),
                verification_uri=uri,
                verification_uri_complete=str(body.get("verification_uri_complete") or uri),
                interval=max(1, int(body.get("interval", 5))),
                expires_at=self._clock() + timedelta(seconds=int(body["expires_in"])),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise _refuse("malformed device authorization response", "login_failed") from exc

    def poll(self, authorization: DeviceAuthorization) -> TokenSet:
        """Wait until the user confirmed (or refused, or the code expired)."""
        interval = authorization.interval
        while True:
            if self._clock() >= authorization.expires_at:
                raise _refuse(_EXPIRED, "login_expired")
            answer = self._token_request(
                {"grant_type": DEVICE_GRANT, "device_code": authorization.device_code}
            )
            if isinstance(answer, TokenSet):
                return answer
            if answer == "slow_down":
                interval += 5
            elif answer == "expired_token":
                raise _refuse(_EXPIRED, "login_expired")
            elif answer == "access_denied":
                raise _refuse("the login was refused at the identity provider", "access_denied")
            elif answer != "authorization_pending":
                raise _refuse(f"the identity provider refused the login: {answer}", "login_failed")
            self._sleep(interval)

    def refresh(self, refresh_token: str, scope: str | None = None) -> TokenSet:
        data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        answer = self._token_request(data | ({"scope": scope} if scope else {}))
        if not isinstance(answer, TokenSet):
            raise _refuse(
                f"the session cannot be refreshed ({answer}); log in again", "refresh_failed"
            )
        if answer.refresh_token is None:
            return TokenSet(answer.access_token, refresh_token, answer.id_token, answer.expires_at)
        return answer

    def authorization_code_pkce(
        self,
        open_browser: Callable[[str], object],
        *,
        scope: str = DEFAULT_SCOPE,
        timeout: float = 300,
        redirect_path: str = "/callback",
    ) -> TokenSet:
        """Log in through a browser that comes back to ``http://127.0.0.1:<port>``."""
        authorize = self.endpoint("authorization_endpoint")
        verifier = secrets.token_urlsafe(48)
        challenge = hashlib.sha256(verifier.encode("ascii")).digest()
        state = secrets.token_urlsafe(24)
        with _LoopbackReceiver(redirect_path) as receiver:
            redirect_uri = f"http://127.0.0.1:{receiver.port}{redirect_path}"
            query = {
                "client_id": self.client_id,
                "response_type": "code",
                "scope": scope,
                "redirect_uri": redirect_uri,
                "state": state,
                "code_challenge": base64.urlsafe_b64encode(challenge).rstrip(b"=").decode(),
                "code_challenge_method": "S256",
            }
            open_browser(f"{authorize}?{urllib.parse.urlencode(query)}")
            params = receiver.wait(timeout)
        if not secrets.compare_digest(params.get("state", ""), state):
            raise _refuse("the login answer does not match this login (state)", "login_failed")
        if "iss" in params and params["iss"] != self.issuer:
            raise _refuse("the login answer comes from another issuer", "login_failed")
        if "error" in params:
            raise _refuse(
                f"the identity provider refused the login: {params['error']}", "access_denied"
            )
        grant = {"grant_type": "authorization_code", "code": params.get("code", "")}
        answer = self._token_request(
            grant | {"redirect_uri": redirect_uri, "code_verifier": verifier}
        )
        if not isinstance(answer, TokenSet):
            raise _refuse(f"the identity provider refused the login: {answer}", "login_failed")
        return answer

    def _token_request(self, data: dict[str, str]) -> TokenSet | str:
        """Tokens, or the OAuth ``error`` code of a refusal."""
        response = self._send("token_endpoint", data | {"client_id": self.client_id})
        body = _json_body(response)
        if response.status_code != 200:
            return str(body.get("error", f"HTTP {response.status_code}"))
        access_token, expires_in = body.get("access_token"), body.get("expires_in")
        if not isinstance(access_token, str) or not access_token:
            raise _refuse("the identity provider answered without an access token", "login_failed")
        expires_at = None
        if isinstance(expires_in, int) and not isinstance(expires_in, bool):
            expires_at = self._clock() + timedelta(seconds=expires_in)
        return TokenSet(access_token, body.get("refresh_token"), body.get("id_token"), expires_at)

    def _post(self, endpoint: str, data: dict[str, str]) -> dict[str, Any]:
        response = self._send(endpoint, data)
        body = _json_body(response)
        if response.status_code != 200:
            error = body.get("error", f"HTTP {response.status_code}")
            raise _refuse(f"the identity provider refused the login: {error}", "login_failed")
        return body

    def _send(self, endpoint: str, data: dict[str, str]) -> httpx.Response:
        url = self.endpoint(endpoint)
        try:
            return self._http.post(url, data=data, headers={"accept": "application/json"})
        except httpx.HTTPError as exc:
            raise _refuse(
                f"cannot reach the identity provider: {exc}", "provider_unreachable"
            ) from exc


def _json_body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


class _LoopbackReceiver:
    """A one-shot HTTP listener on 127.0.0.1 that waits for the redirect."""

    def __init__(self, path: str) -> None:
        self._params: dict[str, str] | None = None
        self._done = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                if url.path != path or receiver._done.is_set():
                    self.send_error(404)
                    return
                receiver._params = dict(urllib.parse.parse_qsl(url.query))
                receiver._done.set()
                body = b"breakglass: login received, you can close this window.\n"
                self.send_response(200)
                self.send_header("content-type", "text/plain; charset=utf-8")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        self._server = HTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> _LoopbackReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def wait(self, timeout: float) -> dict[str, str]:
        if not self._done.wait(timeout) or self._params is None:
            raise _refuse("no login answer arrived in time", "login_expired")
        return self._params


def default_token_path(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/breakglass/token.json``, else ``~/.config/breakglass/token.json``."""
    source = os.environ if env is None else env
    base = source.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "breakglass" / "token.json"


class TokenStore:
    """One JSON file of tokens, owner-only, replaced atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Any] | None:
        try:
            mode = self.path.stat().st_mode
        except FileNotFoundError:
            return None
        if mode & 0o077:
            raise _refuse(
                f"{self.path} is readable by others; run `breakglass logout`",
                "token_store_insecure",
            )
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def save(self, data: Mapping[str, Any]) -> None:
        directory = self.path.parent
        if not directory.exists():
            directory.mkdir(parents=True, mode=0o700)
        temporary = directory / f".{self.path.name}.{secrets.token_hex(6)}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        descriptor = os.open(temporary, flags, 0o600)
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                os.fchmod(handle.fileno(), 0o600)
                json.dump(dict(data), handle)
                handle.flush()
                os.fsync(handle.fileno())
            temporary.replace(self.path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise

    def clear(self) -> bool:
        """Forget the tokens; ``True`` when there were any."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True
