"""What must hold after every step of the lifecycle model, read back from the store.

Everything here reads the store through the unit of work and its repositories,
never the broker's private state, and judges it against the catalog's rules as
the model knows them (its own directory of who is in which team), not as the
broker computed them.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine

from breakglass.domain.extensions import Extension, ExtensionState
from breakglass.domain.model import AccessRequest, Grant, GrantState, RequestState
from breakglass.storage.events import Event, iter_events
from breakglass.storage.extensions import ExtensionRepository
from breakglass.storage.uow import UnitOfWork

TERMINAL = frozenset({RequestState.EXPIRED, RequestState.REVOKED, RequestState.DENIED,
                      RequestState.CANCELLED, RequestState.FAILED})

# Each request transition and the one event that records it.
TRANSITIONS: dict[str, tuple[str | None, str | None]] = {
    "request:created": (None, "pending"),
    "request:activation:started": ("pending", "activating"),
    "request:activated": ("activating", "active"),
    "request:activation:failed": ("activating", "failed"),
    "request:denied": ("pending", "denied"),
    "request:cancelled": ("pending", "cancelled"),
    "request:pending:expired": ("pending", "expired"),
    "request:revocation:started": ("active", "revoking"),
    "request:ended": ("revoking", None),  # to the state in its payload: expired or revoked
}


@dataclass
class Snapshot:
    """The store at one moment: requests with their grants and extensions, and the log."""

    requests: dict[str, AccessRequest]
    grants: dict[str, list[Grant]]
    extensions: dict[str, list[Extension]]
    events: list[Event]
    by_request: dict[str, list[Event]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        found: dict[str, list[Event]] = defaultdict(list)
        for event in self.events:
            if event.request_id is not None:
                found[event.request_id].append(event)
        self.by_request = dict(found)

    def in_force(self) -> set[str]:
        """Target refs the store answers for: grants active or still being revoked."""
        return {g.target_ref for gs in self.grants.values() for g in gs
                if g.state in (GrantState.ACTIVE, GrantState.REVOCATION_PENDING)}


def snapshot(engine: Engine, request_ids: list[str]) -> Snapshot:
    with UnitOfWork(engine) as uow:
        requests = {rid: uow.requests.get(rid) for rid in request_ids}
        grants = {rid: uow.grants.for_request(rid) for rid in request_ids}
        repo = ExtensionRepository(uow.connection)
        extensions = {rid: repo.for_request(rid) for rid in request_ids}
        events = list(iter_events(uow.connection))
    return Snapshot(requests, grants, extensions, events)


@dataclass(frozen=True)
class Directory:
    """Who the model's people really are: subject key to groups."""

    groups: dict[str, frozenset[str]]
    approver_group: str

    def teams(self, subject: str) -> frozenset[str]:
        return frozenset(g.removeprefix("team:") for g in self.groups.get(subject, ())
                         if g.startswith("team:"))

    def eligible(self, approver: str, requester: str) -> bool:
        """An approver of the zone, not the requester, outside the requester's team."""
        return (approver != requester
                and self.approver_group in self.groups.get(approver, frozenset())
                and not self.teams(approver) & self.teams(requester))


def check_log(snap: Snapshot) -> None:
    """Indices gapless; every transition replays from exactly one event each."""
    indices = [e.index for e in snap.events]
    assert indices == list(range(len(indices))), f"audit indices not gapless: {indices}"
    for rid, req in snap.requests.items():
        state: str | None = None
        for event in snap.by_request.get(rid, []):
            step = TRANSITIONS.get(event.action)
            if step is None or event.outcome == "denied":
                continue
            before, after = step
            assert state == before, (
                f"{rid}: {event.action} (#{event.index}) recorded while {state}, not {before}")
            state = after or event.payload["state"]
        assert state == req.state.value, (
            f"{rid}: the log replays to {state} but the store says {req.state}")
        actions = Counter(e.action for e in snap.by_request.get(rid, []))
        assert actions["request:approval:added"] == len(req.approvals), (
            f"{rid}: {len(req.approvals)} approvals, {actions['request:approval:added']} events")
        check_grant_events(rid, snap)


def check_grant_events(rid: str, snap: Snapshot) -> None:
    per_grant: dict[str, Counter[str]] = defaultdict(Counter)
    for event in snap.by_request.get(rid, []):
        if event.grant_id is not None and event.outcome != "denied":
            per_grant[event.grant_id][event.action] += 1
    for grant in snap.grants[rid]:
        seen = per_grant[grant.id]
        assert seen["grant:credential:issued"] == 1, f"{grant.id}: issued {seen}"
        assert seen["grant:credential:viewed"] <= 1, f"{grant.id}: picked up twice: {seen}"
        ended = seen["grant:credential:revoked"] + seen["grant:credential:expired"]
        done = grant.state in (GrantState.REVOKED, GrantState.EXPIRED)
        assert ended == (1 if done else 0), f"{grant.id} is {grant.state}: {seen}"


def check_approvals(snap: Snapshot, people: Directory, required: dict[str, int]) -> None:
    """Access was minted only with enough distinct eligible approvals, or self-approved."""
    for rid, req in snap.requests.items():
        actions = [e.action for e in snap.by_request.get(rid, [])]
        if "request:activation:started" not in actions:
            continue
        need = required[req.zone.value]
        if need == 0 or (req.runbook is not None and req.zone.value != "C"):
            assert "request:approval:auto" in actions, f"{rid}: activated without approval"
            continue
        started = next(e for e in snap.by_request[rid]
                       if e.action == "request:activation:started")
        approvers = {a.approver_id for a in req.approvals
                     if a.at <= started.ts and people.eligible(a.approver_id, req.requester_id)}
        assert len(approvers) >= need, (
            f"{rid} (zone {req.zone}) activated with {len(approvers)} eligible approvals of "
            f"{need}: {[(a.approver, a.approver_id) for a in req.approvals]}")
        for ext in snap.extensions[rid]:
            if ext.state is ExtensionState.APPLIED and ext.required:
                fresh = {a.approver_id for a in ext.approvals
                         if people.eligible(a.approver_id, req.requester_id)}
                assert len(fresh) >= ext.required, (
                    f"{ext.id} applied with {len(fresh)} eligible approvals of {ext.required}")


def check_expiry(snap: Snapshot) -> None:
    """The request's expiry is the activation's, moved only by applied extensions."""
    for rid, req in snap.requests.items():
        moves = [e.payload["expires_at"] for e in snap.by_request.get(rid, [])
                 if e.action in ("request:activation:started", "extension:expiry:moved")]
        if not moves:
            assert req.expires_at is None, f"{rid} has an expiry nobody recorded"
            continue
        assert req.expires_at == datetime.fromisoformat(moves[-1]), (
            f"{rid}: expires_at {req.expires_at} but the log says {moves[-1]}")
        for grant in snap.grants[rid]:
            if grant.state is GrantState.ACTIVE:
                assert grant.expires_at == req.expires_at, f"{grant.id} expiry differs"


def check_after_tick(snap: Snapshot, now: datetime, *, target_up: bool) -> None:
    """After a pass of the expiry loop at ``now``, nothing is left in force past its time.

    An activation interrupted by a crash is rolled back on the target, so it waits for
    the target; everything else ends (or starts ending) whether the target is up or not."""
    stuck = (RequestState.ACTIVE, RequestState.ACTIVATING) if target_up else (
        RequestState.ACTIVE,)
    for rid, req in snap.requests.items():
        if req.state is RequestState.PENDING:
            assert req.pending_until > now, f"{rid} still pending past {req.pending_until}"
        if req.state in stuck:
            assert req.expires_at is not None
            assert req.expires_at > now, (
                f"{rid} still {req.state} at {now}, past its expiry {req.expires_at}")
        for grant in snap.grants[rid]:
            if grant.state is GrantState.ACTIVE and req.state is RequestState.ACTIVE:
                assert grant.expires_at > now, f"{grant.id} active past {grant.expires_at}"


def check_terminal(before: dict[str, RequestState], snap: Snapshot) -> None:
    for rid, state in before.items():
        if state in TERMINAL:
            assert snap.requests[rid].state is state, (
                f"{rid} left terminal {state} for {snap.requests[rid].state}")
