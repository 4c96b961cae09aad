"""Login and token verification against a real OpenID provider (npm ``oidc-provider``).

The user's browser is played by :func:`sign_in`: it follows redirects and
submits the provider's forms (device confirmation, login) with httpx.
"""

from __future__ import annotations

import os
import re
import stat
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from breakglass.domain.errors import Unauthenticated
from breakglass.domain.model import PrincipalKind
from breakglass.identity import (
    DeviceFlowClient,
    JwksCache,
    TokenSet,
    TokenStore,
    TokenVerifier,
    WorkloadIdentity,
    default_token_path,
)
from tests.services import require

pytestmark = pytest.mark.integration

CLIENT_ID = "breakglass-cli"
PASSWORD = "test-password"
AUDIENCE = "breakglass"
_FORM = re.compile(r'<form[^>]*action="([^"]+)"')
_HIDDEN = re.compile(r'<input[^>]*type="hidden"[^>]*name="([^"]+)"[^>]*value="([^"]*)"')


def sign_in(url: str, login: str, *, abort: bool = False) -> httpx.Response:
    """What the user does in the browser: confirm the code, then log in."""
    with httpx.Client(timeout=10) as browser:
        response = browser.get(url)
        for _ in range(15):
            if response.is_redirect:
                target = urllib.parse.urljoin(str(response.url), response.headers["location"])
                response = browser.get(target)
                continue
            form = _FORM.search(response.text)
            if form is None:
                return response
            fields = dict(_HIDDEN.findall(response.text))
            if 'name="login"' in response.text:
                fields.update(login=login, password=PASSWORD)
            action = urllib.parse.urljoin(str(response.url), form[1])
            if abort and "confirm" in fields:
                return browser.post(action, data={**fields, "abort": "yes"})
            response = browser.post(action, data=fields)
    pytest.fail(f"the sign-in did not finish: {response.status_code} {response.url}")


@pytest.fixture(scope="module")
def issuer() -> str:
    return require("BG_TEST_OIDC_ISSUER")


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


@pytest.fixture
def verifier(issuer: str, http: httpx.Client) -> TokenVerifier:
    return TokenVerifier(
        issuer,
        AUDIENCE,
        key_source=JwksCache(issuer, http),
        workloads=[WorkloadIdentity("ml-pipeline", issuer, "ml-pipeline", AUDIENCE)],
    )


def device_login(issuer: str, http: httpx.Client, login: str) -> TokenSet:
    pending: list[float] = []

    def user_signs_in_while_the_cli_waits(interval: float) -> None:
        pending.append(interval)
        sign_in(authorization.verification_uri_complete, login)

    client = DeviceFlowClient(issuer, CLIENT_ID, http, sleep=user_signs_in_while_the_cli_waits)
    authorization = client.start()
    assert authorization.user_code in authorization.verification_uri_complete
    tokens = client.poll(authorization)
    assert pending == [authorization.interval], "the first poll must have been pending"
    return tokens


def test_discovery_and_jwks_come_from_the_provider(issuer: str, http: httpx.Client) -> None:
    key = JwksCache(issuer, http).get("test-key-1")
    assert key is not None
    assert key.algorithms == frozenset({"RS256"})


def test_device_flow_for_a_user_with_mfa(
    issuer: str, http: httpx.Client, verifier: TokenVerifier
) -> None:
    tokens = device_login(issuer, http, "alice")
    principal = verifier.authenticate(tokens.access_token)
    assert principal.name == "alice"
    assert principal.kind is PrincipalKind.HUMAN
    assert principal.groups == frozenset({"team:platform", "oncall"})
    assert principal.mfa is True
    assert principal.auth_time is not None
    assert abs(datetime.now(UTC) - principal.auth_time) < timedelta(minutes=1)
    assert tokens.expires_at is not None
    assert tokens.refresh_token


def test_device_flow_for_a_user_without_mfa(
    issuer: str, http: httpx.Client, verifier: TokenVerifier
) -> None:
    principal = verifier.verify(device_login(issuer, http, "erin").access_token)
    assert principal.name == "erin"
    assert principal.groups == frozenset({"team:platform", "oncall"})
    assert principal.mfa is False
    assert principal.amr == ("pwd",)


def test_refresh_gives_a_new_valid_access_token(
    issuer: str, http: httpx.Client, verifier: TokenVerifier
) -> None:
    tokens = device_login(issuer, http, "carol")
    assert tokens.refresh_token is not None
    renewed = DeviceFlowClient(issuer, CLIENT_ID, http).refresh(tokens.refresh_token)
    assert renewed.access_token != tokens.access_token
    assert renewed.refresh_token
    principal = verifier.verify(renewed.access_token)
    assert (principal.name, principal.mfa) == ("carol", True)
    assert "approvers" in principal.groups
    with pytest.raises(Unauthenticated) as caught:
        DeviceFlowClient(issuer, CLIENT_ID, http).refresh("not-a-refresh-token")
    assert caught.value.rule == "identity.refresh_failed"


def test_altered_signature_and_id_token_are_refused(
    issuer: str, http: httpx.Client, verifier: TokenVerifier
) -> None:
    tokens = device_login(issuer, http, "bob")
    head, body, signature = tokens.access_token.split(".")
    altered = signature[:20] + ("A" if signature[20] != "A" else "B") + signature[21:]
    with pytest.raises(Unauthenticated) as caught:
        verifier.verify(f"{head}.{body}.{altered}")
    assert caught.value.rule == "identity.bad_signature"
    assert tokens.id_token is not None
    with pytest.raises(Unauthenticated) as caught:
        verifier.verify(tokens.id_token)
    assert caught.value.rule == "identity.wrong_audience"


def test_refused_device_login(issuer: str, http: httpx.Client) -> None:
    client = DeviceFlowClient(issuer, CLIENT_ID, http, sleep=lambda _: None)
    authorization = client.start()
    sign_in(authorization.verification_uri_complete, "dave", abort=True)
    with pytest.raises(Unauthenticated) as caught:
        client.poll(authorization)
    assert caught.value.rule == "identity.access_denied"


def test_workload_token_from_client_credentials(
    issuer: str, http: httpx.Client, verifier: TokenVerifier
) -> None:
    answer = http.post(
        issuer + "/token",
        auth=("ml-pipeline", "pipeline-secret"),
        data={"grant_type": "client_credentials", "scope": "access:request"},
    )
    assert answer.status_code == 200, answer.text
    workload_token = answer.json()["access_token"]
    principal = verifier.authenticate(workload_token)
    assert (principal.kind, principal.name) == (PrincipalKind.WORKLOAD, "ml-pipeline")
    with pytest.raises(Unauthenticated) as caught:
        verifier.verify(workload_token)
    assert caught.value.rule == "identity.workload_as_human"


def test_pkce_loopback_login(issuer: str, http: httpx.Client, verifier: TokenVerifier) -> None:
    client = DeviceFlowClient(issuer, CLIENT_ID, http)
    opened: list[str] = []

    def browser(url: str) -> None:
        opened.append(url)
        assert sign_in(url, "dave").status_code == 200

    tokens = client.authorization_code_pkce(browser, timeout=30)
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(opened[0]).query))
    assert query["code_challenge_method"] == "S256"
    assert query["redirect_uri"].startswith("http://127.0.0.1:")
    principal = verifier.verify(tokens.access_token)
    assert (principal.name, principal.groups) == ("dave", frozenset({"team:data", "approvers"}))


def test_pkce_loopback_refuses_a_forged_state(issuer: str, http: httpx.Client) -> None:
    client = DeviceFlowClient(issuer, CLIENT_ID, http)

    def attacker(url: str) -> None:
        redirect = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))["redirect_uri"]
        httpx.get(redirect, params={"code": "stolen", "state": "forged"}, timeout=5)

    with pytest.raises(Unauthenticated) as caught:
        client.authorization_code_pkce(attacker, timeout=10)
    assert caught.value.rule == "identity.login_failed"


# --- protocol edges the test provider never produces, on a scripted transport ----------------


def scripted(answers: list[httpx.Response]) -> httpx.Client:
    issuer = "https://idp.example.test"
    discovery = {
        "issuer": issuer,
        "device_authorization_endpoint": issuer + "/device/auth",
        "token_endpoint": issuer + "/token",
    }

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200, json=discovery)
        if request.url.path == "/device/auth":
            return httpx.Response(
                200,
                json={
                    "device_code": "dc",
                    "user_code": "ABCD-EFGH",
                    "verification_uri": issuer + "/device",
                    "expires_in": 600,
                    "interval": 2,
                },
            )
        return answers.pop(0)

    return httpx.Client(transport=httpx.MockTransport(handler))


def oauth_error(code: str) -> httpx.Response:
    return httpx.Response(400, json={"error": code})


def test_poll_backs_off_on_slow_down_and_stops_on_expiry() -> None:
    answers = [oauth_error("authorization_pending"), oauth_error("slow_down")]
    answers += [oauth_error("expired_token")]
    waits: list[float] = []
    with scripted(answers) as http:
        client = DeviceFlowClient("https://idp.example.test", CLIENT_ID, http, sleep=waits.append)
        authorization = client.start()
        assert authorization.verification_uri_complete == "https://idp.example.test/device"
        with pytest.raises(Unauthenticated) as caught:
            client.poll(authorization)
    assert caught.value.rule == "identity.login_expired"
    assert waits == [2, 7]


def test_poll_gives_up_when_the_code_runs_out() -> None:
    now = [datetime(2030, 1, 1, tzinfo=UTC)]

    def wait(seconds: float) -> None:
        now[0] += timedelta(seconds=seconds)

    with scripted([oauth_error("authorization_pending")] * 400) as http:
        client = DeviceFlowClient(
            "https://idp.example.test", CLIENT_ID, http, clock=lambda: now[0], sleep=wait
        )
        with pytest.raises(Unauthenticated) as caught:
            client.poll(client.start())
    assert caught.value.rule == "identity.login_expired"


# --- the token file -------------------------------------------------------------------------


def test_token_store_is_owner_only(tmp_path: Path) -> None:
    path = default_token_path({"XDG_CONFIG_HOME": str(tmp_path / "cfg")})
    assert path == tmp_path / "cfg" / "breakglass" / "token.json"
    store = TokenStore(path)
    assert store.load() is None
    tokens = TokenSet("at", "rt", None, datetime(2030, 1, 1, tzinfo=UTC))
    store.save({"server": "http://127.0.0.1:8080", **tokens.to_json()})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    loaded = store.load()
    assert loaded is not None
    assert TokenSet.from_json(loaded) == tokens
    with pytest.raises(Unauthenticated):
        TokenSet.from_json({"expires_at": "yesterday"})
    assert [p.name for p in path.parent.iterdir()] == ["token.json"]
    os.chmod(path, 0o644)
    with pytest.raises(Unauthenticated) as caught:
        store.load()
    assert caught.value.rule == "identity.token_store_insecure"
    assert store.clear() is True
    assert store.clear() is False
    assert default_token_path({}).name == "token.json"
