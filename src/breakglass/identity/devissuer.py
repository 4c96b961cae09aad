"""The in-process token issuer of ``breakglass serve --dev`` and ``breakglass demo``.

It stands in for a real identity provider on a developer's machine: an
Ed25519 key pair generated at start (never written anywhere), tokens for the
users of the catalog's ``directory``, and a JWKS. Its tokens are checked by
the very same :class:`~breakglass.identity.oidc.TokenVerifier` as production
tokens, through a :class:`~breakglass.identity.jwks.StaticKeySource`, so the
dev path exercises the production verification code.

A restart generates a new key: every token issued before it stops working.

Each user's ``sub`` is the directory entry's ``subject`` or, without one, a
stable opaque ID derived from the username (:func:`dev_subject`), never the
username itself: the broker decides who is who by ``sub``, and the dev path
must exercise that rule, not hide it.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from breakglass.identity.jwks import Clock, StaticKeySource, utcnow
from breakglass.identity.oidc import TokenVerifier, WorkloadIdentity

DEV_ISSUER = "urn:breakglass:dev-issuer"
DEFAULT_TTL = timedelta(hours=12)


class DirectoryEntryLike(Protocol):
    """A ``directory.<user>`` entry of the catalog."""

    @property
    def groups(self) -> Sequence[str]: ...

    @property
    def mfa(self) -> bool: ...


def dev_subject(username: str) -> str:
    """The dev issuer's stable ``sub`` for a username without a directory ``subject``."""
    return "dev-" + hashlib.sha256(("breakglass-dev:" + username).encode()).hexdigest()[:24]


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class DevIssuer:
    """Issues EdDSA-signed access tokens for directory users and workloads."""

    def __init__(
        self,
        issuer: str = DEV_ISSUER,
        audience: str = "breakglass",
        *,
        groups_claim: str = "groups",
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.groups_claim = groups_claim
        self._key = Ed25519PrivateKey.generate()
        self.kid = "dev-" + secrets.token_hex(8)

    def jwks(self) -> dict[str, Any]:
        raw = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        key = {"kty": "OKP", "crv": "Ed25519", "x": _b64url(raw)}
        return {"keys": [{**key, "kid": self.kid, "use": "sig", "alg": "EdDSA"}]}

    def key_source(self) -> StaticKeySource:
        return StaticKeySource(self.jwks())

    def issue(
        self,
        username: str,
        entry: DirectoryEntryLike | Mapping[str, Any],
        now: datetime,
        ttl: timedelta = DEFAULT_TTL,
        *,
        subject: str | None = None,
    ) -> str:
        """A human's access token; MFA as the directory says, authenticated ``now``.

        ``sub`` is ``subject``, else the entry's ``subject``, else :func:`dev_subject`.
        """
        if isinstance(entry, Mapping):
            groups, mfa = list(entry.get("groups", ())), bool(entry.get("mfa", False))
            bound = entry.get("subject")
        else:
            groups, mfa = list(entry.groups), bool(entry.mfa)
            bound = getattr(entry, "subject", None)
        claims = {
            "sub": subject or (bound if isinstance(bound, str) and bound else None)
            or dev_subject(username),
            "preferred_username": username,
            self.groups_claim: groups,
            "amr": ["mfa"] if mfa else ["pwd"],
            "auth_time": int(now.timestamp()),
        }
        return self._sign(claims, self.audience, now, ttl)

    def issue_workload(
        self,
        subject: str,
        now: datetime,
        ttl: timedelta = timedelta(minutes=15),
        audience: str | None = None,
    ) -> str:
        """A workload's token (the dev stand-in for a service-account token)."""
        return self._sign({"sub": subject}, audience or self.audience, now, ttl)

    def verifier(
        self,
        *,
        clock: Clock = utcnow,
        mfa_amr_any_of: Iterable[str] = ("mfa", "otp", "hwk"),
        workloads: Iterable[WorkloadIdentity] = (),
    ) -> TokenVerifier:
        """The production verifier, pointed at this issuer's keys."""
        return TokenVerifier(
            self.issuer,
            self.audience,
            key_source=self.key_source(),
            algorithms=("EdDSA",),
            groups_claim=self.groups_claim,
            mfa_amr_any_of=mfa_amr_any_of,
            clock=clock,
            workloads=workloads,
        )

    def _sign(self, claims: dict[str, Any], audience: str, now: datetime, ttl: timedelta) -> str:
        issued = int(now.timestamp())
        payload = {
            **claims,
            "iss": self.issuer,
            "aud": audience,
            "iat": issued,
            "nbf": issued,
            "exp": issued + int(ttl.total_seconds()),
            "jti": secrets.token_urlsafe(12),
        }
        headers = {"kid": self.kid, "typ": "at+jwt"}
        return jwt.encode(payload, self._key, algorithm="EdDSA", headers=headers)
