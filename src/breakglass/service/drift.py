"""Drift reconciliation: act only on what this deployment can prove it owns.

Every connector that can list what it made (``list_managed``: every name under the
marker prefix) is compared with the store. A name found on the target is revoked
only on positive evidence, both of:

* it carries this deployment's tag (:meth:`Ownership.owns`, an HMAC under the key in
  this deployment's store), and
* the store holds a record of it whose life is over: its grant was revoked, expired
  or failed, or its activation failed without a grant in force.

Absence of evidence is never a reason to revoke. Anything else under the prefix is a
*finding*, alerted (``drift:lookalike:found``) and shown by ``inventory``, never
touched: a name without the tag (a pre-existing application role ``bg_jobs``,
another deployment's grant, a forgery) or a tagged name the store has no record of.
An activation in flight or just committed has no ended record, so the sweep cannot
revoke it; the store is read in one snapshot. A grant in force whose credential
vanished from the target is alerted as missing.

A :class:`DriftMemory` kept by the background loop reports each finding once per
broker start, and again only when it changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from breakglass.connectors import Connector, StandingPrivilege
from breakglass.domain.errors import TargetError
from breakglass.domain.events import EventTag
from breakglass.service.ports import Clock
from breakglass.storage.ownership import RecordedRefs
from breakglass.storage.uow import UnitOfWorkFactory


class Finding(StrEnum):
    LOOKALIKE = "lookalike"
    """Under the marker prefix, without this deployment's tag."""
    UNRECORDED = "unrecorded"
    """With this deployment's tag, but no record of it in the store."""


_EXPLAINED = {
    Finding.LOOKALIKE: "carries the marker prefix but not this deployment's tag",
    Finding.UNRECORDED: "carries this deployment's tag but the store has no record of it",
}


@dataclass
class DriftReport:
    orphans_revoked: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    """Names reported (alerted) by this sweep as findings: never revoked."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one listing of a target comes to, against one snapshot of the store."""

    orphans: frozenset[str]
    findings: Mapping[str, Finding]


class DriftMemory:
    """The findings already reported per target since this broker started."""

    def __init__(self) -> None:
        self._reported: dict[str, dict[str, Finding]] = {}

    def news(self, target: str, findings: Mapping[str, Finding]) -> dict[str, Finding]:
        """The findings not reported yet, or changed; forgets those that went away."""
        before = self._reported.get(target, {})
        self._reported[target] = dict(findings)
        return {ref: kind for ref, kind in findings.items() if before.get(ref) is not kind}


def judge(connector: Connector, on_target: set[str], records: RecordedRefs) -> Verdict:
    """Orphans (owned, with an ended record) and findings (everything else not in force)."""
    ownership = connector.ownership
    live = records.live | _planned(connector, records.activating)
    ended = (records.ended | _planned(connector, records.failed)) - live
    orphans: set[str] = set()
    findings: dict[str, Finding] = {}
    for ref in sorted(on_target - live):
        if not ownership.owns(ref):
            findings[ref] = Finding.LOOKALIKE
        elif ref in ended:
            orphans.add(ref)
        else:
            findings[ref] = Finding.UNRECORDED
    return Verdict(frozenset(orphans), findings)


def sweep(uow: UnitOfWorkFactory, connectors: Mapping[str, Connector], clock: Clock,
          memory: DriftMemory | None = None) -> DriftReport:
    report = DriftReport()
    memory = memory or DriftMemory()
    for name, connector in connectors.items():
        if not connector.lists_managed:
            continue
        try:
            _sweep_one(uow, name, connector, clock, memory, report)
        except TargetError as exc:
            report.errors.append(str(exc))
    return report


def _sweep_one(uow: UnitOfWorkFactory, name: str, connector: Connector, clock: Clock,
               memory: DriftMemory, report: DriftReport) -> None:
    on_target = set(connector.list_managed())
    with uow() as u:
        u.snapshot()
        # Any target's records: roles are server-wide, so two targets on one server list
        # each other's.
        records = u.ownership.records_for(on_target)
        active = dict(u.grants.active_refs(name))
    verdict = judge(connector, on_target, records)
    orphans = set(verdict.orphans)
    missing = {g for g, ref in active.items() if ref not in on_target}
    if orphans or missing:
        # Brokers keep working while the sweep looks: a grant revoked after the listing
        # still shows, one activated after it looks vanished. Look at both again.
        again = set(connector.list_managed())
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
                            outcome="alert",
                            reason=f"{ref} on {name} is this deployment's and its grant ended",
                            payload={"target": name, "target_ref": ref, "alert": True})
    news = memory.news(name, verdict.findings)
    with uow() as u:
        for grant_id in sorted(missing):
            ref = active[grant_id]
            report.missing.append(ref)
            u.events.append(ts=clock.now(), actor="broker", action=EventTag.DRIFT_MISSING,
                            outcome="alert", grant_id=grant_id,
                            reason=f"credential {ref} of {grant_id} is gone from {name}",
                            payload={"target": name, "target_ref": ref, "alert": True})
        for ref, kind in sorted(news.items()):
            report.findings.append(ref)
            u.events.append(ts=clock.now(), actor="broker", action=EventTag.DRIFT_LOOKALIKE,
                            outcome="alert",
                            reason=f"{ref} on {name} {_EXPLAINED[kind]}: reported, not touched",
                            payload={"target": name, "target_ref": ref, "finding": kind.value,
                                     "alert": True})


def findings(uow: UnitOfWorkFactory, name: str, connector: Connector) -> list[StandingPrivilege]:
    """For ``inventory``: names under the marker prefix that drift will not revoke (and
    those it will), each with what the broker knows of it."""
    if not connector.lists_managed:
        return []
    on_target = set(connector.list_managed())
    with uow() as u:
        u.snapshot()
        records = u.ownership.records_for(on_target)
    verdict = judge(connector, on_target, records)
    found = [StandingPrivilege(target=name, subject=ref, privilege=f"DRIFT {kind.value.upper()}",
                               detail=f"{_EXPLAINED[kind]}; reported, never revoked by drift")
             for ref, kind in sorted(verdict.findings.items())]
    found += [StandingPrivilege(target=name, subject=ref, privilege="DRIFT ORPHAN",
                                detail="this deployment's, its grant ended; drift revokes it")
              for ref in sorted(verdict.orphans)]
    return found


def _planned(connector: Connector, requests: tuple[tuple[str, tuple[str, ...]], ...]) -> set[str]:
    refs = (connector.planned_ref(f"{request_id}-g{i}")
            for request_id, roles in requests for i in range(len(roles)))
    return {r for r in refs if r is not None}
