"""Forged, confused, stale and oversized tokens are refused with a clear rule.

Every test builds the token by hand (header and payload JSON, then the
signature) so it can say exactly which attack it is. The verifier sees a
fixed clock and keys generated here; the JWKS tests use an HTTP transport
that fails the test on any request to a host other than the issuer.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm, get_default_algorithms

from breakglass.domain.errors import Unauthenticated
from breakglass.domain.model import Principal, PrincipalKind
from breakglass.identity import (
    JwksCache,
    StaticKeySource,
    TokenVerifier,
    WorkloadIdentity,
    mfa_fresh,
)

pytestmark = pytest.mark.unit

ISSUER = "https://idp.example.test"
AUDIENCE = "breakglass"
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
PIPELINE = WorkloadIdentity(
    name="feature-pipeline",
    issuer=ISSUER,
    subject="system:serviceaccount:ml:pipeline",
    audience=AUDIENCE,
)
K8S_ISSUER = "https://kubernetes.default.svc"
INDEXER = WorkloadIdentity(
    name="indexer", issuer=K8S_ISSUER, subject="system:serviceaccount:ml:indexer", audience="bg"
)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def public_jwk(algorithm: Any, key: Any, kid: str, alg: str | None) -> dict[str, Any]:
    jwk = dict(algorithm.to_jwk(key.public_key(), as_dict=True))
    jwk.update(kid=kid, use="sig")
    if alg is not None:
        jwk["alg"] = alg
    return jwk


RsaKey = rsa.RSAPrivateKey


@dataclass
class Keys:
    rsa: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    ec: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    ed: ed25519.Ed25519PrivateKey = field(default_factory=ed25519.Ed25519PrivateKey.generate)
    attacker: RsaKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    weak: RsaKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    )

    def jwks(self) -> dict[str, Any]:
        return {
            "keys": [
                public_jwk(RSAAlgorithm, self.rsa, "rsa-1", "RS256"),
                public_jwk(ECAlgorithm, self.ec, "ec-1", None),
                public_jwk(OKPAlgorithm, self.ed, "ed-1", "EdDSA"),
                public_jwk(RSAAlgorithm, self.weak, "weak-1", "RS256"),
            ]
        }

    def signer(self, kid: str) -> Any:
        return {"rsa-1": self.rsa, "ec-1": self.ec, "ed-1": self.ed, "weak-1": self.weak}.get(
            kid, self.attacker
        )


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "u-1001",
        "preferred_username": "alice",
        "groups": ["team:platform", "oncall"],
        "amr": ["pwd", "mfa"],
        "auth_time": int(NOW.timestamp()) - 60,
        "iat": int(NOW.timestamp()) - 30,
        "exp": int(NOW.timestamp()) + 300,
    }
    base.update(overrides)
    return {name: value for name, value in base.items() if value is not DROP}


DROP = object()


def encode(
    header: dict[str, Any] | str, payload: dict[str, Any] | str, sign: Callable[[bytes], bytes]
) -> str:
    raw_header = header if isinstance(header, str) else json.dumps(header)
    raw_payload = payload if isinstance(payload, str) else json.dumps(payload)
    signing_input = f"{b64(raw_header.encode())}.{b64(raw_payload.encode())}"
    return f"{signing_input}.{b64(sign(signing_input.encode()))}"


def signed_with(key: Any, alg: str) -> Callable[[bytes], bytes]:
    algorithm = get_default_algorithms()[alg]
    return lambda message: algorithm.sign(message, key)


def token(
    keys: Keys,
    *,
    alg: str = "RS256",
    kid: str = "rsa-1",
    sign_alg: str | None = None,
    key: Any = None,
    payload: dict[str, Any] | str | None = None,
    **header: Any,
) -> str:
    full_header = {"alg": alg, "typ": "at+jwt", "kid": kid, **header}
    signer = signed_with(key or keys.signer(kid), sign_alg or alg)
    return encode(full_header, claims() if payload is None else payload, signer)


@pytest.fixture
def verifier(keys: Keys) -> TokenVerifier:
    return TokenVerifier(
        ISSUER,
        AUDIENCE,
        key_source=StaticKeySource(keys.jwks()),
        clock=lambda: NOW,
        workloads=[PIPELINE, INDEXER],
        workload_key_sources={K8S_ISSUER: StaticKeySource(keys.jwks())},
    )


def refused(verify: Callable[[str], Principal], raw: str, rule: str) -> Unauthenticated:
    with pytest.raises(Unauthenticated) as caught:
        verify(raw)
    assert caught.value.rule == f"identity.{rule}", caught.value.message
    return caught.value


# --- accepted -------------------------------------------------------------------------------


@pytest.mark.parametrize(("alg", "kid"), [("RS256", "rsa-1"), ("ES256", "ec-1"), ("EdDSA", "ed-1")])
def test_valid_token_of_each_algorithm_is_accepted(
    verifier: TokenVerifier, keys: Keys, alg: str, kid: str
) -> None:
    principal = verifier.verify(token(keys, alg=alg, kid=kid))
    assert principal == Principal(
        name="alice",
        kind=PrincipalKind.HUMAN,
        groups=frozenset({"team:platform", "oncall"}),
        mfa=True,
        auth_time=NOW - timedelta(seconds=60),
        amr=("pwd", "mfa"),
        issuer=ISSUER,
        subject="u-1001",
    )


def test_name_falls_back_to_subject_and_audience_list_is_accepted(
    verifier: TokenVerifier, keys: Keys
) -> None:
    payload = claims(preferred_username=DROP, aud=["other-api", AUDIENCE])
    assert verifier.verify(token(keys, payload=payload)).name == "u-1001"


def test_human_without_mfa_is_verified_but_not_mfa(verifier: TokenVerifier, keys: Keys) -> None:
    principal = verifier.verify(token(keys, payload=claims(amr=["pwd"])))
    assert principal.mfa is False
    assert verifier.verify(token(keys, payload=claims(amr=DROP))).mfa is False
    assert mfa_fresh(principal, timedelta(minutes=15), NOW) is False


def test_mfa_freshness_follows_auth_time(verifier: TokenVerifier, keys: Keys) -> None:
    principal = verifier.verify(token(keys))
    assert mfa_fresh(principal, timedelta(minutes=15), NOW)
    assert not mfa_fresh(principal, timedelta(seconds=30), NOW)
    no_time = verifier.verify(token(keys, payload=claims(auth_time=DROP)))
    assert not mfa_fresh(no_time, timedelta(minutes=15), NOW)


def test_expiry_has_sixty_seconds_of_leeway(verifier: TokenVerifier, keys: Keys) -> None:
    late = claims(exp=int(NOW.timestamp()) - 59)
    assert verifier.verify(token(keys, payload=late)).name == "alice"


# --- algorithm attacks ----------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_is_refused(verifier: TokenVerifier, alg: str) -> None:
    raw = encode({"alg": alg, "kid": "rsa-1"}, claims(), lambda _: b"")
    refused(verifier.verify, raw, "alg_not_allowed")


@pytest.mark.parametrize(
    ("alg", "kid"), [("RS512", "rsa-1"), ("PS256", "rsa-1"), ("ES384", "ec-1")]
)
def test_alg_outside_allowlist_is_refused(
    verifier: TokenVerifier, keys: Keys, alg: str, kid: str
) -> None:
    key = ec.generate_private_key(ec.SECP384R1()) if alg == "ES384" else None
    refused(verifier.verify, token(keys, alg=alg, kid=kid, key=key), "alg_not_allowed")


def test_hs256_signed_with_the_rsa_public_key_is_refused(
    verifier: TokenVerifier, keys: Keys
) -> None:
    pem = keys.rsa.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    raw = encode({"alg": "HS256", "kid": "rsa-1"}, claims(), signed_with(pem, "HS256"))
    refused(verifier.verify, raw, "alg_not_allowed")


@pytest.mark.parametrize("algorithms", [("HS256",), ("RS256", "none"), ("RS256", "HS512"), ()])
def test_symmetric_or_none_algorithms_cannot_be_configured(
    keys: Keys, algorithms: tuple[str, ...]
) -> None:
    with pytest.raises(ValueError, match="asymmetric"):
        TokenVerifier(
            ISSUER, AUDIENCE, key_source=StaticKeySource(keys.jwks()), algorithms=algorithms
        )


@pytest.mark.parametrize(
    ("alg", "kid", "sign_alg"),
    [("RS256", "ec-1", "ES256"), ("EdDSA", "rsa-1", "RS256"), ("ES256", "ed-1", "EdDSA")],
)
def test_header_alg_must_fit_the_key(
    verifier: TokenVerifier, keys: Keys, alg: str, kid: str, sign_alg: str
) -> None:
    raw = token(keys, alg=alg, kid=kid, sign_alg=sign_alg)
    refused(verifier.verify, raw, "alg_key_mismatch")


def test_header_alg_must_equal_the_jwk_alg(keys: Keys) -> None:
    lenient = TokenVerifier(
        ISSUER,
        AUDIENCE,
        key_source=StaticKeySource(keys.jwks()),
        algorithms=("RS256", "RS384"),
        clock=lambda: NOW,
    )
    refused(lenient.verify, token(keys, alg="RS384"), "alg_key_mismatch")


def test_rsa_key_below_2048_bits_is_refused(verifier: TokenVerifier, keys: Keys) -> None:
    refused(verifier.verify, token(keys, kid="weak-1"), "weak_key")


# --- key id and key location attacks --------------------------------------------------------


@pytest.mark.parametrize(
    "kid", ["no-such-key", "../../etc/passwd", "' OR 1=1 --", "rsa-1\x00", "x" * 300, "", 7, None]
)
def test_unknown_or_hostile_kid_is_refused(verifier: TokenVerifier, keys: Keys, kid: Any) -> None:
    raw = encode({"alg": "RS256", "kid": kid}, claims(), signed_with(keys.attacker, "RS256"))
    refused(verifier.verify, raw, "unknown_kid")


class IdentityProvider:
    """Serves discovery and JWKS for ISSUER; any other request fails the test."""

    def __init__(self, jwks: dict[str, Any], *, issuer_in_discovery: str = ISSUER) -> None:
        self.jwks = jwks
        self.issuer_in_discovery = issuer_in_discovery
        self.requests: list[str] = []
        self.status = 200

    def __call__(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        if not url.startswith(ISSUER + "/"):
            pytest.fail(f"the verifier fetched a URL named by a token: {url}")
        self.requests.append(request.url.path)
        if self.status != 200:
            return httpx.Response(self.status)
        if request.url.path == "/.well-known/openid-configuration":
            discovery = {"issuer": self.issuer_in_discovery, "jwks_uri": ISSUER + "/jwks"}
            return httpx.Response(200, json=discovery)
        if request.url.path == "/jwks":
            return httpx.Response(200, json=self.jwks)
        return httpx.Response(404)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def idp(keys: Keys) -> IdentityProvider:
    return IdentityProvider(keys.jwks())


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fetching(idp: IdentityProvider, clock: Clock) -> Iterator[TokenVerifier]:
    with httpx.Client(transport=httpx.MockTransport(idp)) as http:
        cache = JwksCache(ISSUER, http, clock)
        yield TokenVerifier(ISSUER, AUDIENCE, key_source=cache, clock=clock)


def test_keys_come_from_discovery_and_jwks(fetching: TokenVerifier, keys: Keys) -> None:
    assert fetching.verify(token(keys)).name == "alice"


@pytest.mark.parametrize(
    "location",
    [
        {"jku": "https://evil.example/jwks.json"},
        {"x5u": "https://evil.example/cert.pem"},
        {"jku": "https://idp.example.test.evil.example/jwks"},
    ],
)
def test_key_urls_in_the_header_are_never_fetched(
    fetching: TokenVerifier, idp: IdentityProvider, keys: Keys, location: dict[str, str]
) -> None:
    refused(fetching.verify, token(keys, kid="evil-1", **location), "unknown_kid")
    refused(fetching.verify, token(keys, key=keys.attacker, **location), "bad_signature")
    assert idp.requests == ["/.well-known/openid-configuration", "/jwks"]


def test_embedded_jwk_header_is_ignored(fetching: TokenVerifier, keys: Keys) -> None:
    embedded = public_jwk(RSAAlgorithm, keys.attacker, "rsa-1", "RS256")
    raw = token(keys, key=keys.attacker, jwk=embedded)
    refused(fetching.verify, raw, "bad_signature")
    chain: dict[str, Any] = {"x5c": [b64(b"not a certificate")]}
    refused(fetching.verify, token(keys, key=keys.attacker, **chain), "bad_signature")


def test_garbage_kids_refresh_the_jwks_at_most_once_per_30_seconds(
    fetching: TokenVerifier, idp: IdentityProvider, keys: Keys, clock: Clock
) -> None:
    for n in range(200):
        refused(fetching.verify, token(keys, kid=f"garbage-{n}"), "unknown_kid")
    assert idp.requests == ["/.well-known/openid-configuration", "/jwks"]
    clock.now = NOW + timedelta(seconds=31)
    for n in range(50):
        refused(fetching.verify, token(keys, kid=f"more-garbage-{n}"), "unknown_kid")
    assert idp.requests == ["/.well-known/openid-configuration", "/jwks", "/jwks"]


def test_rotated_key_is_picked_up_on_first_unknown_kid(
    fetching: TokenVerifier, idp: IdentityProvider, keys: Keys, clock: Clock
) -> None:
    assert fetching.verify(token(keys)).name == "alice"
    idp.jwks = {"keys": [public_jwk(RSAAlgorithm, keys.attacker, "rsa-2", "RS256")]}
    clock.now = NOW + timedelta(minutes=2)
    assert fetching.verify(token(keys, kid="rsa-2", key=keys.attacker)).name == "alice"


def test_discovery_naming_another_issuer_is_refused(keys: Keys) -> None:
    idp = IdentityProvider(keys.jwks(), issuer_in_discovery="https://evil.example")
    with httpx.Client(transport=httpx.MockTransport(idp)) as http:
        cached = TokenVerifier(ISSUER, AUDIENCE, key_source=JwksCache(ISSUER, http, lambda: NOW))
        refused(cached.verify, token(keys), "discovery_mismatch")


def test_provider_outage_refuses_without_hammering_it(
    fetching: TokenVerifier, idp: IdentityProvider, keys: Keys
) -> None:
    idp.status = 503
    for _ in range(20):
        refused(fetching.verify, token(keys), "jwks_unavailable")
    assert idp.requests == ["/.well-known/openid-configuration"]


def test_known_keys_survive_a_provider_outage(
    fetching: TokenVerifier, idp: IdentityProvider, keys: Keys, clock: Clock
) -> None:
    assert fetching.verify(token(keys)).name == "alice"
    idp.status = 500
    clock.now = NOW + timedelta(hours=2)
    late = claims(iat=int(clock.now.timestamp()), exp=int(clock.now.timestamp()) + 60)
    assert fetching.verify(token(keys, payload=late)).name == "alice"


# --- claims ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "rule"),
    [
        ({"exp": int(NOW.timestamp()) - 61}, "token_expired"),
        ({"nbf": int(NOW.timestamp()) + 120}, "token_not_yet_valid"),
        ({"iat": int(NOW.timestamp()) + 120}, "token_not_yet_valid"),
        ({"exp": DROP}, "missing_claim"),
        ({"aud": DROP}, "missing_claim"),
        ({"iat": DROP}, "missing_claim"),
        ({"iss": DROP}, "missing_claim"),
        ({"sub": DROP}, "missing_claim"),
        ({"aud": "another-api"}, "wrong_audience"),
        ({"aud": ["another-api", "yet-another"]}, "wrong_audience"),
        ({"iss": "https://evil.example"}, "wrong_issuer"),
        ({"iss": ISSUER + "/"}, "wrong_issuer"),
        ({"exp": "9999999999"}, "malformed_claim"),
        ({"exp": True}, "malformed_claim"),
        ({"groups": {"admin": True}}, "malformed_claim"),
        ({"amr": [1, 2]}, "malformed_claim"),
        ({"auth_time": 10**20}, "malformed_claim"),
        ({"sub": 42}, "malformed_claim"),
    ],
)
def test_bad_claims_are_refused(
    verifier: TokenVerifier, keys: Keys, overrides: dict[str, Any], rule: str
) -> None:
    refused(verifier.verify, token(keys, payload=claims(**overrides)), rule)


def test_id_token_for_another_client_is_refused(verifier: TokenVerifier, keys: Keys) -> None:
    id_token = claims(aud="grafana", azp="grafana", nonce="n-0S6_WzA2Mj")
    raw = encode({"alg": "RS256", "kid": "rsa-1"}, id_token, signed_with(keys.rsa, "RS256"))
    refused(verifier.verify, raw, "wrong_audience")


@pytest.mark.parametrize("typ", ["logout+jwt", "dpop+jwt", "secevent+jwt", 5])
def test_tokens_of_another_type_are_refused(verifier: TokenVerifier, keys: Keys, typ: Any) -> None:
    refused(verifier.verify, token(keys, typ=typ), "wrong_token_type")


# --- humans and workloads -------------------------------------------------------------------


def workload_claims(workload: WorkloadIdentity, **overrides: Any) -> dict[str, Any]:
    base = claims(iss=workload.issuer, sub=workload.subject, aud=workload.audience)
    for name in ("preferred_username", "groups", "amr", "auth_time"):
        base.pop(name)
    base.update(overrides)
    return base


def test_workload_token_is_accepted_on_the_workload_track(
    verifier: TokenVerifier, keys: Keys
) -> None:
    raw = token(keys, payload=workload_claims(PIPELINE))
    principal = verifier.authenticate(raw)
    assert principal.kind is PrincipalKind.WORKLOAD
    assert principal.name == "feature-pipeline"
    explicit = verifier.verify_workload(
        raw, issuer=PIPELINE.issuer, subject=PIPELINE.subject, audience=PIPELINE.audience
    )
    assert explicit.kind is PrincipalKind.WORKLOAD
    assert not explicit.mfa
    other = token(keys, kid="ec-1", alg="ES256", payload=workload_claims(INDEXER))
    assert verifier.authenticate(other).name == "indexer"


@pytest.mark.parametrize("workload", [PIPELINE, INDEXER])
def test_workload_token_cannot_act_as_a_human(
    verifier: TokenVerifier, keys: Keys, workload: WorkloadIdentity
) -> None:
    raw = token(keys, payload=workload_claims(workload, aud=AUDIENCE))
    refused(verifier.verify, raw, "workload_as_human")


def test_client_credentials_token_cannot_act_as_a_human(
    verifier: TokenVerifier, keys: Keys
) -> None:
    payload = claims(sub="ml-pipeline", client_id="ml-pipeline", preferred_username=DROP)
    refused(verifier.verify, token(keys, payload=payload), "workload_as_human")


def test_human_token_cannot_act_as_a_workload(verifier: TokenVerifier, keys: Keys) -> None:
    human = token(keys)
    assert verifier.authenticate(human).kind is PrincipalKind.HUMAN

    def as_pipeline(raw: str) -> Principal:
        return verifier.verify_workload(
            raw, issuer=PIPELINE.issuer, subject=PIPELINE.subject, audience=PIPELINE.audience
        )

    def as_indexer(raw: str) -> Principal:
        return verifier.verify_workload(
            raw, issuer=INDEXER.issuer, subject=INDEXER.subject, audience=INDEXER.audience
        )

    refused(as_pipeline, human, "wrong_subject")
    interactive = token(keys, payload=claims(sub=PIPELINE.subject, preferred_username=DROP))
    refused(as_pipeline, interactive, "human_as_workload")
    refused(as_indexer, human, "wrong_issuer")
    wrong_audience = token(keys, payload=workload_claims(PIPELINE, aud="elsewhere"))
    refused(as_pipeline, wrong_audience, "wrong_audience")


def test_workload_from_an_unconfigured_issuer_is_refused(
    verifier: TokenVerifier, keys: Keys
) -> None:
    stranger = WorkloadIdentity("stranger", "https://other.example", "svc", AUDIENCE)
    raw = token(keys, payload=workload_claims(stranger))
    with pytest.raises(Unauthenticated) as caught:
        verifier.verify_workload(
            raw, issuer=stranger.issuer, subject=stranger.subject, audience=AUDIENCE
        )
    assert caught.value.rule == "identity.unknown_issuer"


# --- malformed and oversized tokens ---------------------------------------------------------


def test_altered_signature_or_payload_is_refused(verifier: TokenVerifier, keys: Keys) -> None:
    head, body, signature = token(keys).split(".")
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    refused(verifier.verify, f"{head}.{body}.{flipped}", "bad_signature")
    forged_body = b64(json.dumps(claims(preferred_username="carol")).encode())
    refused(verifier.verify, f"{head}.{forged_body}.{signature}", "bad_signature")
    refused(verifier.verify, f"{head}.{body}.", "malformed_token")


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "not-a-token",
        "a.b",
        "a.b.c.d.e",
        "eyJ!!!.eyJ.sig",
        "eyJhbGciOiJSUzI1NiJ9=.e30.c2ln",
        "e.e30.c2ln",
        "bm90IGpzb24.e30.c2ln",
        "WzEsMl0.e30.c2ln",
        "ZXlK\u00e9.e30.c2ln",
    ],
)
def test_malformed_tokens_are_refused(verifier: TokenVerifier, raw: str) -> None:
    refused(verifier.verify, raw, "malformed_token")


def test_malformed_payload_is_refused(verifier: TokenVerifier, keys: Keys) -> None:
    for payload in ("[1, 2]", '{"exp": NaN}', "\xff", '{"sub": "a"'):
        refused(verifier.verify, token(keys, payload=payload), "malformed_token")


def test_megabyte_header_is_refused_before_parsing(verifier: TokenVerifier) -> None:
    header = b64(json.dumps({"alg": "RS256", "kid": "rsa-1", "pad": "x" * 1_000_000}).encode())
    refused(verifier.verify, f"{header}.e30.c2ln", "token_too_large")


def test_header_over_8_kib_is_refused_even_in_a_small_token(verifier: TokenVerifier) -> None:
    header = b64(json.dumps({"alg": "RS256", "kid": "rsa-1", "pad": "x" * 9000}).encode())
    assert len(header) < 16 * 1024
    refused(verifier.verify, f"{header}.e30.c2ln", "token_too_large")


def test_deeply_nested_payload_is_refused(verifier: TokenVerifier, keys: Keys) -> None:
    nested = '{"sub": ' + "[" * 5000 + "]" * 5000 + "}"
    rule = "token_too_large" if len(b64(nested.encode())) > 16 * 1024 else "malformed_token"
    refused(verifier.verify, token(keys, payload=nested), rule)


@pytest.mark.parametrize(
    ("header", "payload"),
    [
        ('{"alg": "RS256", "alg": "none", "kid": "rsa-1"}', None),
        ('{"alg": "RS256", "kid": "rsa-1", "kid": "ec-1"}', None),
        (None, '{"sub": "u-1001", "sub": "admin", "iss": "' + ISSUER + '"}'),
        (None, '{"sub": "u-1001", "groups": {"a": 1, "a": 2}}'),
    ],
)
def test_duplicate_json_keys_are_refused(
    verifier: TokenVerifier, keys: Keys, header: str | None, payload: str | None
) -> None:
    raw = encode(
        header or {"alg": "RS256", "kid": "rsa-1"},
        payload or claims(),
        signed_with(keys.rsa, "RS256"),
    )
    refused(verifier.verify, raw, "duplicate_key")


@pytest.mark.parametrize(
    "extra",
    [
        {"crit": ["exp"]},
        {"crit": ["b64"], "b64": False},
        {"crit": []},
        {"crit": "urn:example:policy"},
        {"b64": False},
        {"zip": "DEF"},
    ],
)
def test_unknown_critical_extensions_are_refused(
    verifier: TokenVerifier, keys: Keys, extra: dict[str, Any]
) -> None:
    refused(verifier.verify, token(keys, **extra), "crit_unsupported")


def test_refusals_never_raise_anything_but_unauthenticated(
    verifier: TokenVerifier, keys: Keys
) -> None:
    good = token(keys)
    for position in range(0, len(good), 7):
        for replacement in (".", "A", "_", "-", "=", "\x00", "é"):
            mutated = good[:position] + replacement + good[position + 1 :]
            if mutated == good:
                continue
            try:
                principal = verifier.verify(mutated)
            except Unauthenticated:
                continue
            assert principal.name == "alice"  # an equivalent encoding of the same bits
