"""The break-glass domain: principals, zones, roles, requests, approvals, grants.

Pure: no I/O, no clock, no environment. Time always comes in as an argument.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from breakglass.domain.errors import Conflict
from breakglass.domain.names import (
    legacy_key,
    may_be,
    normalise_name,
    same_subject,
    subject_key,
)


class Zone(StrEnum):
    """Blast-radius class. Ordered: A < B < C."""

    A = "A"
    B = "B"
    C = "C"

    @property
    def rank(self) -> int:
        return "ABC".index(self.value)


def highest_zone(zones: list[Zone]) -> Zone:
    return max(zones, key=lambda z: z.rank)


class PrincipalKind(StrEnum):
    HUMAN = "human"
    WORKLOAD = "workload"


@dataclass(frozen=True, slots=True)
class Principal:
    """A named human or a workload, as the identity provider vouched for it.

    The person is ``(issuer, subject)`` (:attr:`subject_id`); ``name`` is the
    display name, for people to read and for the catalog's ``user:<name>``
    selectors, never for deciding whether two principals are one person.
    """

    name: str
    kind: PrincipalKind
    groups: frozenset[str]
    mfa: bool
    auth_time: datetime | None
    amr: tuple[str, ...] = ()
    issuer: str = ""
    subject: str = ""
    """The token's ``sub``; empty only for principals built without a token (a legacy name)."""

    @property
    def subject_id(self) -> str:
        """The stable key of this person: issuer and ``sub`` (see :mod:`.names`)."""
        if not self.subject:
            return legacy_key(self.name)
        return subject_key(self.issuer, self.subject)

    @property
    def teams(self) -> frozenset[str]:
        return frozenset(g.removeprefix("team:") for g in self.groups if g.startswith("team:"))

    def matches(self, selector: str, people: Mapping[str, str] | None = None) -> bool:
        """``group:<g>`` matches a group member, ``user:<u>`` (or a bare name) one person.

        A name the catalog binds to a subject (``people``: normalised name to
        ``sub``) matches that human's subject only; otherwise the normalised
        display name.
        """
        if selector.startswith("group:"):
            return selector.removeprefix("group:") in self.groups
        wanted = normalise_name(selector.removeprefix("user:"))
        bound = (people or {}).get(wanted)
        if bound is not None:
            return self.kind is PrincipalKind.HUMAN and self.subject == bound
        return normalise_name(self.name) == wanted


@dataclass(frozen=True, slots=True)
class ZonePolicy:
    zone: Zone
    description: str
    default_ttl: timedelta
    max_ttl: timedelta
    approvals: int
    self_approval: bool = False
    approvers_outside_team: bool = True
    extension_approvals: int | None = None
    require_mfa: bool = True
    max_total: timedelta | None = None


@dataclass(frozen=True, slots=True)
class RoleDef:
    name: str
    zone: Zone
    target: str
    environment: str
    requesters: tuple[str, ...]
    grant: dict[str, Any]
    max_ttl: timedelta | None = None
    description: str = ""


@dataclass(frozen=True, slots=True)
class Runbook:
    id: str
    title: str
    roles: tuple[str, ...]
    reason_codes: tuple[str, ...]
    requesters: tuple[str, ...]
    severities: tuple[str, ...] = ()
    """Incident severities (from the incident system) the runbook applies to; empty: any."""


@dataclass(frozen=True, slots=True)
class WorkloadDef:
    """A service account that can receive a temporary override (``workloads.<name>``)."""

    name: str
    target: str
    account: str
    roles: tuple[str, ...] = ()
    """Roles whose privileges may be added to the account; empty: every role on its target."""
    requesters: tuple[str, ...] = ()
    """Humans who may request an override on the workload's behalf."""
    subject: str = ""
    """The ``sub`` of the workload's identity token (``workloads.<name>.subject``)."""

    def allows_role(self, role: RoleDef) -> bool:
        return role.target == self.target and (not self.roles or role.name in self.roles)


@dataclass(frozen=True, slots=True)
class Policy:
    """The domain's view of the catalog: everything the rules need, nothing else."""

    organization: str
    incident_pattern: str
    reason_codes: tuple[str, ...]
    zones: dict[Zone, ZonePolicy]
    roles: dict[str, RoleDef]
    approvers: dict[Zone, tuple[str, ...]]
    shared_accounts: frozenset[str]
    """Normalised names (:func:`~breakglass.domain.names.normalise_name`) of shared accounts."""
    mfa_max_age: timedelta
    runbooks: dict[str, Runbook] = field(default_factory=dict)
    pending_timeout: timedelta = timedelta(hours=1)
    workloads: dict[str, WorkloadDef] = field(default_factory=dict)
    incident_fail_open_zone_a: bool = False
    """When the incident system cannot be reached, zone A requests go ahead (logged)."""
    version: str = ""
    """SHA-256 (hex) of the catalog text this policy was read from; recorded with requests."""
    people: Mapping[str, str] = field(default_factory=dict)
    """Directory people bound to a subject: normalised name to the token's ``sub``."""

    def selects(self, principal: Principal, selectors: tuple[str, ...] | list[str]) -> bool:
        """Does any selector name this principal (by group, bound subject or name)?"""
        return any(principal.matches(s, self.people) for s in selectors)


PENDING_TIMEOUT_REASON = "no decision before the pending timeout"


class RequestState(StrEnum):
    PENDING = "pending"
    ACTIVATING = "activating"
    ACTIVE = "active"
    REVOKING = "revoking"
    EXPIRED = "expired"
    REVOKED = "revoked"
    DENIED = "denied"
    CANCELLED = "cancelled"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        return self in _FINAL


_FINAL = frozenset(
    {
        RequestState.EXPIRED,
        RequestState.REVOKED,
        RequestState.DENIED,
        RequestState.CANCELLED,
        RequestState.FAILED,
    }
)

_TRANSITIONS: dict[RequestState, frozenset[RequestState]] = {
    RequestState.PENDING: frozenset(
        {
            RequestState.ACTIVATING,
            RequestState.DENIED,
            RequestState.CANCELLED,
            RequestState.EXPIRED,
        }
    ),
    RequestState.ACTIVATING: frozenset({RequestState.ACTIVE, RequestState.FAILED}),
    RequestState.ACTIVE: frozenset({RequestState.REVOKING}),
    RequestState.REVOKING: frozenset({RequestState.EXPIRED, RequestState.REVOKED}),
}


@dataclass(frozen=True, slots=True)
class Approval:
    approver: str
    teams: frozenset[str]
    mfa: bool
    at: datetime
    comment: str = ""
    approver_subject: str = ""
    """The approver's :attr:`Principal.subject_id`; empty on approvals older than subjects."""

    @property
    def approver_id(self) -> str:
        return self.approver_subject or legacy_key(self.approver)


@dataclass(slots=True)
class AccessRequest:
    """One request for emergency access: who, what, why, for how long."""

    id: str
    requester: str
    requester_kind: PrincipalKind
    requester_teams: frozenset[str]
    roles: tuple[str, ...]
    zone: Zone
    environment: str
    incident: str
    reason: str
    justification: str
    ttl: timedelta
    created_at: datetime
    pending_until: datetime
    state: RequestState = RequestState.PENDING
    approvals: list[Approval] = field(default_factory=list)
    runbook: str | None = None
    workload: str | None = None
    public_key: str | None = None
    """The requester's OpenSSH public key, signed by roles on SSH targets."""
    activated_at: datetime | None = None
    expires_at: datetime | None = None
    ended_at: datetime | None = None
    end_reason: str = ""
    end_state: RequestState | None = None
    version: int = 0
    requester_subject: str = ""
    """The requester's :attr:`Principal.subject_id`; empty on requests older than subjects."""

    @property
    def requester_id(self) -> str:
        return self.requester_subject or legacy_key(self.requester)

    def transition(self, new: RequestState) -> None:
        if new not in _TRANSITIONS.get(self.state, frozenset()):
            raise Conflict(
                f"request {self.id} is {self.state}; it cannot become {new}",
                rule="lifecycle.transition",
            )
        self.state = new

    def begin_ending(self, final: RequestState, reason: str, now: datetime) -> None:
        """ACTIVE -> REVOKING, remembering whether this ends as expired or revoked."""
        if final not in (RequestState.EXPIRED, RequestState.REVOKED):
            raise ValueError(final)
        self.transition(RequestState.REVOKING)
        self.end_state = final
        self.end_reason = reason
        self.ended_at = now

    def finish_ending(self) -> None:
        self.transition(self.end_state or RequestState.REVOKED)

    def time_is_up(self, now: datetime) -> bool:
        """Past a time limit: ``pending_until`` while pending, ``expires_at`` once minted.

        The limits hold at ``now``, whether or not the background loop has come round."""
        if self.state is RequestState.PENDING:
            return now >= self.pending_until
        if self.state in (RequestState.ACTIVATING, RequestState.ACTIVE):
            return self.expires_at is not None and now >= self.expires_at
        return False

    def time_out_pending(self, now: datetime) -> None:
        """PENDING -> EXPIRED: nobody decided before ``pending_until``."""
        self.transition(RequestState.EXPIRED)
        self.ended_at, self.end_reason = now, PENDING_TIMEOUT_REASON

    def approved_by(self, principal: Principal) -> bool:
        """Has this person approved already (legacy approvals: by their normalised name)?"""
        return any(may_be(principal.subject_id, principal.name, a.approver_id)
                   for a in self.approvals)

    def requested_by(self, principal: Principal) -> bool:
        """Is ``principal`` the requester? Same subject only: this grants requester rights."""
        return same_subject(principal.subject_id, self.requester_id)

    def may_be_requester(self, principal: Principal) -> bool:
        """Might ``principal`` be the requester? For refusals (self-approval) only."""
        return may_be(principal.subject_id, principal.name, self.requester_id)


class GrantState(StrEnum):
    ACTIVE = "active"
    REVOCATION_PENDING = "revocation_pending"
    REVOKED = "revoked"
    EXPIRED = "expired"
    FAILED = "failed"


@dataclass(slots=True)
class Grant:
    """A time-boxed credential on one target, minted for one role of one request."""

    id: str
    request_id: str
    role: str
    target: str
    target_ref: str
    issued_at: datetime
    expires_at: datetime
    state: GrantState = GrantState.ACTIVE
    revoked_at: datetime | None = None
    artefacts: tuple[str, ...] = ()
    last_error: str | None = None  # why the last revocation attempt failed, while pending
