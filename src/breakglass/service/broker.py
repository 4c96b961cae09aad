"""The service layer: one handler per user intent.

Handlers load domain objects through a unit of work, ask the pure policy for
a decision, change state, and write the audit event in the same transaction.
A refusal writes only its event and raises :class:`PolicyRefused`; nothing
else changes.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NoReturn

from breakglass.connectors import Connector, StandingPrivilege
from breakglass.connectors.ssh import public_key_fingerprint
from breakglass.domain import policy as rules
from breakglass.domain.errors import (
    InvalidInput,
    NotFound,
    PolicyRefused,
)
from breakglass.domain.events import EventTag
from breakglass.domain.model import (
    AccessRequest,
    Approval,
    Grant,
    Policy,
    Principal,
    RequestState,
    RoleDef,
)
from breakglass.service import drift
from breakglass.service.activation import Activator
from breakglass.service.extensions import Extender
from breakglass.service.incidents import IncidentDirectory, IncidentGate
from breakglass.service.ports import Clock, SecretBox
from breakglass.service.recording import Actor, actor_name, actor_payload, record
from breakglass.service.revocation import Revoker, ended_by_another
from breakglass.storage.events import Event, iter_events
from breakglass.storage.uow import UnitOfWork, UnitOfWorkFactory


@dataclass(slots=True)
class RequestView:
    request: AccessRequest
    grants: list[Grant]
    required_approvals: int
    audit_index: int | None = None
    note: str = ""
    """Said to the caller when its command found the work already done by another."""


def new_request_id() -> str:
    return "r-" + secrets.token_hex(6)


class Broker:
    def __init__(
        self,
        *,
        policy: Policy,
        uow: UnitOfWorkFactory,
        connectors: Mapping[str, Connector],
        clock: Clock,
        secrets_box: SecretBox,
        instance_id: str | None = None,
        incidents: IncidentDirectory | None = None,
    ) -> None:
        self.policy = policy
        self._uow = uow
        self._connectors = connectors
        self._clock = clock
        self._box = secrets_box
        self.revoker = Revoker(policy=policy, uow=uow, connectors=connectors, clock=clock,
                               owner=instance_id)
        self.activator = Activator(policy=policy, uow=uow, clock=clock, secrets_box=secrets_box,
                                   revoker=self.revoker)
        self.uow_factory = uow
        self.connectors = connectors
        self.on_activated = self.activator.on_activated  # run after each activation commits
        self.incidents = IncidentGate(policy, incidents)
        self.extensions = Extender(policy=policy, uow=uow, clock=clock,
                                   connector=self.revoker.connector, incidents=self.incidents,
                                   deadline=self.revoker.enforce_deadline)

    # -- refusals -------------------------------------------------------------------

    def _refuse(
        self,
        principal: Principal | None,
        tag: EventTag,
        denied: rules.Denied,
        *,
        request: AccessRequest | None = None,
        incident: str | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> NoReturn:
        if request is not None:  # a late decision: record the expiry the loop would record
            self.revoker.enforce_deadline(request.id)
        with self._uow() as uow:
            uow.events.append(
                ts=self._clock.now(),
                actor=actor_name(principal) if principal else "anonymous",
                action=tag,
                outcome="denied",
                request_id=request.id if request else None,
                incident=request.incident if request else incident,
                zone=request.zone.value if request else None,
                rule=denied.rule,
                reason=denied.reason,
                payload=actor_payload(principal, payload),
            )
        raise PolicyRefused(denied.reason, rule=denied.rule)

    def refuse_action(self, principal: Principal | None, denied: rules.Denied) -> NoReturn:
        """Record a refusal decided outside the handlers (identity, input) and raise it."""
        self._refuse(principal, EventTag.AUTH_REFUSED, denied)

    # -- commands -------------------------------------------------------------------

    def request_access(
        self,
        principal: Principal,
        roles: list[str],
        *,
        incident: str,
        reason: str,
        ttl: timedelta | None = None,
        justification: str = "",
        runbook: str | None = None,
        public_key: str | None = None,
        workload: str | None = None,
    ) -> RequestView:
        now = self._clock.now()
        asked = {
            "roles": roles,
            "reason": reason,
            "ttl_seconds": int(ttl.total_seconds()) if ttl else None,
            "runbook": runbook,
            **({"workload": workload} if workload else {}),
        }
        wl = rules.workload_for(self.policy, principal, workload)
        if isinstance(wl, rules.Denied):
            self._refuse(principal, EventTag.REQUEST_REFUSED, wl, incident=incident or None,
                         payload=asked)
        plan = rules.plan_request(self.policy, principal, roles, incident, reason, ttl, now,
                                  workload=wl)
        if isinstance(plan, rules.Denied):
            self._refuse(
                principal, EventTag.REQUEST_REFUSED, plan, incident=incident or None, payload=asked
            )
        if runbook is not None:
            decision = rules.runbook_applies(self.policy, runbook, principal, plan, reason)
            if isinstance(decision, rules.Denied):
                self._refuse(
                    principal, EventTag.REQUEST_REFUSED, decision, incident=incident, payload=asked
                )
        denied, checked = self.incidents.admit(incident, plan.zone,
                                               self.policy.runbooks.get(runbook or ""))
        if denied is not None:
            self._refuse(principal, EventTag.REQUEST_REFUSED, denied, incident=incident,
                         payload=asked)
        key_info = self._check_public_key(public_key, plan.roles)
        req = AccessRequest(
            id=new_request_id(),
            requester=principal.name,
            requester_subject=principal.subject_id,
            requester_kind=principal.kind,
            requester_teams=principal.teams,
            roles=tuple(r.name for r in plan.roles),
            zone=plan.zone,
            environment=plan.environment,
            incident=incident,
            reason=reason,
            justification=justification,
            ttl=plan.ttl,
            created_at=now,
            pending_until=now + self.policy.pending_timeout,
            runbook=runbook,
            public_key=public_key.strip() if public_key else None,
            workload=wl.name if wl else None,
        )
        zone_policy = self.policy.zones[plan.zone]
        auto = runbook is not None or rules.approvals_needed(zone_policy) == 0
        with self._uow() as uow:
            uow.requests.add(req)
            self._event(uow, req, principal, EventTag.REQUEST_CREATED, payload={
                "roles": list(req.roles),
                "ttl_seconds": int(req.ttl.total_seconds()),
                "environment": req.environment,
                "justification": justification,
                **key_info,
                **({"workload": wl.name, "account": wl.account} if wl else {}),
                **checked,
                **({"catalog": self.policy.version} if self.policy.version else {}),
            })
            if auto:
                how = f"runbook {runbook}" if runbook else "self-approval (zone allows it)"
                self._event(uow, req, principal, EventTag.REQUEST_AUTO_APPROVED,
                            reason=how, payload={"runbook": runbook})
                self._begin_activation(uow, req, now)
        if auto:
            self._activate(req.id)
        return self.view(req.id)

    def approve(self, principal: Principal, request_id: str, comment: str = "") -> RequestView:
        self._recheck_incident(principal, request_id)
        now = self._clock.now()
        with self._uow() as uow:
            req = uow.requests.get(request_id, for_update=True)
            denied: rules.Denied | None = None
            activate = False
            if req.state is not RequestState.PENDING:
                denied = rules.Denied("lifecycle.not_pending", f"request {req.id} is {req.state}")
            else:
                decision = rules.check_approval(self.policy, req, principal, now)
                denied = decision if isinstance(decision, rules.Denied) else None
            if denied is None:
                approval = Approval(principal.name, principal.teams, principal.mfa, now, comment,
                                    approver_subject=principal.subject_id)
                uow.requests.add_approval(req.id, approval)
                req.approvals.append(approval)
                self._event(uow, req, principal, EventTag.APPROVAL_ADDED, reason=comment,
                            payload={"approvals": len(req.approvals),
                                     "required": rules.required_approvals(self.policy, req)})
                activate = rules.approvals_satisfied(self.policy, req)
                if activate:
                    self._begin_activation(uow, req, now)
                else:
                    uow.requests.save(req)
        if denied is not None:
            self._refuse(principal, EventTag.APPROVAL_REFUSED, denied, request=req)
        if activate:
            self._activate(req.id)
        return self.view(req.id)

    def deny(self, principal: Principal, request_id: str, comment: str) -> RequestView:
        return self._close_pending(principal, request_id, RequestState.DENIED, comment)

    def cancel(self, principal: Principal, request_id: str, comment: str = "") -> RequestView:
        return self._close_pending(principal, request_id, RequestState.CANCELLED, comment)

    def _close_pending(
        self, principal: Principal, request_id: str, state: RequestState, comment: str
    ) -> RequestView:
        now = self._clock.now()
        with self._uow() as uow:
            req = uow.requests.get(request_id, for_update=True)
            denied = self._may_close(principal, req, state)
            if denied is None:
                req.transition(state)
                req.ended_at, req.end_reason = now, comment
                uow.requests.save(req)
                tag = EventTag.REQUEST_DENIED if state is RequestState.DENIED else (
                    EventTag.REQUEST_CANCELLED)
                self._event(uow, req, principal, tag, reason=comment)
        if denied is not None:
            self._refuse(principal, EventTag.ACTION_REFUSED, denied, request=req)
        return self.view(req.id)

    def _may_close(
        self, principal: Principal, req: AccessRequest, state: RequestState
    ) -> rules.Denied | None:
        if req.state is not RequestState.PENDING:
            return rules.Denied("lifecycle.not_pending", f"request {req.id} is {req.state}")
        deadline = rules.check_deadline(req, self._clock.now())
        if isinstance(deadline, rules.Denied):
            return deadline
        if state is RequestState.CANCELLED:
            if not req.requested_by(principal):
                return rules.Denied("cancel.requester_only", "only the requester can cancel")
            return None
        if req.requested_by(principal):
            return None  # withdrawing one's own request is always allowed
        decision = rules.check_approval(self.policy, req, principal, self._clock.now())
        return decision if isinstance(decision, rules.Denied) else None

    def revoke(self, principal: Principal, request_id: str, reason: str = "") -> RequestView:
        """End access now. Idempotent: access that the expiry loop, an incident close or
        another revoker ends (or ended) meanwhile is a success, and the view says so; only
        repeating one's own finished revocation is refused."""
        with self._uow() as uow:
            req = uow.requests.get(request_id)
        if not rules.may_revoke(self.policy, principal, req):
            self._refuse(principal, EventTag.ACTION_REFUSED, rules.Denied(
                "revoke.not_allowed", "only the requester or an approver of the zone can revoke"),
                request=req)
        by = f"revoked by {principal.name}"
        ended = req.state in (RequestState.EXPIRED, RequestState.REVOKED)
        repeated = req.state is RequestState.REVOKED and (
            req.end_reason == by or req.end_reason.startswith(by + ": "))
        if not (ended or req.state in (RequestState.ACTIVE, RequestState.REVOKING)) or repeated:
            self._refuse(principal, EventTag.ACTION_REFUSED, rules.Denied(
                "lifecycle.not_active", f"request {req.id} is {req.state}"), request=req)
        if not ended:
            self.end_access(req.id, RequestState.REVOKED, principal,
                            by + (f": {reason}" if reason else ""))
        view = self.view(req.id)
        if view.request.end_reason != by + (f": {reason}" if reason else ""):
            view.note = ended_by_another(view.request)
        return view

    def credentials(self, principal: Principal, request_id: str) -> list[dict[str, Any]]:
        """The minted credentials, returned once; a second call is refused."""
        now = self._clock.now()
        with self._uow() as uow:
            req = uow.requests.get(request_id)
            denied: rules.Denied | None = None
            found: list[dict[str, Any]] = []
            if not req.requested_by(principal):
                denied = rules.Denied("credentials.requester_only",
                                      "only the requester can fetch the credentials")
            elif req.state is not RequestState.ACTIVE:
                denied = rules.Denied("lifecycle.not_active", f"request {req.id} is {req.state}")
            elif isinstance(late := rules.check_deadline(req, now), rules.Denied):
                denied = late
            else:
                for grant in uow.grants.for_request(req.id):
                    sealed = uow.grants.take_secret(grant.id)
                    if sealed is not None:
                        secret = json.loads(self._box.open(sealed))
                        found.append({"grant": grant.id, "role": grant.role,
                                      "target": grant.target, **secret})
                        self._event(uow, req, principal, EventTag.CREDENTIAL_VIEWED,
                                    grant_id=grant.id, ts=now)
                if not found:
                    denied = rules.Denied("credentials.shown_once",
                                          "the credentials of this request were already shown")
        if denied is not None:
            self._refuse(principal, EventTag.CREDENTIAL_REFUSED, denied, request=req)
        return found

    # -- activation and ending ------------------------------------------------------

    def _begin_activation(self, uow: UnitOfWork, req: AccessRequest, now: datetime) -> None:
        self.activator.begin(uow, req, now)

    def _activate(self, request_id: str) -> None:
        self.activator.activate(request_id)

    def end_access(self, request_id: str, final: RequestState, actor: Actor, reason: str) -> bool:
        return self.revoker.end_access(request_id, final, actor, reason)

    def expire_due(self) -> int:
        return self.revoker.expire_due()

    def recover(self, older_than: timedelta = timedelta(seconds=30)) -> int:
        return self.revoker.recover(older_than)

    def close_incident(self, principal: Principal, incident: str) -> list[str]:
        if not rules.is_any_approver(self.policy, principal):
            self._refuse(principal, EventTag.ACTION_REFUSED, rules.Denied(
                "incident.close_not_allowed", "only an approver can close an incident's access"),
                incident=incident)
        return self.revoker.close_incident(incident, principal)

    def inventory(self, principal: Principal, target: str | None) -> list[StandingPrivilege]:
        if not rules.is_any_approver(self.policy, principal):
            self._refuse(principal, EventTag.ACTION_REFUSED, rules.Denied(
                "inventory.not_allowed",
                "only approvers can read the standing-privilege inventory"))
        names = [target] if target else sorted(self.connectors)
        found: list[StandingPrivilege] = []
        for name in names:
            found.extend(self._connector(name).inventory())
            found.extend(drift.findings(self._uow, name, self._connector(name)))
        return found

    # -- queries --------------------------------------------------------------------

    def view(self, request_id: str) -> RequestView:
        with self._uow() as uow:
            req = uow.requests.get(request_id)
            grants = uow.grants.for_request(request_id)
            index = uow.events.last_index_of(request_id)
        return RequestView(req, grants, rules.required_approvals(self.policy, req), index)

    def search(self, **filters: str | None) -> list[RequestView]:
        with self._uow() as uow:
            found = uow.requests.search(**filters)  # type: ignore[arg-type]
            return [
                RequestView(r, uow.grants.for_request(r.id),
                            rules.required_approvals(self.policy, r))
                for r in found
            ]

    def timeline(self, incident: str) -> list[Event]:
        with self._uow() as uow:
            found = list(iter_events(uow.connection, incident=incident))
        if not found:
            raise NotFound(f"no events for incident {incident}", rule="incident.not_found")
        return found

    def next_deadline(self) -> datetime | None:
        with self._uow() as uow:
            return uow.requests.next_deadline()

    # -- helpers --------------------------------------------------------------------

    def _check_public_key(
        self, public_key: str | None, roles: Sequence[RoleDef]
    ) -> dict[str, str]:
        """Validate a requester's SSH public key; the audit payload gets its fingerprint only."""
        if public_key is None:
            return {}
        fingerprint = public_key_fingerprint(public_key)
        if not any(self._connector(role.target).accepts_public_key for role in roles):
            raise InvalidInput("public_key: none of the requested roles signs SSH keys",
                               rule="request.public_key_unused")
        return {"public_key_sha256": fingerprint}

    def _connector(self, target: str) -> Connector:
        return self.revoker.connector(target)

    def _recheck_incident(self, principal: Principal, request_id: str) -> None:
        """An approval activates nothing for an incident that closed meanwhile."""
        if self.incidents.directory is None:
            return
        with self._uow() as uow:
            req = uow.requests.get(request_id)
        denied, _ = self.incidents.check(req.incident, req.zone)
        if denied is not None and req.state is RequestState.PENDING:
            self._refuse(principal, EventTag.APPROVAL_REFUSED, denied, request=req)

    def _event(self, uow: UnitOfWork, req: AccessRequest, actor: Actor, tag: EventTag,
               **kwargs: Any) -> None:
        record(uow, kwargs.pop("ts", None) or self._clock.now(), req, actor, tag, **kwargs)

