"""Where token signing keys come from.

A :class:`KeySource` answers one question: which verification key has this
``kid``? Two sources exist:

* :class:`JwksCache` reads the issuer's OIDC discovery document, then its
  ``jwks_uri``, and caches the keys. An unknown ``kid`` triggers at most one
  refresh per ``min_refresh_interval`` (30 s), so a flood of tokens with
  made-up kids cannot turn the broker into an amplifier against the identity
  provider. Nothing named by a token (``jku``, ``x5u``, ``jwk``, ``x5c``) is
  ever fetched or trusted: the only URLs are the configured issuer's.
* :class:`StaticKeySource` holds a fixed JWKS (the dev issuer, tests).

Each key carries the algorithms it may verify, derived from its own ``alg``
or, when absent, from its key type and curve, so a token cannot pick an
algorithm the key was never meant for.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import httpx
from jwt import PyJWK
from jwt.exceptions import PyJWTError

from breakglass.domain.errors import Unauthenticated

Clock = Callable[[], datetime]

MAX_DOCUMENT_BYTES = 512 * 1024
_PUBLIC_MEMBERS = ("kty", "kid", "use", "alg", "crv", "n", "e", "x", "y")
_RSA_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_CURVE_ALGS = {
    ("EC", "P-256"): frozenset({"ES256"}),
    ("EC", "P-384"): frozenset({"ES384"}),
    ("EC", "P-521"): frozenset({"ES512"}),
    ("OKP", "Ed25519"): frozenset({"EdDSA"}),
}


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """One public key and the algorithms it is allowed to verify."""

    kid: str
    key: Any
    algorithms: frozenset[str]


class KeySource(Protocol):
    def get(self, kid: str) -> VerificationKey | None:
        """The key named ``kid``, or ``None`` when the issuer has no such key."""
        ...


def _algorithms_for(jwk: Mapping[str, Any]) -> frozenset[str]:
    """What a JWK may verify: its key type decides, its ``alg`` may only narrow."""
    kty, crv = str(jwk.get("kty")), str(jwk.get("crv"))
    natural = _RSA_ALGS if kty == "RSA" else _CURVE_ALGS.get((kty, crv), frozenset())
    alg = jwk.get("alg")
    if alg is None:
        return frozenset(a for a in natural if a.startswith("RS")) if kty == "RSA" else natural
    return frozenset({alg}) & natural if isinstance(alg, str) else frozenset()


def parse_jwks(document: object) -> dict[str, VerificationKey]:
    """Usable public signing keys of a JWKS document, by ``kid``.

    Keys without a ``kid``, for encryption, symmetric, of an unknown type, or
    with an ``alg`` that does not fit their type are left out. Private members
    are never read.
    """
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise TypeError("not a JWKS document")
    keys: dict[str, VerificationKey] = {}
    for entry in document["keys"]:
        if not isinstance(entry, Mapping):
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid or entry.get("use", "sig") != "sig":
            continue
        algorithms = _algorithms_for(entry)
        if not algorithms:
            continue
        public = {name: entry[name] for name in _PUBLIC_MEMBERS if name in entry}
        public.pop("alg", None)
        public.pop("use", None)
        try:
            parsed = PyJWK(public, algorithm=min(algorithms))
        except (PyJWTError, ValueError, TypeError):
            continue
        keys[kid] = VerificationKey(kid=kid, key=parsed.key, algorithms=algorithms)
    return keys


class StaticKeySource:
    """A fixed set of keys, given as a JWKS document."""

    def __init__(self, jwks: Mapping[str, Any]) -> None:
        self._keys = parse_jwks(jwks)

    def get(self, kid: str) -> VerificationKey | None:
        return self._keys.get(kid)


def _unavailable(reason: str) -> Unauthenticated:
    return Unauthenticated(
        f"cannot load the identity provider's keys: {reason}", rule="identity.jwks_unavailable"
    )


def fetch_json(http: httpx.Client, url: str) -> dict[str, Any]:
    """GET a JSON object, mapping every failure to ``identity.jwks_unavailable``."""
    try:
        response = http.get(url, headers={"accept": "application/json"}, follow_redirects=False)
    except httpx.HTTPError as exc:
        raise _unavailable(f"{url}: {type(exc).__name__}") from exc
    if response.status_code != 200:
        raise _unavailable(f"{url} answered {response.status_code}")
    if len(response.content) > MAX_DOCUMENT_BYTES:
        raise _unavailable(f"{url} answered more than {MAX_DOCUMENT_BYTES} bytes")
    try:
        document = response.json()
    except ValueError as exc:
        raise _unavailable(f"{url} did not answer JSON") from exc
    if not isinstance(document, dict):
        raise _unavailable(f"{url} did not answer a JSON object")
    return document


def discover(http: httpx.Client, issuer: str) -> dict[str, Any]:
    """The issuer's OpenID configuration; refused unless it names exactly this issuer."""
    document = fetch_json(http, issuer.rstrip("/") + "/.well-known/openid-configuration")
    if document.get("issuer") != issuer:
        raise Unauthenticated(
            f"discovery document of {issuer} names issuer {document.get('issuer')!r}",
            rule="identity.discovery_mismatch",
        )
    return document


class JwksCache:
    """Discovery plus JWKS for one issuer, cached and refreshed sparingly.

    Thread-safe: one refresh at a time. When a refresh fails but keys are
    already known, the known keys keep working until the next attempt.
    """

    def __init__(
        self,
        issuer: str,
        http: httpx.Client,
        clock: Clock = utcnow,
        *,
        min_refresh_interval: timedelta = timedelta(seconds=30),
        max_age: timedelta = timedelta(hours=1),
    ) -> None:
        self.issuer = issuer
        self._http = http
        self._clock = clock
        self._min_refresh_interval = min_refresh_interval
        self._max_age = max_age
        self._lock = threading.Lock()
        self._keys: dict[str, VerificationKey] | None = None
        self._jwks_uri: str | None = None
        self._fetched_at: datetime | None = None
        self._attempted_at: datetime | None = None

    def get(self, kid: str) -> VerificationKey | None:
        with self._lock:
            now = self._clock()
            stale = self._fetched_at is None or now - self._fetched_at >= self._max_age
            if stale or kid not in (self._keys or {}):
                self._refresh_if_allowed(now)
            if self._keys is None:
                raise _unavailable("no keys loaded yet; retrying shortly")
            return self._keys.get(kid)

    def _refresh_if_allowed(self, now: datetime) -> None:
        if self._attempted_at is not None and now - self._attempted_at < self._min_refresh_interval:
            return
        self._attempted_at = now
        try:
            if self._jwks_uri is None or self._keys is None:
                self._jwks_uri = self._jwks_uri_from_discovery()
            keys = parse_jwks(fetch_json(self._http, self._jwks_uri))
        except Unauthenticated:
            self._jwks_uri = None
            if self._keys is None:
                raise
            return
        except TypeError as exc:
            if self._keys is None:
                raise _unavailable(str(exc)) from exc
            return
        self._keys = keys
        self._fetched_at = now

    def _jwks_uri_from_discovery(self) -> str:
        jwks_uri = discover(self._http, self.issuer).get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
            raise _unavailable("discovery document has no usable jwks_uri")
        if self.issuer.startswith("https://") and not jwks_uri.startswith("https://"):
            raise _unavailable("jwks_uri is not https for an https issuer")
        return jwks_uri
