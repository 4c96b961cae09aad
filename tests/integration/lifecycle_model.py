"""A stateful model of the request lifecycle, driven through the broker's service layer.

Hypothesis interleaves requests (zones A, B, C, a runbook), approvals by every
kind of person (eligible, the requester under another display name, a teammate,
one person twice), denials, cancellations, extensions, revocations, credential
pickups, clock moves, passes of the expiry loop, target outages and crashes with
a restart; after every step the store is read back and judged
(:mod:`tests.integration.lifecycle_invariants`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from sqlalchemy import Engine

from breakglass.catalog.loader import LoadedCatalog
from breakglass.connectors import GrantSpec, IssuedCredential
from breakglass.domain.errors import BreakglassError, PolicyRefused, TargetError
from breakglass.domain.extensions import ExtensionState
from breakglass.domain.model import GrantState, Principal, RequestState
from breakglass.service.broker import Broker
from breakglass.service.ports import SecretBox
from breakglass.storage.uow import UnitOfWork
from tests.fakes import FakeClock, MemoryConnector, human
from tests.integration import lifecycle_invariants as inv
from tests.integration.lifecycle_stores import StoreFactory

EXPLORED: Counter[str] = Counter()
TARGET = "embeddings-db"
INCIDENT = "SEV-4242"
INSTANCE = "fsm-broker"

# The test catalog's people (tests/fixtures/catalog.yaml) and two second sessions: the
# requester ``uma`` and the approver ``vera`` again, under other display names.
GROUPS: dict[str, tuple[str, ...]] = {
    "uma": ("team:ml-serving", "responders"),
    "ugo": ("team:ml-serving", "responders", "reviewers"),
    "vera": ("team:sre", "reviewers"),
    "wim": ("team:data-eng", "reviewers"),
    "xia": ("team:ml-serving", "responders"),
    "yuri": ("team:finance",),
}
NO_MFA = {"xia"}
REQUESTER, REQUESTER_ELSEWHERE = "the requester", "the requester on another device"
SECOND_SESSION = "V. Ortiz"  # vera again, under another display name

REQUESTS: dict[str, tuple[list[str], str | None]] = {
    "A": (["embeddings-read"], None),
    "B": (["embeddings-requeue"], None),
    "B2": (["embeddings-read", "embeddings-requeue"], None),  # two grants, zone B rules
    "C": (["embeddings-repair"], None),
    "runbook": (["embeddings-requeue"], "RB-7"),
}

ACTORS = st.sampled_from([REQUESTER, REQUESTER_ELSEWHERE, *sorted(GROUPS), SECOND_SESSION])
PICKS = st.tuples(st.booleans(), st.integers(0, 99))
"""Which request: (among all, not only those in the state the command is for?, which)."""
TTLS = st.sampled_from([None, timedelta(seconds=30), timedelta(minutes=5),
                        timedelta(minutes=12)])


LATE = frozenset({"request:pending:expired", "request:revocation:started",
                  "grant:credential:expired", "grant:revocation:failed", "request:ended"})
"""What a refusal for lateness records: the expiry the background loop would record."""


class Crash(BaseException):
    """The broker process dies here; nothing after this point of the call runs."""


class ModelConnector(MemoryConnector):
    """The memory target, which can be down, or kill the broker at a crash point."""

    def __init__(self) -> None:
        super().__init__(TARGET)
        self.crash_at: str | None = None

    def _crash(self, point: str) -> None:
        if self.crash_at == point:
            self.crash_at = None
            raise Crash(point)

    def grant(self, spec: GrantSpec) -> IssuedCredential:
        self._crash("activation.started")
        issued = super().grant(spec)
        self._crash("activation.minted")
        return issued

    def revoke(self, target_ref: str, artefacts: tuple[str, ...] = ()) -> None:
        self._crash("revocation.started")
        super().revoke(target_ref, artefacts)
        self._crash("revocation.revoked")


@dataclass
class Outcome:
    refused: PolicyRefused | None = None
    failed: BreakglassError | None = None


class LifecycleModel(RuleBasedStateMachine):
    stores: ClassVar[StoreFactory]
    loaded: ClassVar[LoadedCatalog]

    def __init__(self) -> None:
        super().__init__()
        self.engine: Engine = self.stores.new()
        self.clock = FakeClock()
        self.target = ModelConnector()
        self.box = SecretBox(SecretBox.new_key())
        self.broker = self._start()
        self.requests: list[str] = []
        self.requester: dict[str, str] = {}
        self.extensions: list[tuple[str, str]] = []
        self.picked: set[str] = set()
        self.states: dict[str, RequestState] = {}
        self.zones: dict[str, str] = {}
        self.last_tick: tuple[datetime, bool] | None = None  # when, and was the target up
        self.settled = True  # no crash since the last pass of the loop with the target up
        self.people = inv.Directory(
            {self.person(n).subject_id: frozenset(g) for n, g in GROUPS.items()}, "reviewers")
        self.required = {z.value: p.approvals for z, p in self.loaded.policy.zones.items()}

    def teardown(self) -> None:
        self.stores.drop(self.engine)

    def _start(self, instance: str = INSTANCE) -> Broker:
        return Broker(policy=self.loaded.policy, uow=lambda: UnitOfWork(self.engine),
                      connectors={TARGET: self.target}, clock=self.clock, secrets_box=self.box,
                      instance_id=instance)

    def person(self, name: str, rid: str | None = None) -> Principal:
        """A fresh session of ``name`` (MFA just now), as the identity provider vouches;
        the requester of ``rid`` for :data:`REQUESTER` (another display name, same
        subject, for :data:`REQUESTER_ELSEWHERE`)."""
        shown = name
        if name in (REQUESTER, REQUESTER_ELSEWHERE):
            assert rid is not None
            elsewhere = name == REQUESTER_ELSEWHERE
            shown = name = self.requester[rid]
            if elsewhere:
                shown = name.title() + " (phone)"
        elif name == SECOND_SESSION:
            name = "vera"
        return human(shown, *GROUPS[name], mfa=name not in NO_MFA, clock=self.clock,
                     subject="sub-" + name)

    # -- running one step ---------------------------------------------------------------

    def act(self, call: Callable[[], Any], label: str) -> Outcome:
        """Run one command; check it left exactly one event per refusal and none else."""
        before = self._log_size()
        outcome = Outcome()
        try:
            call()
        except PolicyRefused as exc:
            outcome.refused = exc
        except TargetError as exc:  # a target that is down: activation fails cleanly
            outcome.failed = exc
        if outcome.failed is not None:
            assert self.target.fail_grant or self.target.fail_revoke, outcome.failed
        with UnitOfWork(self.engine) as uow:
            new = uow.events_since(before)
        refusals = [e for e in new if e.outcome == "denied"]
        if outcome.refused is None:
            assert not refusals, f"no refusal raised, yet recorded: {refusals}"
        else:
            assert [e.rule for e in refusals] == [outcome.refused.rule], (
                f"refused {outcome.refused.rule}; recorded {[e.rule for e in refusals]}")
            # A refusal changes nothing; but one on a request whose time is up records the
            # expiry the loop would (deliberate: Broker._refuse enforces the deadline, so the
            # state agrees with the refusal at once, whatever the refusal's rule).
            changed = [e for e in new if e.outcome != "denied"]
            assert {e.action for e in changed} <= LATE, (
                f"refused {outcome.refused.rule}, yet {[e.action for e in changed]}")
            for rid in {e.request_id for e in changed if e.request_id}:
                req = self.broker.view(rid).request
                assert req.expires_at is not None or req.pending_until <= self.clock.now()
                assert req.expires_at is None or req.expires_at <= self.clock.now(), (
                    f"refused {outcome.refused.rule}, and {rid} ended before its time")
        rule_ = outcome.refused.rule if outcome.refused else "failed" if outcome.failed else "ok"
        EXPLORED[f"{label}: {rule_}"] += 1  # what the run reached (printed with -s)
        return outcome

    def _log_size(self) -> int:
        with UnitOfWork(self.engine) as uow:
            return len(uow.events_since(0))

    def pick(self, which: tuple[bool, int], state: RequestState = RequestState.ACTIVE,
             zones: tuple[str, ...] = ("A", "B", "C")) -> str:
        among_all, i = which
        found = [r for r in self.requests if self.states.get(r) is state
                 and self.zones.get(r) in zones]
        if among_all or not found:
            found = self.requests
        return found[i % len(found)]

    def note_requests(self, who: str) -> None:
        """Requests made in the last step (also those whose activation failed or crashed)."""
        for view in self.broker.search(incident=INCIDENT):
            if view.request.id not in self.requester:
                self.requests.append(view.request.id)
                self.requester[view.request.id] = who

    # -- rules ----------------------------------------------------------------------

    @initialize()
    def first_requests(self) -> None:
        for kind in ("A", "B", "C"):
            self.request(kind, "uma", None)

    @rule(kind=st.sampled_from(sorted(REQUESTS)), who=st.sampled_from(["uma", "ugo", "xia"]),
          ttl=TTLS)
    def request(self, kind: str, who: str, ttl: timedelta | None) -> None:
        roles, runbook = REQUESTS[kind]
        self.act(lambda: self.broker.request_access(
            self.person(who), roles, incident=INCIDENT, reason="recovery", ttl=ttl,
            runbook=runbook), f"request {kind}")
        self.note_requests(who)

    @precondition(lambda self: self.requests)
    @rule(which=PICKS, who=ACTORS)
    def approve(self, which: tuple[bool, int], who: str) -> None:
        rid = self.pick(which, RequestState.PENDING)
        self.act(lambda: self.broker.approve(self.person(who, rid), rid, "ok"), "approve")

    @precondition(lambda self: self.requests)
    @rule(which=PICKS, who=ACTORS, withdraw=st.booleans())
    def deny_or_cancel(self, which: tuple[bool, int], who: str, withdraw: bool) -> None:
        rid = self.pick(which, RequestState.PENDING)
        if withdraw:
            self.act(lambda: self.broker.cancel(self.person(who, rid), rid, "no need"),
                     "cancel")
        else:
            self.act(lambda: self.broker.deny(self.person(who, rid), rid, "no"), "deny")

    @precondition(lambda self: self.requests)
    @rule(which=PICKS, who=ACTORS)
    def revoke(self, which: tuple[bool, int], who: str) -> None:
        rid = self.pick(which)
        self.act(lambda: self.broker.revoke(self.person(who, rid), rid, "done"), "revoke")

    @precondition(lambda self: self.requests)
    @rule(which=PICKS, who=ACTORS)
    def pickup(self, which: tuple[bool, int], who: str) -> None:
        rid = self.pick(which)
        got: list[list[dict[str, Any]]] = []
        now = self.clock.now()
        outcome = self.act(
            lambda: got.append(self.broker.credentials(self.person(who, rid), rid)), "pickup")
        if outcome.refused is None:
            view = self.broker.view(rid)
            assert view.request.requester_id == self.person(who, rid).subject_id
            assert view.request.expires_at is not None
            assert now < view.request.expires_at
            for cred in got[0]:
                assert cred["grant"] not in self.picked, f"{cred['grant']} shown twice"
                self.picked.add(cred["grant"])

    @precondition(lambda self: self.requests)
    @rule(which=PICKS, who=ACTORS,
          ttl=st.sampled_from([timedelta(minutes=1), timedelta(minutes=10),
                               timedelta(minutes=30)]))
    def extend(self, which: tuple[bool, int], who: str, ttl: timedelta) -> None:
        rid = self.pick(which, zones=("C", "B"))  # zone A extends at once, with no decision
        views = []
        self.act(lambda: views.append(self.broker.extensions.request_extension(
            self.person(who, rid), rid, ttl, "still broken")), "extend")
        if views:
            self.extensions.append((rid, views[0].extension.id))

    @precondition(lambda self: self.extensions)
    @rule(which=PICKS, who=ACTORS, deny=st.booleans())
    def decide_extension(self, which: tuple[bool, int], who: str, deny: bool) -> None:
        among_all, i = which
        found = [(r, x) for r, x in self.extensions
                 if self.broker.extensions.view(r, x).extension.state is ExtensionState.PENDING]
        rid, xid = (self.extensions if among_all or not found else found)[i % len(
            found if found and not among_all else self.extensions)]
        ext = self.broker.extensions
        if deny:
            self.act(lambda: ext.deny(self.person(who, rid), rid, xid, "no"), "deny extension")
        else:
            self.act(lambda: ext.approve(self.person(who, rid), rid, xid, "ok"),
                     "approve extension")

    @rule(seconds=st.sampled_from([0, 1, 29, 61, 5 * 60, 13 * 60, 61 * 60]),
          then_tick=st.booleans())
    def time_passes(self, seconds: int, then_tick: bool) -> None:
        """The clock moves (a little, or past deadlines); the expiry loop may run."""
        self.clock.advance(seconds=seconds)
        if then_tick:
            self.tick()

    def tick(self) -> None:
        """One pass of the background loop (service/expiry.py): recover, expire, extensions."""
        self.act(self._loop_pass, "tick")
        up = not (self.target.fail_grant or self.target.fail_revoke)
        self.last_tick = (self.clock.now(), up)
        self.settled = self.settled or up

    def _loop_pass(self) -> None:
        try:
            self.broker.recover(timedelta(seconds=30))
            self.broker.expire_due()
            self.broker.extensions.tick()
        except BreakglassError:  # the loop logs it and tries again at its next pass
            if not (self.target.fail_grant or self.target.fail_revoke):
                raise

    @rule(down=st.booleans())
    def target_outage(self, down: bool) -> None:
        self.target.fail_grant = self.target.fail_revoke = down

    @rule(point=st.sampled_from(["activation.started", "activation.minted",
                                 "revocation.started", "revocation.revoked"]),
          which=PICKS, same_identity=st.booleans(), down=st.booleans())
    def crash_and_recover(self, point: str, which: tuple[bool, int], same_identity: bool,
                          down: bool) -> None:
        """Kill the broker at a point of an activation or a revocation, restart it (as the
        same instance, or another one taking over; the target up or down meanwhile), let
        its loop run, and compare the target with the store."""
        self.target.fail_grant = self.target.fail_revoke = False
        self.target.crash_at = point
        try:
            if point.startswith("activation"):
                self.act(lambda: self.broker.request_access(
                    self.person("uma"), ["embeddings-read"], incident=INCIDENT,
                    reason="recovery"), "request A (crash)")
            elif self.requests:
                rid = self.pick(which)
                self.act(lambda: self.broker.revoke(self.person(REQUESTER, rid), rid, "crash"),
                         "revoke (crash)")
        except Crash:
            self.settled = False
        self.target.crash_at = None
        self.note_requests("uma")
        self.broker = self._start(INSTANCE if same_identity else INSTANCE + "-2")
        self.target.fail_grant = self.target.fail_revoke = down
        self.clock.advance(seconds=31)  # the restart, and recovery's grace for young work
        self.tick()


    # -- invariants ----------------------------------------------------------------

    @invariant()
    def store_is_consistent(self) -> None:
        snap = inv.snapshot(self.engine, self.requests)
        inv.check_log(snap)
        inv.check_terminal(self.states, snap)
        inv.check_approvals(snap, self.people, self.required)
        inv.check_expiry(snap)
        if self.last_tick is not None and self.last_tick[0] == self.clock.now():
            inv.check_after_tick(snap, self.clock.now(), target_up=self.last_tick[1])
        self.target_matches_store(snap)
        self.states = {rid: r.state for rid, r in snap.requests.items()}
        self.zones = {rid: r.zone.value for rid, r in snap.requests.items()}

    def target_matches_store(self, snap: inv.Snapshot) -> None:
        """The target holds nothing the store cannot account for, and everything the store
        says works; after recovery, exactly what the store has in force (a revocation
        waiting for its retry may already be done on the target)."""
        live = set(self.target.live)
        intents = {self.target.planned_ref(f"{rid}-g{i}") for rid, r in snap.requests.items()
                   if r.state is RequestState.ACTIVATING for i in range(len(r.roles))}
        assert live <= snap.in_force() | intents, (
            f"the target holds {sorted(live - snap.in_force())}, unknown to the store")
        working = {g.target_ref for rid, gs in snap.grants.items() for g in gs
                   if snap.requests[rid].state is RequestState.ACTIVE
                   and g.state is GrantState.ACTIVE}
        assert working <= live, f"the store says {sorted(working - live)} work; they do not"
        if self.settled:
            assert not intents, f"activations left unfinished after recovery: {intents}"
