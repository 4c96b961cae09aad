"""Extending active access, and warning before it ends.

An extension is asked for, approved with fresh approvals, then *applied*:
native expiry is moved on every target first (PostgreSQL ``VALID UNTIL``),
then the request's and grants' ``expires_at`` move in one transaction with
their events. Until then nothing changes and nothing is revoked, so the
credential keeps working up to its current expiry. An approved extension
whose application failed (target down, broker killed) is applied again by the
background loop; one whose request ended or reached its expiry first lapses.

The background loop also emits ``grant:expiry:warning`` once per grant and
expiry, five minutes before it (again after an extension moves the expiry).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NoReturn

from sqlalchemy import or_, select

from breakglass.connectors import Connector
from breakglass.domain import extensions as rules
from breakglass.domain.durations import format_duration
from breakglass.domain.errors import PolicyRefused, TargetError
from breakglass.domain.events import EventTag
from breakglass.domain.extensions import Extension, ExtensionState
from breakglass.domain.model import (
    AccessRequest,
    Approval,
    GrantState,
    Policy,
    Principal,
    RequestState,
)
from breakglass.domain.names import same_subject
from breakglass.domain.policy import Denied, check_deadline
from breakglass.service.incidents import IncidentGate
from breakglass.service.ports import Clock
from breakglass.service.recording import actor_payload, record
from breakglass.storage import tables as t
from breakglass.storage.extensions import (
    ExtensionRepository,
    grants_to_warn,
    mark_warned,
    move_grant_expiry,
)
from breakglass.storage.uow import UnitOfWork, UnitOfWorkFactory

WARN_AHEAD = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class ExtensionView:
    extension: Extension
    request: AccessRequest


def new_extension_id() -> str:
    return "x-" + secrets.token_hex(6)


class Extender:
    def __init__(
        self,
        *,
        policy: Policy,
        uow: UnitOfWorkFactory,
        clock: Clock,
        connector: Callable[[str], Connector],
        incidents: IncidentGate,
        warn_ahead: timedelta = WARN_AHEAD,
        deadline: Callable[[str], object] = lambda _request_id: None,
    ) -> None:
        self._policy = policy
        self._uow = uow
        self._clock = clock
        self._connector = connector
        self._incidents = incidents
        self._warn_ahead = warn_ahead
        self._deadline = deadline  # expires a request whose time is up, as the loop would

    # -- commands -------------------------------------------------------------------

    def request_extension(self, principal: Principal, request_id: str, ttl: timedelta,
                          justification: str = "") -> ExtensionView:
        with self._uow() as uow:
            req = uow.requests.get(request_id)
        self._check_incident(principal, req, EventTag.EXTENSION_REFUSED)
        fixed = [r for r in req.roles
                 if not self._connector(self._policy.roles[r].target).extends_natively]
        if fixed:
            self._refuse(principal, EventTag.EXTENSION_REFUSED, Denied(
                "extension.target_fixed_expiry",
                f"{', '.join(fixed)}: the credential's own expiry cannot move; "
                "request new access instead"), req,
                payload={"ttl_seconds": int(ttl.total_seconds())})
        now = self._clock.now()
        apply = False
        with self._uow() as uow:
            req = uow.requests.get(request_id, for_update=True)
            repo = ExtensionRepository(uow.connection)
            plan = rules.plan_extension(self._policy, req, principal, ttl, now,
                                        pending=bool(repo.open_for(req.id)))
            if not isinstance(plan, Denied):
                ext = Extension(id=new_extension_id(), request_id=req.id,
                                requester=principal.name,
                                requester_subject=principal.subject_id, ttl=plan.ttl,
                                justification=justification, created_at=now,
                                required=plan.required, expires_before=plan.expires_before,
                                expires_after=plan.expires_after)
                repo.add(ext)
                record(uow, now, req, principal, EventTag.EXTENSION_REQUESTED,
                       reason=justification, payload={
                           "extension": ext.id, "ttl_seconds": int(plan.ttl.total_seconds()),
                           "expires_at": plan.expires_before.isoformat(),
                           "expires_after": plan.expires_after.isoformat(),
                           "required": plan.required})
                if plan.required == 0:
                    record(uow, now, req, principal, EventTag.EXTENSION_AUTO_APPROVED,
                           reason="self-approval (zone allows it)",
                           payload={"extension": ext.id})
                    self._approved(repo, req, ext, now)
                    apply = True
        if isinstance(plan, Denied):
            self._refuse(principal, EventTag.EXTENSION_REFUSED, plan, req,
                         payload={"ttl_seconds": int(ttl.total_seconds())})
        if apply:
            self.apply(req.id, ext.id)
        return self.view(req.id, ext.id)

    def approve(self, principal: Principal, request_id: str, extension_id: str,
                comment: str = "") -> ExtensionView:
        with self._uow() as uow:
            req = uow.requests.get(request_id)
            ExtensionRepository(uow.connection).get(request_id, extension_id)
        self._check_incident(principal, req, EventTag.EXTENSION_APPROVAL_REFUSED)
        now = self._clock.now()
        apply = False
        with self._uow() as uow:
            req = uow.requests.get(request_id, for_update=True)
            repo = ExtensionRepository(uow.connection)
            ext = repo.get(request_id, extension_id, for_update=True)
            decision = rules.check_extension_approval(self._policy, req, ext, principal, now)
            if not isinstance(decision, Denied):
                approval = Approval(principal.name, principal.teams, principal.mfa, now, comment,
                                    approver_subject=principal.subject_id)
                repo.add_approval(ext.id, approval)
                ext.approvals.append(approval)
                record(uow, now, req, principal, EventTag.EXTENSION_APPROVAL_ADDED,
                       reason=comment, payload={"extension": ext.id,
                                                "approvals": len(ext.approvals),
                                                "required": ext.required})
                if ext.satisfied:
                    self._approved(repo, req, ext, now)
                    apply = True
        if isinstance(decision, Denied):
            self._refuse(principal, EventTag.EXTENSION_APPROVAL_REFUSED, decision, req,
                         payload={"extension": extension_id})
        if apply:
            self.apply(request_id, extension_id)
        return self.view(request_id, extension_id)

    def deny(self, principal: Principal, request_id: str, extension_id: str,
             comment: str) -> ExtensionView:
        """An approver turns the extension down, or its requester withdraws it."""
        now = self._clock.now()
        with self._uow() as uow:
            req = uow.requests.get(request_id, for_update=True)
            repo = ExtensionRepository(uow.connection)
            ext = repo.get(request_id, extension_id, for_update=True)
            decision: Denied | None = None
            if not same_subject(principal.subject_id, ext.requester_id):
                found = rules.check_extension_approval(self._policy, req, ext, principal, now)
                decision = found if isinstance(found, Denied) else None
            elif ext.state is not ExtensionState.PENDING:
                decision = Denied("extension.not_pending", f"extension {ext.id} is {ext.state}")
            elif isinstance(late := check_deadline(req, now), Denied):
                decision = late
            if decision is None:
                ext.state, ext.decided_at, ext.end_reason = ExtensionState.DENIED, now, comment
                repo.save(ext)
                record(uow, now, req, principal, EventTag.EXTENSION_DENIED, reason=comment,
                       payload={"extension": ext.id})
        if decision is not None:
            self._refuse(principal, EventTag.EXTENSION_APPROVAL_REFUSED, decision, req,
                         payload={"extension": extension_id})
        return self.view(request_id, extension_id)

    def apply(self, request_id: str, extension_id: str) -> bool:
        """Move native expiry, then the broker's; True once the extension is applied."""
        with self._uow() as uow:
            ext = ExtensionRepository(uow.connection).get(request_id, extension_id)
            grants = [g for g in uow.grants.for_request(request_id)
                      if g.state is GrantState.ACTIVE]
        if ext.state is not ExtensionState.APPROVED or ext.expires_after is None:
            return ext.state is ExtensionState.APPLIED
        errors = []
        for grant in grants:
            try:
                self._connector(grant.target).extend(grant.target_ref, ext.expires_after)
            except TargetError as exc:
                errors.append(f"{grant.id}: {exc}")
        now = self._clock.now()
        with self._uow() as uow:
            req = uow.requests.get(request_id, for_update=True)
            repo = ExtensionRepository(uow.connection)
            ext = repo.get(request_id, extension_id, for_update=True)
            if ext.state is not ExtensionState.APPROVED or ext.expires_after is None:
                return ext.state is ExtensionState.APPLIED
            if not _still_running(req, now):
                _lapse(uow, repo, req, ext, now)
                return False
            if errors:
                return False  # retried by the background loop until the expiry
            self._move(uow, req, ext, now)
        return True

    # -- background -------------------------------------------------------------------

    def tick(self) -> None:
        """One pass of the background loop: finish approved extensions, lapse those of
        ended requests, send expiry warnings."""
        self.apply_approved()
        self.lapse_ended()
        self.warn_expiring()

    def lapse_ended(self) -> int:
        """Pending extensions whose request ended, or reached its expiry, lapse."""
        now = self._clock.now()
        e, r = t.extensions.c, t.requests.c
        with self._uow() as uow:
            found = uow.connection.execute(
                select(e.request_id, e.id).join(t.requests, r.id == e.request_id).where(
                    e.state == ExtensionState.PENDING.value,
                    or_(r.state != RequestState.ACTIVE.value, r.expires_at <= now))
            ).all()
        lapsed = 0
        for row in found:
            with self._uow() as uow:
                req = uow.requests.get(row.request_id, for_update=True)
                repo = ExtensionRepository(uow.connection)
                ext = repo.get(row.request_id, row.id, for_update=True)
                if ext.state is ExtensionState.PENDING and not _still_running(req, now):
                    _lapse(uow, repo, req, ext, now)
                    lapsed += 1
        return lapsed

    def apply_approved(self) -> int:
        with self._uow() as uow:
            e = t.extensions.c
            found = uow.connection.execute(
                select(e.request_id, e.id).where(e.state == ExtensionState.APPROVED.value)
            ).all()
        return sum(self.apply(r.request_id, r.id) for r in found)

    def warn_expiring(self) -> int:
        """``grant:expiry:warning`` for each grant within five minutes of its expiry, once."""
        now = self._clock.now()
        warned = 0
        with self._uow() as uow:
            for grant_id, request_id, at in grants_to_warn(uow.connection, now,
                                                            self._warn_ahead):
                if not mark_warned(uow.connection, grant_id, now):
                    continue
                req = uow.requests.get(request_id)
                record(uow, now, req, "broker", EventTag.GRANT_EXPIRY_WARNING, grant_id=grant_id,
                       reason=f"expires in {format_duration(at - now)}",
                       payload={"expires_at": at.isoformat(), "requester": req.requester,
                                "extend": f"breakglass extend {req.id} --ttl 15m "
                                          "--justification ..."})
                warned += 1
        return warned

    # -- queries ----------------------------------------------------------------------

    def view(self, request_id: str, extension_id: str) -> ExtensionView:
        with self._uow() as uow:
            req = uow.requests.get(request_id)
            ext = ExtensionRepository(uow.connection).get(request_id, extension_id)
        return ExtensionView(ext, req)

    def of_request(self, request_id: str) -> list[ExtensionView]:
        with self._uow() as uow:
            req = uow.requests.get(request_id)
            found = ExtensionRepository(uow.connection).for_request(request_id)
        return [ExtensionView(x, req) for x in found]

    # -- helpers ----------------------------------------------------------------------

    @staticmethod
    def _approved(repo: ExtensionRepository, req: AccessRequest, ext: Extension,
                  now: datetime) -> None:
        ext.state = ExtensionState.APPROVED
        ext.expires_after = rules.extended_expiry(req, ext)
        ext.decided_at = now
        repo.save(ext)

    def _move(self, uow: UnitOfWork, req: AccessRequest, ext: Extension, now: datetime) -> None:
        old, new = req.expires_at, ext.expires_after
        if old is None or new is None:
            raise ValueError(f"extension {ext.id} has no expiry to move")
        req.expires_at = new
        uow.requests.save(req)
        for grant in uow.grants.for_request(req.id):
            if grant.state is GrantState.ACTIVE:
                move_grant_expiry(uow.connection, grant.id, new)
                record(uow, now, req, "broker", EventTag.GRANT_EXTENDED,
                       grant_id=grant.id, payload={"role": grant.role, "target": grant.target,
                                                   "target_ref": grant.target_ref,
                                                   "requester": req.requester,
                                                   "from": old.isoformat(),
                                                   "expires_at": new.isoformat()})
        ext.state = ExtensionState.APPLIED
        ExtensionRepository(uow.connection).save(ext)
        record(uow, now, req, "broker", EventTag.EXTENSION_APPLIED,
               reason=f"extended by {format_duration(ext.ttl)}",
               payload={"extension": ext.id, "from": old.isoformat(),
                        "expires_at": new.isoformat(),
                        "approvers": [a.approver for a in ext.approvals]})

    def _check_incident(self, principal: Principal, req: AccessRequest, tag: EventTag) -> None:
        denied, _ = self._incidents.check(req.incident, req.zone)
        if denied is not None:
            self._refuse(principal, tag, denied, req)

    def _refuse(self, principal: Principal, tag: EventTag, denied: Denied, req: AccessRequest,
                payload: dict[str, object] | None = None) -> NoReturn:
        self._deadline(req.id)  # a late decision: record the expiry the loop would record
        with self._uow() as uow:
            uow.events.append(ts=self._clock.now(), actor=principal.name, action=tag,
                              outcome="denied", request_id=req.id, incident=req.incident,
                              zone=req.zone.value, rule=denied.rule, reason=denied.reason,
                              payload=actor_payload(principal, payload))
        raise PolicyRefused(denied.reason, rule=denied.rule)


def _lapse(uow: UnitOfWork, repo: ExtensionRepository, req: AccessRequest, ext: Extension,
           now: datetime) -> None:
    ext.state, ext.decided_at = ExtensionState.LAPSED, now
    ext.end_reason = "the request ended before the extension took effect"
    repo.save(ext)
    record(uow, now, req, "broker", EventTag.EXTENSION_LAPSED, outcome="error",
           reason=ext.end_reason, payload={"extension": ext.id})


def _still_running(req: AccessRequest, now: datetime) -> bool:
    return (req.state is RequestState.ACTIVE and req.expires_at is not None
            and req.expires_at > now)
