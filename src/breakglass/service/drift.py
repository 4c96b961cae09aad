"""Drift reconciliation: target-side access that matches no active grant.

Every connector that can list what it made (``list_managed``) is compared
with the grants the store says are active. A credential carrying the broker's
marker that no grant owns is revoked and alerted; a grant whose credential
vanished on the target is alerted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from breakglass.connectors import Connector
from breakglass.domain.errors import TargetError
from breakglass.domain.events import EventTag
from breakglass.domain.model import RequestState
from breakglass.service.ports import Clock
from breakglass.storage.uow import UnitOfWorkFactory


@dataclass
class DriftReport:
    orphans_revoked: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def sweep(uow: UnitOfWorkFactory, connectors: Mapping[str, Connector], clock: Clock) -> DriftReport:
    report = DriftReport()
    for name, connector in connectors.items():
        if not connector.lists_managed:
            continue
        try:
            on_target = set(connector.list_managed())
        except TargetError as exc:
            report.errors.append(str(exc))
            continue
        with uow() as u:
            # Any target's: roles are server-wide, so two targets on one server list each other's.
            owned = u.grants.owned_refs()
            in_flight = {
                ref
                for request_id in u.requests.in_state(RequestState.ACTIVATING)
                for ref in _planned(connector, request_id, u.requests.get(request_id).roles)
            }
            active = dict(u.grants.active_refs(name))
        orphans = on_target - owned - in_flight
        missing = {g for g, ref in active.items() if ref not in on_target}
        if orphans or missing:
            # Brokers keep working while the sweep looks: a grant revoked after the listing
            # looks orphaned, one activated after it looks vanished. Look at both again.
            try:
                again = set(connector.list_managed())
            except TargetError as exc:
                report.errors.append(str(exc))
                continue
            orphans &= again
            with uow() as u:
                still = dict(u.grants.active_refs(name))
            missing = {g for g in missing if g in still and still[g] not in again}
        for ref in sorted(orphans):
            try:
                connector.revoke(ref)
            except TargetError as exc:
                report.errors.append(str(exc))
                continue
            report.orphans_revoked.append(ref)
            with uow() as u:
                u.events.append(ts=clock.now(), actor="broker", action=EventTag.DRIFT_ORPHAN,
                                outcome="alert", reason=f"{ref} on {name} matched no active grant",
                                payload={"target": name, "target_ref": ref, "alert": True})
        with uow() as u:
            for grant_id in sorted(missing):
                ref = active[grant_id]
                report.missing.append(ref)
                u.events.append(ts=clock.now(), actor="broker", action=EventTag.DRIFT_MISSING,
                                outcome="alert", grant_id=grant_id,
                                reason=f"credential {ref} of {grant_id} is gone from {name}",
                                payload={"target": name, "target_ref": ref, "alert": True})
    return report


def _planned(connector: Connector, request_id: str, roles: tuple[str, ...]) -> set[str]:
    refs = (connector.planned_ref(f"{request_id}-g{i}") for i in range(len(roles)))
    return {r for r in refs if r is not None}
