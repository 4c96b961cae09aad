"""Verifying identity tokens: who is asking, and can we believe it.

:class:`TokenVerifier` turns a bearer token into a
:class:`~breakglass.domain.model.Principal` or raises
:class:`~breakglass.domain.errors.Unauthenticated` with a short reason and a
rule such as ``identity.token_expired``. Nothing else escapes it.

The token is taken apart here, before any library sees it: size limits,
strict base64url, JSON without duplicate keys, an explicit algorithm
allowlist of asymmetric algorithms only (``none`` and ``HS*`` can never be
configured), a ``kid`` the issuer really publishes, an algorithm that fits
that key, no ``crit`` extensions. Only then does PyJWT check the signature,
and the claims are checked against the injected clock.

A person is the token's issuer and ``sub`` (:attr:`Principal.subject_id`);
``preferred_username`` is only their display name.

Humans and workloads are separate tracks: a token whose issuer and subject
belong to a configured workload is never accepted as a human, a
client-credentials token (``sub`` equal to ``client_id``) is never a human,
and a workload token must match its issuer, subject and audience exactly and
carry no trace of an interactive login (``amr``, ``auth_time``).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from jwt import PyJWS
from jwt.exceptions import InvalidKeyError, InvalidSignatureError, PyJWTError

from breakglass.domain.errors import Unauthenticated
from breakglass.domain.model import Principal, PrincipalKind
from breakglass.identity.jwks import Clock, KeySource, utcnow

DEFAULT_ALGORITHMS = ("RS256", "ES256", "EdDSA")
SUPPORTED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
MAX_TOKEN_CHARS = 16 * 1024
MAX_HEADER_BYTES = 8 * 1024
MAX_KID_CHARS = 256
MAX_SUBJECT_CHARS = 255
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_TOKEN_TYPES = frozenset({"jwt", "at+jwt", "application/jwt", "application/at+jwt"})
_FORBIDDEN_HEADERS = ("b64", "zip", "enc")


@dataclass(frozen=True, slots=True)
class WorkloadIdentity:
    """A catalog workload as the identity layer sees it (``workloads.<name>``)."""

    name: str
    issuer: str
    subject: str
    audience: str


def _refuse(reason: str, rule: str) -> Unauthenticated:
    return Unauthenticated(reason, rule=f"identity.{rule}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _refuse(f"duplicate JSON member {key[:40]!r}", "duplicate_key")
        result[key] = value
    return result


def _not_a_number(constant: str) -> None:
    raise _refuse(f"JSON constant {constant} is not allowed", "malformed_token")


def _segment(segment: str, what: str) -> bytes:
    if not _B64URL.fullmatch(segment) or len(segment) % 4 == 1:
        raise _refuse(f"{what} is not base64url", "malformed_token")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError) as exc:
        raise _refuse(f"{what} is not base64url", "malformed_token") from exc


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(
            raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_not_a_number
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _refuse(f"{what} is not JSON", "malformed_token") from exc
    if not isinstance(value, dict):
        raise _refuse(f"{what} is not a JSON object", "malformed_token")
    return value


def split_token(token: object) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims of a compact JWS, refused unless strictly well-formed.

    The signature is *not* checked here; nothing returned may be trusted yet.
    """
    if not isinstance(token, str) or not token.isascii():
        raise _refuse("token is not an ASCII string", "malformed_token")
    if len(token) > MAX_TOKEN_CHARS:
        raise _refuse(f"token is longer than {MAX_TOKEN_CHARS} characters", "token_too_large")
    parts = token.split(".")
    if len(parts) != 3:
        raise _refuse("token is not a signed JWT (three dot-separated parts)", "malformed_token")
    if len(parts[0]) > (MAX_HEADER_BYTES * 4 + 2) // 3:
        raise _refuse(f"token header is larger than {MAX_HEADER_BYTES} bytes", "token_too_large")
    header = _json_object(_segment(parts[0], "token header"), "token header")
    claims = _json_object(_segment(parts[1], "token payload"), "token payload")
    _segment(parts[2], "token signature")
    return header, claims


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _refuse(f"claim {name!r} is not a number", "malformed_claim")
    return float(value)


def _instant(claims: Mapping[str, Any], name: str) -> datetime | None:
    value = _number(claims, name)
    if value is None:
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise _refuse(f"claim {name!r} is not a time", "malformed_claim") from exc


def _strings(claims: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = claims.get(name)
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _refuse(f"claim {name!r} is not a list of strings", "malformed_claim")
    return tuple(value)


def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class TokenVerifier:
    """Verifies human and workload tokens of one identity configuration."""

    def __init__(
        self,
        issuer: str,
        audience: str,
        *,
        key_source: KeySource,
        algorithms: Iterable[str] = DEFAULT_ALGORITHMS,
        groups_claim: str = "groups",
        mfa_amr_any_of: Iterable[str] = ("mfa", "otp", "hwk"),
        leeway: float | timedelta = 60,
        clock: Clock = utcnow,
        workloads: Iterable[WorkloadIdentity] = (),
        workload_key_sources: Mapping[str, KeySource] | None = None,
    ) -> None:
        self.algorithms = frozenset(algorithms)
        unsupported = self.algorithms - SUPPORTED_ALGORITHMS
        if unsupported or not self.algorithms:
            raise ValueError(f"token algorithms must be asymmetric: {sorted(unsupported)}")
        self.leeway = _seconds(leeway)
        if not 0 <= self.leeway <= 60:
            raise ValueError("token leeway must be between 0 and 60 seconds")
        self.issuer = issuer
        self.audience = audience
        self.groups_claim = groups_claim
        self.mfa_amr_any_of = frozenset(mfa_amr_any_of)
        self.workloads = tuple(workloads)
        self._clock = clock
        self._key_sources = {issuer: key_source, **(workload_key_sources or {})}
        self._jws = PyJWS(options={"enforce_minimum_key_length": True})

    def verify(self, token: str) -> Principal:
        """A human's access token, issued by the catalog's identity issuer for the broker."""
        header, claims = split_token(token)
        if self._workload_of(claims) is not None:
            raise _refuse("a workload token cannot act as a human", "workload_as_human")
        claims = self._verified(token, header, claims, issuer=self.issuer, audience=self.audience)
        if claims.get("client_id") is not None and claims.get("client_id") == claims["sub"]:
            raise _refuse("a client-credentials token cannot act as a human", "workload_as_human")
        name = claims.get("preferred_username")
        if not isinstance(name, str) or not name.strip():
            name = claims["sub"]
        amr = _strings(claims, "amr")
        return Principal(
            name=name,
            kind=PrincipalKind.HUMAN,
            groups=frozenset(_strings(claims, self.groups_claim)),
            mfa=bool(self.mfa_amr_any_of.intersection(amr)),
            auth_time=_instant(claims, "auth_time"),
            amr=amr,
            issuer=claims["iss"],
            subject=claims["sub"],
        )

    def verify_workload(
        self, token: str, *, issuer: str, subject: str, audience: str, name: str | None = None
    ) -> Principal:
        """A workload's token: issuer, subject and audience must match exactly."""
        header, claims = split_token(token)
        claims = self._verified(token, header, claims, issuer=issuer, audience=audience)
        if claims["sub"] != subject:
            raise _refuse("token subject is not this workload", "wrong_subject")
        if "amr" in claims or "auth_time" in claims:
            raise _refuse(
                "a token from an interactive login cannot act as a workload", "human_as_workload"
            )
        return Principal(
            name=name or subject,
            kind=PrincipalKind.WORKLOAD,
            groups=frozenset(),
            mfa=False,
            auth_time=None,
            issuer=issuer,
            subject=subject,
        )

    def authenticate(self, token: str) -> Principal:
        """Either track: a configured workload's token, or else a human's."""
        _, claims = split_token(token)
        workload = self._workload_of(claims)
        if workload is None:
            return self.verify(token)
        return self.verify_workload(
            token,
            issuer=workload.issuer,
            subject=workload.subject,
            audience=workload.audience,
            name=workload.name,
        )

    def _workload_of(self, claims: Mapping[str, Any]) -> WorkloadIdentity | None:
        for workload in self.workloads:
            if claims.get("iss") == workload.issuer and claims.get("sub") == workload.subject:
                return workload
        return None

    def _verified(
        self,
        token: str,
        header: Mapping[str, Any],
        claims: dict[str, Any],
        *,
        issuer: str,
        audience: str,
    ) -> dict[str, Any]:
        self._check_header(header)
        if token.endswith("."):
            raise _refuse("token has no signature", "malformed_token")
        if "iss" not in claims:
            raise _refuse("token has no 'iss' claim", "missing_claim")
        if claims["iss"] != issuer:
            raise _refuse("token was issued by another issuer", "wrong_issuer")
        key_source = self._key_sources.get(issuer)
        if key_source is None:
            raise _refuse("no keys are configured for this issuer", "unknown_issuer")
        alg, kid = header["alg"], header["kid"]
        key = key_source.get(kid)
        if key is None:
            raise _refuse("token is signed with an unknown key", "unknown_kid")
        if alg not in key.algorithms:
            raise _refuse(f"algorithm {alg} does not fit the signing key", "alg_key_mismatch")
        try:
            self._jws.decode_complete(token, key=key.key, algorithms=[alg])
        except InvalidSignatureError as exc:
            raise _refuse("token signature is invalid", "bad_signature") from exc
        except InvalidKeyError as exc:
            raise _refuse("the signing key is not acceptable", "weak_key") from exc
        except (PyJWTError, ValueError, TypeError) as exc:
            raise _refuse("token signature cannot be checked", "bad_signature") from exc
        self._check_claims(claims, audience)
        return claims

    def _check_header(self, header: Mapping[str, Any]) -> None:
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            shown = alg[:20] if isinstance(alg, str) else alg
            raise _refuse(f"token algorithm {shown!r} is not allowed", "alg_not_allowed")
        if "crit" in header:
            raise _refuse("token has critical header extensions", "crit_unsupported")
        for name in _FORBIDDEN_HEADERS:
            if name in header:
                raise _refuse(f"token header {name!r} is not supported", "crit_unsupported")
        typ = header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.lower() not in _TOKEN_TYPES):
            raise _refuse("token is not an access token", "wrong_token_type")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _refuse("token header has no key id", "unknown_kid")
        if len(kid) > MAX_KID_CHARS:
            raise _refuse("token is signed with an unknown key", "unknown_kid")

    def _check_claims(self, claims: Mapping[str, Any], audience: str) -> None:
        for name in ("sub", "aud", "exp", "iat"):
            if name not in claims:
                raise _refuse(f"token has no {name!r} claim", "missing_claim")
        if not isinstance(claims["sub"], str) or not claims["sub"]:
            raise _refuse("claim 'sub' is not a string", "malformed_claim")
        if len(claims["sub"]) > MAX_SUBJECT_CHARS:  # OIDC Core 2: at most 255 characters
            raise _refuse(f"claim 'sub' is longer than {MAX_SUBJECT_CHARS} characters",
                          "malformed_claim")
        if audience not in _strings(claims, "aud"):
            raise _refuse("token is meant for another audience", "wrong_audience")
        now = self._clock().timestamp()
        exp, iat, nbf = (_number(claims, name) for name in ("exp", "iat", "nbf"))
        if exp is None or iat is None:
            raise _refuse("token has no expiry or issue time", "missing_claim")
        if now > exp + self.leeway:
            raise _refuse("token has expired", "token_expired")
        if nbf is not None and nbf > now + self.leeway:
            raise _refuse("token is not valid yet", "token_not_yet_valid")
        if iat > now + self.leeway:
            raise _refuse("token was issued in the future", "token_not_yet_valid")


def mfa_fresh(
    principal: Principal, max_age: timedelta, now: datetime, *, leeway: timedelta | None = None
) -> bool:
    """Did the principal authenticate with MFA no longer than ``max_age`` ago?"""
    if not principal.mfa or principal.auth_time is None:
        return False
    skew = timedelta(seconds=60) if leeway is None else leeway
    age = now - principal.auth_time
    return -skew <= age <= max_age
