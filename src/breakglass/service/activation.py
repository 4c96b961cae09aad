"""Activation: from an approved request to credentials on every target, or none.

The intent (``activating``, with its expiry) is committed before any target is
touched; grants are minted one by one and stored together. If any target
fails, every credential already minted is revoked and the request fails, so a
request is never half active. A crash in between is rolled back by
:meth:`Revoker.recover`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from breakglass.connectors import GrantSpec
from breakglass.domain.errors import BreakglassError
from breakglass.domain.events import EventTag
from breakglass.domain.model import AccessRequest, Grant, Policy, RequestState
from breakglass.service import crashpoints
from breakglass.service.ports import Clock, SecretBox
from breakglass.service.recording import record
from breakglass.service.revocation import Revoker
from breakglass.storage.uow import UnitOfWork, UnitOfWorkFactory


class Activator:
    def __init__(self, *, policy: Policy, uow: UnitOfWorkFactory, clock: Clock,
                 secrets_box: SecretBox, revoker: Revoker) -> None:
        self._policy = policy
        self._uow = uow
        self._clock = clock
        self._box = secrets_box
        self.revoker = revoker
        self.on_activated: list[Callable[[], object]] = []

    def begin(self, uow: UnitOfWork, req: AccessRequest, now: datetime) -> None:
        """Record the intent (``activating``) and the expiry, before any target is touched."""
        req.transition(RequestState.ACTIVATING)
        req.activated_at = now  # when activation started; recovery leaves young ones alone
        req.expires_at = now + req.ttl
        uow.requests.save(req)
        record(uow, self._clock.now(), req, "broker", EventTag.REQUEST_ACTIVATING,
                    payload={"expires_at": req.expires_at.isoformat()})

    def activate(self, request_id: str) -> None:
        """Mint every grant; store them all, or roll back every one that was minted."""
        crashpoints.reached("activation.started")
        with self._uow() as uow:
            req = uow.requests.get(request_id)
        if req.state is not RequestState.ACTIVATING or req.expires_at is None:
            return
        issued: list[tuple[Grant, bytes]] = []
        audits: dict[str, Mapping[str, Any]] = {}
        account = self._policy.workloads[req.workload].account if req.workload else None
        now = self._clock.now()
        try:
            for i, role_name in enumerate(req.roles):
                role = self._policy.roles[role_name]
                grant_id = f"{req.id}-g{i}"
                spec = GrantSpec(grant_id=grant_id, request_id=req.id, principal=req.requester,
                                 role=role.name, incident=req.incident, grant=role.grant,
                                 expires_at=req.expires_at, public_key=req.public_key,
                                 account=account, zone=role.zone.value)
                cred = self.revoker.connector(role.target).grant(spec)
                audits[grant_id] = cred.audit
                crashpoints.reached("activation.minted")
                grant = Grant(id=grant_id, request_id=req.id, role=role.name, target=role.target,
                              target_ref=cred.target_ref, issued_at=now,
                              expires_at=req.expires_at, artefacts=cred.artefacts)
                issued.append((grant, self._box.seal(json.dumps(dict(cred.secret)).encode())))
        except BreakglassError as exc:  # a target or input failure: roll back what was minted
            for grant, _ in issued:
                self.revoker.try_revoke(grant)
            with self._uow() as uow:
                req = uow.requests.get(request_id, for_update=True)
                req.transition(RequestState.FAILED)
                req.ended_at, req.end_reason = self._clock.now(), str(exc)
                uow.requests.save(req)
                record(uow, self._clock.now(), req, "broker", EventTag.REQUEST_ACTIVATION_FAILED,
                            outcome="error", reason=str(exc))
            raise
        with self._uow() as uow:
            req = uow.requests.get(request_id, for_update=True)
            for grant, sealed in issued:
                uow.grants.add(grant)
                uow.grants.store_secret(grant.id, sealed)
                record(uow, self._clock.now(), req, "broker", EventTag.GRANT_ISSUED,
                       grant_id=grant.id, payload={"role": grant.role, "target": grant.target,
                                     "target_ref": grant.target_ref, "requester": req.requester,
                                     "expires_at": grant.expires_at.isoformat(),
                                     **audits.get(grant.id, {})})
            req.transition(RequestState.ACTIVE)
            req.activated_at = self._clock.now()
            uow.requests.save(req)
            for callback in self.on_activated:
                uow.on_commit(callback)
            expires = req.expires_at.isoformat() if req.expires_at else None
            record(uow, self._clock.now(), req, "broker", EventTag.REQUEST_ACTIVE,
                   payload={"expires_at": expires})
        crashpoints.reached("activation.stored")

