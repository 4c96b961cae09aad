"""The break-glass rules, as pure functions returning decisions.

A decision is a value: :class:`Allowed` or :class:`Denied`. ``Denied.rule``
names the rule (``incident.pattern``, ``approval.same_team``, ...), and its
``reason`` travels unchanged to the caller, the audit log and the metrics.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from breakglass.domain.durations import format_duration
from breakglass.domain.model import (
    AccessRequest,
    Approval,
    Policy,
    Principal,
    PrincipalKind,
    RequestState,
    RoleDef,
    WorkloadDef,
    Zone,
    ZonePolicy,
    highest_zone,
)
from breakglass.domain.names import legacy_name, normalise_name, same_subject


@dataclass(frozen=True, slots=True)
class Allowed:
    ok = True


@dataclass(frozen=True, slots=True)
class Denied:
    rule: str
    reason: str
    ok = False


Decision = Allowed | Denied


@dataclass(frozen=True, slots=True)
class RequestPlan:
    """What an accepted request will be: its roles, ruling zone, TTL and environment."""

    roles: tuple[RoleDef, ...]
    zone: Zone
    environment: str
    ttl: timedelta


def check_identity(policy: Policy, principal: Principal, now: datetime, zone: Zone) -> Decision:
    """S2.1 named principals only; S2.6 MFA (with freshness) where the zone requires it."""
    if is_shared_account(policy, principal):
        return Denied("identity.shared_account", f"'{principal.name}' is a shared account")
    zone_policy = policy.zones[zone]
    if principal.kind is PrincipalKind.HUMAN and zone_policy.require_mfa and zone.rank > 0:
        if not principal.mfa:
            return Denied("identity.mfa_required", f"zone {zone} requires MFA")
        if principal.auth_time is None or now - principal.auth_time > policy.mfa_max_age:
            return Denied(
                "identity.mfa_stale",
                f"MFA older than {format_duration(policy.mfa_max_age)}: re-authenticate with MFA",
            )
    return Allowed()


def is_shared_account(policy: Policy, principal: Principal) -> bool:
    """A shared account by display name or ``sub``, in any spelling (``Admin``, full-width)."""
    names = [principal.name, principal.subject]
    if not principal.subject:  # a legacy principal: its key carries the name
        names.append(legacy_name(principal.subject_id) or "")
    spelled = {normalise_name(n) for n in names if n}
    return not normalise_name(principal.name) or bool(spelled & policy.shared_accounts)


def plan_request(
    policy: Policy,
    principal: Principal,
    role_names: list[str],
    incident: str,
    reason: str,
    ttl: timedelta | None,
    now: datetime,
    workload: WorkloadDef | None = None,
) -> RequestPlan | Denied:
    """Check a new request against S2 items 1-4, 6, 7 and the role's requesters.

    With ``workload``, the request is an override of that service account: its
    roles must be ones the workload allows, and the workload's own ``requesters``
    (or the workload itself) stand in for the roles' requesters.
    """
    if not role_names:
        return Denied("request.roles", "name at least one role")
    unknown = [r for r in role_names if r not in policy.roles]
    if unknown:
        return Denied("role.unknown", f"unknown role(s): {', '.join(unknown)}")
    if len(set(role_names)) != len(role_names):
        return Denied("request.roles", "a role is named twice")
    roles = tuple(policy.roles[r] for r in role_names)
    environments = {r.environment for r in roles}
    if len(environments) > 1:
        return Denied(
            "request.environment", f"roles span environments {sorted(environments)}; split them"
        )
    if not incident:
        return Denied("incident.required", "an incident or change ID is required")
    if not re.fullmatch(policy.incident_pattern, incident):
        return Denied(
            "incident.pattern",
            f"incident ID '{incident}' does not match {policy.incident_pattern}",
        )
    if reason not in policy.reason_codes:
        return Denied(
            "reason.unknown",
            f"reason '{reason}' is not one of {', '.join(policy.reason_codes)}",
        )
    zone = highest_zone([r.zone for r in roles])
    identity = check_identity(policy, principal, now, zone)
    if isinstance(identity, Denied):
        return identity
    who = check_requester(principal, roles, workload, policy.people)
    if isinstance(who, Denied):
        return who
    allowed_ttl = max_ttl_for(policy.zones[zone], roles)
    effective = ttl if ttl is not None else min(policy.zones[zone].default_ttl, allowed_ttl)
    if effective > allowed_ttl:
        return Denied(
            "ttl.max",
            f"TTL {format_duration(effective)} exceeds the maximum {format_duration(allowed_ttl)}"
            f" for zone {zone}",
        )
    return RequestPlan(roles=roles, zone=zone, environment=environments.pop(), ttl=effective)


def workload_for(
    policy: Policy, principal: Principal, name: str | None
) -> WorkloadDef | Denied | None:
    """The workload a request overrides: the one named, or the asking workload itself."""
    if name is None and principal.kind is PrincipalKind.WORKLOAD:
        name = principal.name
    if name is None:
        return None
    found = policy.workloads.get(name)
    if found is None:
        return Denied("workload.unknown", f"unknown workload {name}")
    return found


def check_requester(
    principal: Principal,
    roles: tuple[RoleDef, ...],
    workload: WorkloadDef | None,
    people: Mapping[str, str] | None = None,
) -> Decision:
    """Who may ask: the roles' requesters always; for an override, also the workload's rules.

    A workload asks only for itself and only for roles that name it among their
    requesters; a human asks for a workload only when the workload lists them.
    """
    for role in roles:
        if not any(principal.matches(sel, people) for sel in role.requesters):
            return Denied(
                "role.requesters",
                f"'{principal.name}' may not request {role.name} (allowed: "
                f"{', '.join(role.requesters)})",
            )
    if workload is None:
        if principal.kind is PrincipalKind.WORKLOAD:
            return Denied("workload.required", "a workload requests overrides of its own account")
        return Allowed()
    for role in roles:
        if not workload.allows_role(role):
            return Denied(
                "workload.roles",
                f"role {role.name} cannot override workload {workload.name} (allowed: "
                f"{', '.join(workload.roles) or 'roles on target ' + workload.target})",
            )
    if principal.kind is PrincipalKind.WORKLOAD:
        if principal.name != workload.name or (
                workload.subject and principal.subject != workload.subject):
            return Denied(
                "workload.not_self",
                f"workload {principal.name} cannot request for workload {workload.name}",
            )
        return Allowed()
    if not any(principal.matches(sel, people) for sel in workload.requesters):
        return Denied(
            "workload.requesters",
            f"'{principal.name}' may not request for workload {workload.name} (allowed: "
            f"{', '.join(workload.requesters) or 'nobody'})",
        )
    return Allowed()


def max_ttl_for(zone_policy: ZonePolicy, roles: tuple[RoleDef, ...]) -> timedelta:
    """The zone's maximum, tightened (never loosened) by each role."""
    limits = [zone_policy.max_ttl] + [r.max_ttl for r in roles if r.max_ttl is not None]
    return min(limits)


def approvals_needed(zone_policy: ZonePolicy) -> int:
    """Approvals a request in this zone waits for.

    ``approvals: 0`` means "none" only where the zone allows self-approval; without
    it, a zero would activate every request unseen, so the request waits for one."""
    if zone_policy.approvals == 0 and not zone_policy.self_approval:
        return 1
    return zone_policy.approvals


def required_approvals(policy: Policy, request: AccessRequest) -> int:
    return approvals_needed(policy.zones[request.zone])


def check_deadline(request: AccessRequest, now: datetime) -> Decision:
    """Time limits hold at the moment of every decision, not only when the loop runs.

    A pending request past ``pending_until`` can no longer be approved, denied or
    cancelled: it has expired. Access past ``expires_at`` can no longer be picked
    up, extended or have an extension decided: it has ended. The caller records
    the expiry as the background loop would.
    """
    if not request.time_is_up(now):
        return Allowed()
    if request.state is RequestState.PENDING:
        return Denied(
            "lifecycle.pending_timeout",
            f"request {request.id} had no decision before its pending timeout "
            f"({request.pending_until.isoformat()}); it has expired",
        )
    expiry = request.expires_at.isoformat() if request.expires_at else "?"
    return Denied("lifecycle.not_active",
                  f"request {request.id} has reached its expiry ({expiry}); it has expired")


def check_approval(
    policy: Policy, request: AccessRequest, approver: Principal, now: datetime
) -> Decision:
    """S2.5: who may approve this request (A self-approval, B/C outside the team)."""
    deadline = check_deadline(request, now)
    if isinstance(deadline, Denied):
        return deadline
    zone_policy = policy.zones[request.zone]
    identity = check_identity(policy, approver, now, request.zone)
    if isinstance(identity, Denied):
        return Denied(identity.rule.replace("identity.", "approval."), identity.reason)
    if approver.kind is not PrincipalKind.HUMAN:
        return Denied("approval.workload", "a workload cannot approve")
    if request.may_be_requester(approver):
        if zone_policy.self_approval and zone_policy.approvals == 0:
            return Allowed()
        return Denied("approval.self", "the requester cannot approve their own request")
    if request.approved_by(approver):
        return Denied("approval.duplicate", f"{approver.name} has already approved")
    eligible = policy.approvers.get(request.zone, ())
    if approvals_needed(zone_policy) > 0 and eligible and not policy.selects(approver, eligible):
        return Denied(
            "approval.not_approver",
            f"{approver.name} is not an approver for zone {request.zone} "
            f"(allowed: {', '.join(eligible)})",
        )
    if zone_policy.approvers_outside_team and approver.teams & request.requester_teams:
        shared = ", ".join(sorted(approver.teams & request.requester_teams))
        return Denied(
            "approval.same_team",
            f"{approver.name} is in the requester's team ({shared}); zone {request.zone} "
            "needs an approver outside it",
        )
    return Allowed()


def approvals_satisfied(policy: Policy, request: AccessRequest) -> bool:
    return count_approvers(request.approvals, request.requester_id) >= required_approvals(
        policy, request)


def count_approvers(approvals: list[Approval], requester_id: str) -> int:
    """Distinct people (by subject) among the approvals, the requester never counted."""
    people: list[str] = []
    for approval in approvals:
        key = approval.approver_id
        if not same_subject(key, requester_id) and not any(same_subject(key, p) for p in people):
            people.append(key)
    return len(people)


def may_revoke(policy: Policy, principal: Principal, request: AccessRequest) -> bool:
    """The requester (same subject) or an approver of the request's zone."""
    return request.requested_by(principal) or policy.selects(
        principal, policy.approvers.get(request.zone, ()))


def is_any_approver(policy: Policy, principal: Principal) -> bool:
    return any(policy.selects(principal, sels) for sels in policy.approvers.values())


def runbook_applies(
    policy: Policy, runbook_id: str, principal: Principal, plan: RequestPlan, reason: str
) -> Decision:
    """A runbook auto-approves zone A/B requests that meet its trigger criteria."""
    runbook = policy.runbooks.get(runbook_id)
    if runbook is None:
        return Denied("runbook.unknown", f"unknown runbook {runbook_id}")
    if plan.zone is Zone.C:
        return Denied("runbook.zone_c", "runbooks never cover zone C")
    outside = [r.name for r in plan.roles if r.name not in runbook.roles]
    if outside:
        return Denied("runbook.roles", f"runbook {runbook_id} does not cover {', '.join(outside)}")
    if runbook.reason_codes and reason not in runbook.reason_codes:
        return Denied("runbook.reason", f"runbook {runbook_id} does not cover reason '{reason}'")
    if runbook.requesters and not policy.selects(principal, runbook.requesters):
        return Denied("runbook.requesters", f"runbook {runbook_id} does not cover {principal.name}")
    return Allowed()
