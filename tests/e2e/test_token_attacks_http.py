"""The token attack catalogue, played against the real HTTP server.

The broker runs without ``--dev`` and trusts an issuer this test controls (a
small HTTP server with discovery and a JWKS of one RSA, one P-256 and one
Ed25519 key), so each forged token can be valid in every respect but the one
under attack. Every refusal must be a ``401`` problem+json naming the rule
(``403`` for the policy-level MFA refusals), never a 5xx, and must be in the
broker's audit log as an ``identity:token:refused`` event.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jwt.algorithms import RSAAlgorithm

from tests.e2e.oidc_fixtures import FIXTURES, Broker, JsonServer, running_broker
from tests.unit.test_token_attacks import Keys, b64, encode, public_jwk, signed_with

CATALOG = FIXTURES / "catalog_forge.yaml"
AUDIENCE = "breakglass"
WORKLOAD_SUBJECT = "system:serviceaccount:ml:pipeline"
WORKLOAD_AUDIENCE = "breakglass-workload"
ROLE = "pipeline-restart"
REFUSED = "identity:token:refused"
PROBLEM = "application/problem+json"
# Never contacted: no grant is activated on this broker.
UNUSED_TARGET_DSN = "postgresql://nobody@127.0.0.1:9/never_contacted"


class Drop:
    """Marks a claim to leave out of a token."""


DROP = Drop()


@dataclass
class Forge:
    """Signs tokens as the trusted issuer (or as anyone else) with hand-made headers."""

    issuer: str
    keys: Keys

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        base: dict[str, Any] = {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": "alice",
            "preferred_username": "alice",
            "groups": ["team:platform", "oncall"],
            "amr": ["pwd", "mfa"],
            "auth_time": now - 60,
            "iat": now - 30,
            "exp": now + 300,
        }
        base.update(overrides)
        return {name: value for name, value in base.items() if value is not DROP}

    def workload_claims(self, **overrides: Any) -> dict[str, Any]:
        base = self.claims(
            sub=WORKLOAD_SUBJECT,
            aud=WORKLOAD_AUDIENCE,
            preferred_username=DROP,
            groups=DROP,
            amr=DROP,
            auth_time=DROP,
        )
        base.update(overrides)
        return {name: value for name, value in base.items() if value is not DROP}

    def token(
        self,
        *,
        alg: str = "RS256",
        kid: Any = "rsa-1",
        sign_alg: str | None = None,
        key: Any = None,
        payload: dict[str, Any] | str | None = None,
        **header: Any,
    ) -> str:
        full_header = {"alg": alg, "typ": "at+jwt", "kid": kid, **header}
        signer = signed_with(key or self.keys.signer(str(kid)), sign_alg or alg)
        return encode(full_header, self.claims() if payload is None else payload, signer)


@dataclass
class Setup:
    broker: Broker
    forge: Forge
    issuer: JsonServer
    attacker: JsonServer
    http: httpx.Client

    def call(
        self,
        token: str,
        method: str = "GET",
        path: str = "/v1/requests",
        body: dict[str, Any] | None = None,
    ) -> httpx.Response:
        response = self.http.request(
            method, self.broker.url + path, json=body, headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code < 500, (response.status_code, response.text)
        return response

    def refused(self, token: str, rule: str, status: int = 401, **call: Any) -> dict[str, Any]:
        """The call is refused with ``status`` and ``rule``, and the refusal is audited."""
        before = self.broker.events(REFUSED)
        response = self.call(token, **call)
        assert response.status_code == status, (response.status_code, response.text)
        assert response.headers["content-type"].startswith(PROBLEM)
        problem: dict[str, Any] = response.json()
        assert problem["rule"] == rule, problem
        assert problem["status"] == status
        assert problem["detail"]
        if status == 401:
            assert response.headers["www-authenticate"].startswith("Bearer")
            new = self.broker.events(REFUSED)[len(before) :]
            assert [(actor, outcome, r) for _, actor, outcome, r in new] == [
                ("anonymous", "denied", rule)
            ]
        return problem

    def new_request(self, token: str, incident: str) -> httpx.Response:
        return self.call(
            token,
            "POST",
            "/v1/requests",
            {
                "roles": [ROLE],
                "incident": incident,
                "reason": "recovery",
                "justification": "pipeline stuck",
            },
        )


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    keys = Keys()
    attacker_jwks = {
        "keys": [
            public_jwk(RSAAlgorithm, keys.attacker, "rsa-1", "RS256"),
            public_jwk(RSAAlgorithm, keys.attacker, "evil-1", "RS256"),
        ]
    }
    with JsonServer() as issuer, JsonServer() as attacker:
        issuer.routes.update(
            {
                "/.well-known/openid-configuration": {
                    "issuer": issuer.url,
                    "jwks_uri": issuer.url + "/jwks",
                    "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
                },
                "/jwks": keys.jwks(),
            }
        )
        attacker.routes.update(
            {
                "/.well-known/openid-configuration": {
                    "issuer": attacker.url,
                    "jwks_uri": attacker.url + "/jwks.json",
                },
                "/jwks.json": attacker_jwks,
            }
        )
        # every attack's refusal is checked one by one: a budget none of them exceeds
        env = {"FORGE_ISSUER": issuer.url, "FORGE_TARGET_DSN": UNUSED_TARGET_DSN,
               "BREAKGLASS_ANON_REFUSALS_PER_ADDRESS": "100000"}
        state = tmp_path_factory.mktemp("forge-broker")
        with running_broker(CATALOG, state, env) as broker, httpx.Client(timeout=30) as http:
            yield Setup(broker, Forge(issuer.url, keys), issuer, attacker, http)
        assert attacker.requests == [], "the broker contacted a URL named by a token"


Attack = Callable[[Forge], str]


def _hs256_with_the_rsa_public_key(forge: Forge) -> str:
    pem = forge.keys.rsa.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    return forge.token(alg="HS256", key=pem)


ATTACKS: list[tuple[str, Attack, str]] = [
    # signature algorithm
    (
        "alg-none",
        lambda f: encode({"alg": "none", "kid": "rsa-1"}, f.claims(), lambda _: b""),
        "alg_not_allowed",
    ),
    (
        "alg-None",
        lambda f: encode({"alg": "None", "typ": "JWT"}, f.claims(), lambda _: b""),
        "alg_not_allowed",
    ),
    (
        "alg-none-with-signature",
        lambda f: encode({"alg": "none", "kid": "rsa-1"}, f.claims(), lambda _: b"sig"),
        "alg_not_allowed",
    ),
    (
        "alg-HS256",
        lambda f: f.token(alg="HS256", key=b"a shared secret of 32 bytes!!!!"),
        "alg_not_allowed",
    ),
    ("alg-RS512", lambda f: f.token(alg="RS512"), "alg_not_allowed"),
    ("alg-PS256", lambda f: f.token(alg="PS256"), "alg_not_allowed"),
    (
        "alg-ES384",
        lambda f: f.token(alg="ES384", kid="ec-1", key=ec.generate_private_key(ec.SECP384R1())),
        "alg_not_allowed",
    ),
    ("key-confusion-HS256-rsa-pem", _hs256_with_the_rsa_public_key, "alg_not_allowed"),
    (
        "alg-RS256-on-ec-key",
        lambda f: f.token(alg="RS256", kid="ec-1", sign_alg="ES256"),
        "alg_key_mismatch",
    ),
    (
        "alg-ES256-on-rsa-key",
        lambda f: f.token(alg="ES256", kid="rsa-1", key=f.keys.ec),
        "alg_key_mismatch",
    ),
    (
        "alg-EdDSA-on-rsa-key",
        lambda f: f.token(alg="EdDSA", kid="rsa-1", key=f.keys.ed),
        "alg_key_mismatch",
    ),
    (
        "alg-ES256-on-ed-key",
        lambda f: f.token(alg="ES256", kid="ed-1", sign_alg="EdDSA"),
        "alg_key_mismatch",
    ),
    ("weak-rsa-key", lambda f: f.token(kid="weak-1"), "weak_key"),
    # signature
    ("signed-by-attacker", lambda f: f.token(key=f.keys.attacker), "bad_signature"),
    (
        "claims-swapped-under-a-valid-signature",
        lambda f: _swap_payload(
            f.token(), f.claims(preferred_username="carol", groups=["team:security", "approvers"])
        ),
        "bad_signature",
    ),
    # key id
    ("kid-unknown", lambda f: f.token(kid="no-such-key", key=f.keys.attacker), "unknown_kid"),
    ("kid-path-traversal", lambda f: f.token(kid="../../../../etc/passwd"), "unknown_kid"),
    ("kid-sql", lambda f: f.token(kid="' OR '1'='1' --"), "unknown_kid"),
    ("kid-null-byte", lambda f: f.token(kid="rsa-1\u0000"), "unknown_kid"),
    ("kid-huge", lambda f: f.token(kid="k" * 1000), "unknown_kid"),
    (
        "kid-missing",
        lambda f: encode({"alg": "RS256"}, f.claims(), signed_with(f.keys.rsa, "RS256")),
        "unknown_kid",
    ),
    ("kid-not-a-string", lambda f: f.token(kid=["rsa-1"]), "unknown_kid"),
    # claims
    (
        "expired",
        lambda f: f.token(payload=f.claims(iat=int(time.time()) - 900, exp=int(time.time()) - 120)),
        "token_expired",
    ),
    (
        "not-yet-valid",
        lambda f: f.token(payload=f.claims(nbf=int(time.time()) + 300)),
        "token_not_yet_valid",
    ),
    (
        "issued-in-the-future",
        lambda f: f.token(payload=f.claims(iat=int(time.time()) + 300)),
        "token_not_yet_valid",
    ),
    ("missing-exp", lambda f: f.token(payload=f.claims(exp=DROP)), "missing_claim"),
    ("missing-aud", lambda f: f.token(payload=f.claims(aud=DROP)), "missing_claim"),
    ("missing-iss", lambda f: f.token(payload=f.claims(iss=DROP)), "missing_claim"),
    ("missing-sub", lambda f: f.token(payload=f.claims(sub=DROP)), "missing_claim"),
    ("wrong-aud", lambda f: f.token(payload=f.claims(aud="another-api")), "wrong_audience"),
    (
        "wrong-aud-list",
        lambda f: f.token(payload=f.claims(aud=["grafana", "argocd"])),
        "wrong_audience",
    ),
    (
        "wrong-iss",
        lambda f: f.token(payload=f.claims(iss="https://idp.evil.example")),
        "wrong_issuer",
    ),
    (
        "iss-with-trailing-slash",
        lambda f: f.token(payload=f.claims(iss=f.issuer + "/")),
        "wrong_issuer",
    ),
    ("exp-as-string", lambda f: f.token(payload=f.claims(exp="9999999999")), "malformed_claim"),
    (
        "groups-as-object",
        lambda f: f.token(payload=f.claims(groups={"approvers": True})),
        "malformed_claim",
    ),
    (
        "id-token-for-another-client",
        lambda f: encode(
            {"alg": "RS256", "kid": "rsa-1", "typ": "JWT"},
            f.claims(aud="grafana", azp="grafana", nonce="n-0S6_WzA2Mj"),
            signed_with(f.keys.rsa, "RS256"),
        ),
        "wrong_audience",
    ),
    ("logout-token-type", lambda f: f.token(typ="logout+jwt"), "wrong_token_type"),
    # humans and workloads
    (
        "client-credentials-token-as-human",
        lambda f: f.token(
            payload=f.claims(
                sub="ml-pipeline",
                client_id="ml-pipeline",
                preferred_username=DROP,
                amr=DROP,
                auth_time=DROP,
            )
        ),
        "workload_as_human",
    ),
    (
        "workload-token-minted-for-the-human-audience",
        lambda f: f.token(payload=f.workload_claims(aud=AUDIENCE)),
        "wrong_audience",
    ),
    (
        "human-token-posing-as-the-workload",
        lambda f: f.token(
            payload=f.claims(sub=WORKLOAD_SUBJECT, aud=WORKLOAD_AUDIENCE, preferred_username=DROP)
        ),
        "human_as_workload",
    ),
    (
        "workload-subject-with-human-claims-and-audience",
        lambda f: f.token(payload=f.claims(sub=WORKLOAD_SUBJECT)),
        "wrong_audience",
    ),
    # malformed
    ("not-a-jwt", lambda f: "not-a-token", "malformed_token"),
    ("two-parts", lambda f: "eyJhbGciOiJSUzI1NiJ9.e30", "malformed_token"),
    ("bad-base64-characters", lambda f: "eyJ!!!.eyJ.sig", "malformed_token"),
    ("base64-padding", lambda f: "eyJhbGciOiJSUzI1NiJ9=.e30.c2ln", "malformed_token"),
    ("header-not-json", lambda f: b64(b"not json") + ".e30.c2ln", "malformed_token"),
    ("header-not-an-object", lambda f: b64(b"[1, 2]") + ".e30.c2ln", "malformed_token"),
    ("payload-not-json", lambda f: f.token(payload='{"sub": "alice"'), "malformed_token"),
    ("payload-NaN", lambda f: f.token(payload='{"sub": "alice", "exp": NaN}'), "malformed_token"),
    ("missing-signature", lambda f: f.token().rsplit(".", 1)[0] + ".", "malformed_token"),
    ("header-over-8-KiB", lambda f: f.token(pad="p" * 9000), "token_too_large"),
    ("token-over-16-KiB", lambda f: f.token(payload=f.claims(pad="p" * 12000)), "token_too_large"),
    # parser differentials
    (
        "duplicate-alg",
        lambda f: encode(
            '{"alg": "RS256", "alg": "none", "kid": "rsa-1"}',
            f.claims(),
            signed_with(f.keys.rsa, "RS256"),
        ),
        "duplicate_key",
    ),
    (
        "duplicate-kid",
        lambda f: encode(
            '{"alg": "RS256", "kid": "rsa-1", "kid": "ec-1"}',
            f.claims(),
            signed_with(f.keys.rsa, "RS256"),
        ),
        "duplicate_key",
    ),
    ("duplicate-sub", lambda f: f.token(payload=_duplicate_sub(f)), "duplicate_key"),
    (
        "crit-unknown",
        lambda f: f.token(crit=["urn:example:policy"], **{"urn:example:policy": "allow-all"}),
        "crit_unsupported",
    ),
    ("crit-registered-claim", lambda f: f.token(crit=["exp"]), "crit_unsupported"),
    ("crit-b64", lambda f: f.token(crit=["b64"], b64=False), "crit_unsupported"),
]


def _swap_payload(signed: str, claims: dict[str, Any]) -> str:
    head, _, signature = signed.split(".")
    return f"{head}.{b64(json.dumps(claims).encode())}.{signature}"


def _duplicate_sub(forge: Forge) -> str:
    claims = json.dumps(forge.claims(sub="alice"))
    return claims[:-1] + ', "sub": "admin"}'


@pytest.mark.parametrize(
    ("attack", "rule"), [(a, r) for _, a, r in ATTACKS], ids=[name for name, _, _ in ATTACKS]
)
def test_forged_token_is_refused_with_401_and_audited(
    setup: Setup, attack: Attack, rule: str
) -> None:
    setup.refused(attack(setup.forge), f"identity.{rule}")


@pytest.mark.parametrize(("alg", "kid"), [("RS256", "rsa-1"), ("ES256", "ec-1"), ("EdDSA", "ed-1")])
def test_valid_token_of_each_algorithm_is_accepted(setup: Setup, alg: str, kid: str) -> None:
    before = setup.broker.events(REFUSED)
    response = setup.call(setup.forge.token(alg=alg, kid=kid))
    assert response.status_code == 200, response.text
    assert isinstance(response.json(), list)
    assert setup.broker.events(REFUSED) == before


def test_expiry_leeway_is_at_most_sixty_seconds(setup: Setup) -> None:
    now = int(time.time())
    late = setup.forge.claims(iat=now - 600, exp=now - 30)
    assert setup.call(setup.forge.token(payload=late)).status_code == 200
    later = setup.forge.claims(iat=now - 600, exp=now - 75)
    setup.refused(setup.forge.token(payload=later), "identity.token_expired")


@pytest.mark.parametrize(
    "location",
    [
        {"jku": "/jwks.json", "kid": "evil-1"},
        {"jku": "/jwks.json"},
        {"x5u": "/cert.pem"},
        {"x5u": "/cert.pem", "kid": "evil-1"},
        {"jwk": "embedded"},
        {"x5c": "embedded"},
    ],
    ids=["jku-unknown-kid", "jku-known-kid", "x5u-known-kid", "x5u-unknown-kid", "jwk", "x5c"],
)
def test_key_locations_in_the_header_are_never_used(setup: Setup, location: dict[str, str]) -> None:
    header: dict[str, Any] = {"kid": location.get("kid", "rsa-1")}
    for name in ("jku", "x5u"):
        if name in location:
            header[name] = setup.attacker.url + location[name]
    if "jwk" in location:
        header["jwk"] = public_jwk(RSAAlgorithm, setup.forge.keys.attacker, "rsa-1", "RS256")
    if "x5c" in location:
        header["x5c"] = [b64(b"not a certificate")]
    raw = setup.forge.token(key=setup.forge.keys.attacker, **header)
    rule = "identity.unknown_kid" if header["kid"] == "evil-1" else "identity.bad_signature"
    setup.refused(raw, rule)
    assert setup.attacker.requests == []


def test_a_token_from_an_issuer_the_attacker_runs_is_refused(setup: Setup) -> None:
    payload = setup.forge.claims(iss=setup.attacker.url)
    raw = setup.forge.token(kid="evil-1", key=setup.forge.keys.attacker, payload=payload)
    setup.refused(raw, "identity.wrong_issuer")
    assert setup.attacker.requests == []


def test_made_up_kids_do_not_turn_the_broker_into_an_amplifier(setup: Setup) -> None:
    fetched = setup.issuer.requests.count("/jwks")
    for n in range(40):
        raw = setup.forge.token(kid=f"garbage-{n}", key=setup.forge.keys.attacker)
        response = setup.call(raw)
        assert response.status_code == 401
        assert response.json()["rule"] == "identity.unknown_kid"
    assert setup.issuer.requests.count("/jwks") <= fetched + 1


def test_workload_token_is_a_workload_never_a_human(setup: Setup) -> None:
    workload = setup.forge.token(alg="ES256", kid="ec-1", payload=setup.forge.workload_claims())
    assert setup.call(workload).status_code == 200

    alice = setup.forge.token()
    created = setup.new_request(alice, "INC-5001")
    assert created.status_code == 201, created.text
    assert created.json()["state"] == "pending"
    rid = created.json()["id"]
    problem = setup.refused(
        workload,
        "approval.workload",
        status=403,
        method="POST",
        path=f"/v1/requests/{rid}/approvals",
        body={"comment": "lgtm"},
    )
    assert "workload" in problem["detail"]
    setup.refused(
        workload,
        "role.requesters",
        status=403,
        method="POST",
        path="/v1/requests",
        body={"roles": [ROLE], "incident": "INC-5002", "reason": "recovery"},
    )
    actors = [actor for _, actor, _, _ in setup.broker.events("request:refused")]
    assert actors[-1] == "feature-pipeline"


@pytest.mark.parametrize(
    ("overrides", "rule", "reason"),
    [
        ({"amr": ["pwd"]}, "identity.mfa_required", "requires MFA"),
        ({"amr": DROP}, "identity.mfa_required", "requires MFA"),
        ({"amr": ["pwd", "sms-but-not-listed"]}, "identity.mfa_required", "requires MFA"),
        ({"auth_time": int(time.time()) - 3600}, "identity.mfa_stale", "re-authenticate with MFA"),
        ({"auth_time": DROP}, "identity.mfa_stale", "re-authenticate with MFA"),
    ],
    ids=["pwd-only", "no-amr", "unlisted-amr", "mfa-an-hour-ago", "no-auth-time"],
)
def test_a_human_token_without_fresh_mfa_is_refused_zone_b(
    setup: Setup, overrides: dict[str, Any], rule: str, reason: str
) -> None:
    raw = setup.forge.token(payload=setup.forge.claims(**overrides))
    assert setup.call(raw).status_code == 200, "the token itself is valid"
    token_refusals = setup.broker.events(REFUSED)
    problem = setup.refused(
        raw,
        rule,
        status=403,
        method="POST",
        path="/v1/requests",
        body={"roles": [ROLE], "incident": "INC-5003", "reason": "recovery"},
    )
    assert reason in problem["detail"]
    assert setup.broker.events(REFUSED) == token_refusals
    last = setup.broker.events("request:refused")[-1]
    assert (last[1], last[2], last[3]) == ("alice", "denied", rule)


def test_a_megabyte_header_is_refused_by_the_http_layer(setup: Setup) -> None:
    """uvicorn's HTTP/1.1 parser (h11) stops reading a request whose head outgrows its
    buffer: it answers ``400 Bad Request`` and closes the connection, before the app (and
    so the audit log) ever sees it. Smaller heads reach the token check, which refuses
    any token over 16 KiB with a 401 (see ``token-over-16-KiB``)."""
    before = setup.broker.events(REFUSED)
    host, port = setup.broker.url.removeprefix("http://").split(":")
    token = setup.forge.token(pad="p" * 1_000_000)
    request = (
        f"GET /v1/requests HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n"
    ).encode()
    assert len(request) > 1_000_000
    answer = b""
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        # The server answers and closes with most of the request unread: the close is a
        # reset, which may also cut the sending short.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.sendall(request)
        with contextlib.suppress(ConnectionResetError):
            while chunk := conn.recv(65536):
                answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 400 Bad Request", answer[:200]
    assert b"connection: close" in rest.lower()
    assert rest.endswith(b"Invalid HTTP request received.")
    assert setup.http.get(setup.broker.url + "/healthz").status_code == 200
    assert setup.broker.events(REFUSED) == before


def test_no_token_and_other_schemes_are_refused(setup: Setup) -> None:
    before = setup.broker.events(REFUSED)
    for headers in (
        {},
        {"Authorization": "Basic YWxpY2U6cGFzc3dvcmQ="},
        {"Authorization": "Bearer"},
        {"Authorization": "Token abc.def.ghi"},
    ):
        response = setup.http.get(setup.broker.url + "/v1/requests", headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["content-type"].startswith(PROBLEM)
        assert response.json()["rule"] == "identity.token_missing"
    new = setup.broker.events(REFUSED)[len(before) :]
    assert [(actor, outcome, rule) for _, actor, outcome, rule in new] == [
        ("anonymous", "denied", "identity.token_missing")] * 4
