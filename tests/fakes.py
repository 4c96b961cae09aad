"""Fakes for the unit tier: a clock that moves only when told, a connector in memory."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from breakglass.connectors import MARKER_PREFIX, Connector, GrantSpec, IssuedCredential, Ownership
from breakglass.domain.errors import TargetError
from breakglass.domain.incidents import IncidentLookup, IncidentStatus
from breakglass.domain.model import Principal, PrincipalKind


class FakeClock:
    def __init__(self, start: datetime | None = None) -> None:
        self.current = start or datetime(2026, 11, 23, 2, 14, tzinfo=UTC)

    def now(self) -> datetime:
        return self.current

    def advance(self, **kwargs: float) -> None:
        self.current += timedelta(**kwargs)


TEST_OWNERSHIP = Ownership(MARKER_PREFIX, b"the test deployment's ownership key")
"""The ownership of every fake connector that is not given another."""


class MemoryConnector(Connector):
    """Keeps minted credentials in a dict; can be told to fail."""

    type = "memory"

    def __init__(self, name: str = "mem", config: Mapping[str, Any] | None = None, *,
                 ownership: Ownership = TEST_OWNERSHIP) -> None:
        super().__init__(name, config or {}, ownership=ownership)
        self.live: dict[str, GrantSpec] = {}
        self.revocations: list[str] = []
        self.fail_grant = False
        self.fail_revoke = False

    def grant(self, spec: GrantSpec) -> IssuedCredential:
        if self.fail_grant:
            raise TargetError(f"target {self.name} is down")
        ref = self.ownership.ref_for(spec.grant_id)
        self.live[ref] = spec
        return IssuedCredential(target_ref=ref, secret={"type": "memory", "token": "s3cr3t-" + ref})

    def revoke(self, target_ref: str, artefacts: tuple[str, ...] = ()) -> None:
        if self.fail_revoke:
            raise TargetError(f"target {self.name} is down")
        self.revocations.append(target_ref)
        self.live.pop(target_ref, None)

    def verify(self, target_ref: str) -> bool:
        return target_ref in self.live

    def list_managed(self) -> list[str]:
        return sorted(self.live)

    def planned_ref(self, grant_id: str) -> str | None:
        return self.ownership.ref_for(grant_id)


TEST_ISSUER = "https://idp.test"


def human(name: str, *groups: str, mfa: bool = True, auth_time: datetime | None = None,
          clock: FakeClock | None = None, subject: str | None = None) -> Principal:
    """A person whose ``sub`` is opaque and not their name (``subject`` to choose it)."""
    when = auth_time or (clock.now() if clock else datetime(2026, 11, 23, 2, 10, tzinfo=UTC))
    return Principal(name=name, kind=PrincipalKind.HUMAN, groups=frozenset(groups), mfa=mfa,
                     auth_time=when, amr=("mfa",) if mfa else ("pwd",), issuer=TEST_ISSUER,
                     subject=subject or "sub-" + name)


class FakeIncidentDirectory:
    """An incident system in memory: ``incidents[id] = "open" | "closed"``; ``down`` to fail."""

    def __init__(self, **incidents: str) -> None:
        self.incidents = {k.replace("_", "-"): v for k, v in incidents.items()}
        self.down = False
        self.asked: list[str] = []

    def lookup(self, incident: str) -> IncidentLookup:
        self.asked.append(incident)
        if self.down:
            return IncidentLookup(incident, IncidentStatus.UNAVAILABLE, "ConnectError")
        status = self.incidents.get(incident)
        if status is None:
            return IncidentLookup(incident, IncidentStatus.UNKNOWN)
        state = IncidentStatus.OPEN if status == "open" else IncidentStatus.CLOSED
        return IncidentLookup(incident, state, status)


def fresh_ownership(prefix: str = MARKER_PREFIX) -> Ownership:
    """A deployment of its own: the prefix and a new random key (another store's marker)."""
    return Ownership(prefix, secrets.token_bytes(32))
