"""Sessions: the first use of each identity-provider token is an audit event.

The broker never sees a single sign-on login: the CLI and the browser talk to
the identity provider, and the broker only ever gets the access token. So the
moment a token is first presented is the login as far as the audit log can
know it: ``identity:session:started``, once per token across a fleet of
brokers, with who, which issuer, MFA and the token's lifetime. The token is
known to the store only by its SHA-256 and never enters the event.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from datetime import UTC, datetime

from breakglass.domain.events import EventTag
from breakglass.domain.model import Principal
from breakglass.identity.oidc import split_token
from breakglass.service.ports import Clock
from breakglass.storage.uow import UnitOfWorkFactory

MAX_CLAIM_CHARS = 200
MAX_GROUPS = 50
MAX_REMEMBERED = 366 * 86400.0  # a token claiming a longer life is remembered this long


class SessionLog:
    """Records each verified token's first use; remembers recent tokens to skip the store."""

    def __init__(self, uow: UnitOfWorkFactory, clock: Clock, *, remember: int = 10_000) -> None:
        self._uow = uow
        self._clock = clock
        self._remember = remember
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()

    def started(self, token: str, principal: Principal, channel: str) -> None:
        """Note that ``principal`` used ``token`` (already verified) through ``channel``."""
        digest = hashlib.sha256(token.encode()).digest()
        with self._lock:
            if digest in self._seen:
                self._seen.move_to_end(digest)
                return
        _, claims = split_token(token)
        now = self._clock.now()
        exp = float(claims["exp"])  # verified: a number, not in the past
        expires = datetime.fromtimestamp(min(exp, now.timestamp() + MAX_REMEMBERED), UTC)
        with self._uow() as uow:
            if uow.sessions.first_use(digest, principal.name, now, expires,
                                      subject=principal.subject_id):
                uow.events.append(ts=now, actor=principal.name, action=EventTag.SESSION_STARTED,
                                  payload=_session(claims, principal, channel, expires))
        with self._lock:
            self._seen[digest] = None
            while len(self._seen) > self._remember:
                self._seen.popitem(last=False)


def _session(claims: dict[str, object], principal: Principal, channel: str,
             expires: datetime) -> dict[str, object]:
    """What the event says about the session: identity and assurance, never the token."""
    def text(name: str) -> str | None:
        value = claims.get(name)
        return value[:MAX_CLAIM_CHARS] if isinstance(value, str) else None

    return {
        "channel": channel,
        "kind": principal.kind.value,
        "issuer": text("iss"),
        "subject": text("sub"),
        "actor_subject": principal.subject_id,
        "token_id": text("jti"),
        "mfa": principal.mfa,
        "amr": [a[:MAX_CLAIM_CHARS] for a in principal.amr],
        "auth_time": principal.auth_time.isoformat() if principal.auth_time else None,
        "groups": sorted(g[:MAX_CLAIM_CHARS] for g in principal.groups)[:MAX_GROUPS],
        "expires_at": expires.isoformat(),
    }
