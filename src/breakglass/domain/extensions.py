"""Extensions: more time on active access, as a request of its own with fresh approvals.

An extension asks to move an active request's ``expires_at`` later by ``ttl``.
Nothing is revoked while it waits: the credential keeps working until the
current expiry, and if the extension is approved in time the expiry moves
(in the broker and natively on the target) without a gap.

Rules:

* only the requester of an active request extends it, with a fresh MFA where
  the zone requires it;
* one extension TTL is bounded like a request TTL (zone and role ``max_ttl``);
* the whole lifetime, activation to the new expiry, stays within the zone's
  ``max_total``;
* approvals are *fresh*: those of the request do not count. A zone needs
  ``extension_approvals`` of them (default: its ``approvals``), under the same
  rules as request approvals (outside the team, never the requester); a zone
  with none (A) extends at once, logged as a self-approval;
* one pending extension per request at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

from breakglass.domain.durations import format_duration
from breakglass.domain.model import (
    AccessRequest,
    Approval,
    Policy,
    Principal,
    RequestState,
    ZonePolicy,
)
from breakglass.domain.names import legacy_key
from breakglass.domain.policy import (
    Allowed,
    Decision,
    Denied,
    approvals_needed,
    check_approval,
    check_deadline,
    check_identity,
    count_approvers,
    max_ttl_for,
)


class ExtensionState(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    """Approvals are complete; the new expiry is being set on the targets."""
    APPLIED = "applied"
    DENIED = "denied"
    LAPSED = "lapsed"
    """The request ended (or reached its expiry) before the extension took effect."""

    @property
    def is_open(self) -> bool:
        return self in (ExtensionState.PENDING, ExtensionState.APPROVED)


@dataclass(slots=True)
class Extension:
    """A request for more time on one active request."""

    id: str
    request_id: str
    requester: str
    ttl: timedelta
    justification: str
    created_at: datetime
    required: int
    expires_before: datetime
    """The request's expiry when the extension was asked for."""
    state: ExtensionState = ExtensionState.PENDING
    approvals: list[Approval] = field(default_factory=list)
    expires_after: datetime | None = None
    """The expiry it asks for; fixed again from the current expiry once approved."""
    decided_at: datetime | None = None
    end_reason: str = ""
    version: int = 0
    requester_subject: str = ""
    """The requester's :attr:`Principal.subject_id`; empty on extensions older than subjects."""

    @property
    def requester_id(self) -> str:
        return self.requester_subject or legacy_key(self.requester)

    @property
    def satisfied(self) -> bool:
        return count_approvers(self.approvals, self.requester_id) >= self.required


def extension_approvals_required(zone_policy: ZonePolicy) -> int:
    """Fresh approvals an extension in this zone needs."""
    if zone_policy.extension_approvals is not None:
        return zone_policy.extension_approvals
    return approvals_needed(zone_policy)


def max_total_for(zone_policy: ZonePolicy) -> timedelta:
    return zone_policy.max_total or 2 * zone_policy.max_ttl


@dataclass(frozen=True, slots=True)
class ExtensionPlan:
    ttl: timedelta
    required: int
    expires_before: datetime
    expires_after: datetime


def plan_extension(
    policy: Policy,
    request: AccessRequest,
    principal: Principal,
    ttl: timedelta,
    now: datetime,
    *,
    pending: bool,
) -> ExtensionPlan | Denied:
    """Check a new extension of ``request``; ``pending``: one is already waiting."""
    if request.state is not RequestState.ACTIVE or request.expires_at is None:
        return Denied("lifecycle.not_active", f"request {request.id} is {request.state}")
    deadline = check_deadline(request, now)
    if isinstance(deadline, Denied):
        return deadline
    if not request.requested_by(principal):
        return Denied("extension.requester_only", "only the requester can extend access")
    identity = check_identity(policy, principal, now, request.zone)
    if isinstance(identity, Denied):
        return identity
    if pending:
        return Denied("extension.pending", f"request {request.id} already has a pending extension")
    if ttl <= timedelta(0):
        return Denied("extension.ttl", "an extension needs a positive TTL")
    zone_policy = policy.zones[request.zone]
    roles = tuple(policy.roles[r] for r in request.roles if r in policy.roles)
    allowed = max_ttl_for(zone_policy, roles)
    if ttl > allowed:
        return Denied(
            "ttl.max",
            f"TTL {format_duration(ttl)} exceeds the maximum {format_duration(allowed)}"
            f" for zone {request.zone}",
        )
    after = request.expires_at + ttl
    total = check_max_total(policy, request, ttl)
    if isinstance(total, Denied):
        return total
    return ExtensionPlan(ttl=ttl, required=extension_approvals_required(zone_policy),
                         expires_before=request.expires_at, expires_after=after)


def check_max_total(policy: Policy, request: AccessRequest, ttl: timedelta) -> Decision:
    """The whole lifetime, activation to the expiry ``ttl`` after the current one, fits
    the zone's ``max_total`` (checked when asked for and again at each decision)."""
    if request.expires_at is None:
        return Denied("lifecycle.not_active", f"request {request.id} has no expiry")
    zone_policy = policy.zones[request.zone]
    started = request.activated_at or request.created_at
    cap = max_total_for(zone_policy)
    if request.expires_at + ttl - started > cap:
        left = max(timedelta(0), started + cap - request.expires_at)
        return Denied(
            "extension.max_total",
            f"zone {request.zone} caps a grant's lifetime at {format_duration(cap)}; "
            f"at most {format_duration(left)} more can be added",
        )
    return Allowed()


def check_extension_approval(
    policy: Policy,
    request: AccessRequest,
    extension: Extension,
    approver: Principal,
    now: datetime,
) -> Decision:
    """Who may approve an extension: the request rules, counted on fresh approvals only."""
    if extension.state is not ExtensionState.PENDING:
        return Denied("extension.not_pending", f"extension {extension.id} is {extension.state}")
    if request.state is not RequestState.ACTIVE:
        return Denied("lifecycle.not_active", f"request {request.id} is {request.state}")
    deadline = check_deadline(request, now)
    if isinstance(deadline, Denied):
        return deadline
    fresh = replace(request, approvals=list(extension.approvals), requester=extension.requester,
                    requester_subject=extension.requester_id)
    decision = check_approval(policy, fresh, approver, now)
    if isinstance(decision, Denied):
        return decision
    total = check_max_total(policy, request, extension.ttl)
    if isinstance(total, Denied):
        return total
    if fresh.may_be_requester(approver):  # only reachable in a zone needing no approval
        return Denied("approval.self", "the requester cannot approve their own extension")
    return Allowed()


def extended_expiry(request: AccessRequest, extension: Extension) -> datetime:
    """The new expiry: the current one plus the extension's TTL."""
    if request.expires_at is None:
        raise ValueError(f"request {request.id} has no expiry")
    return request.expires_at + extension.ttl
