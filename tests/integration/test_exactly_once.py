"""Exactly once, exactly on time, on both stores with real threads.

An attacker (or an unlucky responder) fires many pickups at one credential, or
an explicit revoke, an incident close and the expiry loop at one request, or
decides a request after its time ran out but before the loop noticed. Each
attack must fail: one secret, one revocation, no error to any caller, and no
decision past a deadline.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import select

from breakglass.domain.errors import PolicyRefused
from breakglass.domain.model import GrantState, RequestState
from breakglass.service.broker import Broker
from breakglass.service.ports import SecretBox
from breakglass.storage import tables as t
from breakglass.storage.uow import UnitOfWork
from tests.fakes import MemoryConnector


class CountingConnector(MemoryConnector):
    """Counts target-side revoke calls per credential (the target answers idempotently)."""

    def __init__(self) -> None:
        super().__init__("embeddings-db")
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def revoke(self, target_ref: str, artefacts: tuple[str, ...] = ()) -> None:
        with self._lock:
            self.calls[target_ref] += 1
        super().revoke(target_ref, artefacts)


@pytest.fixture
def target() -> CountingConnector:
    return CountingConnector()


@pytest.fixture
def broker(engine, loaded, clock, target) -> Broker:
    return Broker(policy=loaded.policy, uow=lambda: UnitOfWork(engine),
                  connectors={"embeddings-db": target}, clock=clock,
                  secrets_box=SecretBox(SecretBox.new_key()))


def race(calls: list[Callable[[], object]]) -> list[object]:
    """Run every call at once on its own thread; each result, or the exception it raised."""
    start = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = calls[i]()
        except Exception as exc:  # noqa: BLE001 - the test inspects every outcome
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return results


def actions(engine, request_id: str) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(t.events.c.action).where(
            t.events.c.request_id == request_id).order_by(t.events.c.idx)).scalars())


def test_fifty_concurrent_pickups_get_the_secret_exactly_once(broker, people, engine):
    for _round in range(3):
        rid = broker.request_access(people["uma"], ["embeddings-read"], incident="SEV-1234",
                                    reason="recovery").request.id
        outcomes = race([lambda rid=rid: broker.credentials(people["uma"], rid)] * 50)
        won = [o for o in outcomes if isinstance(o, list)]
        lost = [o for o in outcomes if not isinstance(o, list)]
        assert len(won) == 1, outcomes
        assert won[0][0]["token"].startswith("s3cr3t-")
        assert all(isinstance(o, PolicyRefused) and o.rule == "credentials.shown_once"
                   for o in lost), lost
        seen = actions(engine, rid)
        assert seen.count("grant:credential:viewed") == 1
        assert seen.count("grant:credential:refused") == 49


@pytest.mark.parametrize("time_up", [False, True], ids=["before-expiry", "at-expiry"])
def test_revoke_close_and_expiry_converge_on_one_revocation(broker, people, target, engine,
                                                            clock, time_up):
    ids = [broker.request_access(people["uma"], ["embeddings-requeue"], incident="SEV-4321",
                                 reason="recovery", ttl=timedelta(seconds=30),
                                 runbook="RB-7").request.id
           for _ in range(8)]  # zone B: its approvers may revoke too
    if time_up:
        clock.advance(seconds=30)
    calls: list[Callable[[], object]] = [broker.expire_due, broker.expire_due,
                                         lambda: broker.close_incident(people["vera"],
                                                                       "SEV-4321"),
                                         lambda: broker.close_incident(people["wim"],
                                                                       "SEV-4321")]
    for rid in ids:
        calls += [lambda rid=rid: broker.revoke(people["uma"], rid, "done"),
                  lambda rid=rid: broker.revoke(people["ugo"], rid)]
    outcomes = race(calls)
    assert not [o for o in outcomes if isinstance(o, Exception)], outcomes
    broker.expire_due()  # whatever a caller found in hand is finished by now
    final = RequestState.EXPIRED if time_up else RequestState.REVOKED
    for rid in ids:
        view = broker.view(rid)
        assert view.request.state is final
        (grant,) = view.grants
        assert grant.state.value == final.value
        assert target.calls[grant.target_ref] == 1  # revoked on the target once
        seen = actions(engine, rid)
        assert seen.count("request:revocation:started") == 1
        assert seen.count("grant:credential:revoked") + seen.count(
            "grant:credential:expired") == 1
        assert seen.count("request:ended") == 1
    assert target.live == {}


def test_a_revoke_that_finds_access_ended_by_another_succeeds_and_says_so(
        broker, people, clock, target):
    rid = broker.request_access(people["uma"], ["embeddings-read"], incident="SEV-1234",
                                reason="recovery", ttl=timedelta(seconds=30)).request.id
    clock.advance(seconds=31)
    broker.expire_due()
    view = broker.revoke(people["uma"], rid)
    assert view.request.state is RequestState.EXPIRED
    assert "already ended" in view.note
    assert len(target.revocations) == 1
    other = broker.request_access(people["uma"], ["embeddings-read"], incident="SEV-1234",
                                  reason="recovery").request.id
    assert broker.close_incident(people["vera"], "SEV-1234") == [other]
    closed = broker.revoke(people["uma"], other, "mine too")
    assert closed.request.state is RequestState.REVOKED
    assert "incident SEV-1234 closed by vera" in closed.note


def test_an_approval_after_pending_until_is_refused_and_the_request_expires(
        broker, people, clock, target, engine):
    rid = broker.request_access(people["uma"], ["embeddings-requeue"], incident="SEV-1234",
                                reason="recovery").request.id
    clock.advance(hours=1)  # exactly at pending_until, before the loop has run
    with pytest.raises(PolicyRefused) as err:
        broker.approve(people["vera"], rid)
    assert err.value.rule == "lifecycle.pending_timeout"
    assert "pending timeout" in str(err.value)
    view = broker.view(rid)
    assert view.request.state is RequestState.EXPIRED
    assert view.grants == []
    assert target.live == {}
    assert actions(engine, rid)[-2:] == ["request:pending:expired", "request:approval:refused"]
    broker.expire_due()  # the loop finds nothing left to do
    assert actions(engine, rid).count("request:pending:expired") == 1


@pytest.mark.parametrize("decide", ["deny", "cancel"])
def test_deny_and_cancel_after_pending_until_are_refused_as_late(broker, people, clock,
                                                                 decide):
    rid = broker.request_access(people["uma"], ["embeddings-requeue"], incident="SEV-1234",
                                reason="recovery").request.id
    clock.advance(hours=2)
    late = (lambda: broker.deny(people["vera"], rid, "no")) if decide == "deny" else (
        lambda: broker.cancel(people["uma"], rid))
    with pytest.raises(PolicyRefused) as err:
        late()
    assert err.value.rule == "lifecycle.pending_timeout"
    assert broker.view(rid).request.state is RequestState.EXPIRED


def test_racing_approvals_at_the_deadline_never_activate(broker, people, clock, target):
    rid = broker.request_access(people["uma"], ["embeddings-requeue"], incident="SEV-1234",
                                reason="recovery").request.id
    clock.advance(hours=1, seconds=1)
    outcomes = race([lambda: broker.approve(people["vera"], rid),
                     lambda: broker.approve(people["wim"], rid), broker.expire_due])
    refused = {o.rule for o in outcomes if isinstance(o, PolicyRefused)}
    assert refused <= {"lifecycle.pending_timeout", "lifecycle.not_pending"}, outcomes
    assert len([o for o in outcomes if isinstance(o, PolicyRefused)]) == 2
    assert broker.view(rid).request.state is RequestState.EXPIRED
    assert target.live == {}


def test_a_pickup_after_expires_at_is_refused_and_the_access_expires(broker, people, clock,
                                                                     target):
    rid = broker.request_access(people["uma"], ["embeddings-read"], incident="SEV-1234",
                                reason="recovery", ttl=timedelta(seconds=30)).request.id
    clock.advance(seconds=30)
    with pytest.raises(PolicyRefused) as err:
        broker.credentials(people["uma"], rid)
    assert err.value.rule == "lifecycle.not_active"
    assert "expiry" in str(err.value)
    view = broker.view(rid)
    assert view.request.state is RequestState.EXPIRED
    assert view.grants[0].state is GrantState.EXPIRED
    assert target.live == {}


def test_an_extension_after_expires_at_is_refused_and_the_access_expires(broker, people,
                                                                         clock, target):
    rid = broker.request_access(people["uma"], ["embeddings-read"], incident="SEV-1234",
                                reason="recovery", ttl=timedelta(seconds=30)).request.id
    clock.advance(seconds=31)
    with pytest.raises(PolicyRefused) as err:
        broker.extensions.request_extension(people["uma"], rid, timedelta(minutes=5), "more")
    assert err.value.rule == "lifecycle.not_active"
    assert broker.view(rid).request.state is RequestState.EXPIRED
    assert target.live == {}


def test_an_extension_approval_after_expires_at_is_refused_and_the_access_expires(
        broker, people, clock, target):
    rid = broker.request_access(people["uma"], ["embeddings-repair"], incident="SEV-1234",
                                reason="data_integrity", ttl=timedelta(minutes=5)).request.id
    broker.approve(people["vera"], rid)
    assert broker.approve(people["wim"], rid).request.state is RequestState.ACTIVE
    ext = broker.extensions.request_extension(people["uma"], rid, timedelta(minutes=5),
                                              "more").extension
    broker.extensions.approve(people["vera"], rid, ext.id)
    clock.advance(minutes=5)
    with pytest.raises(PolicyRefused) as err:
        broker.extensions.approve(people["wim"], rid, ext.id)
    assert err.value.rule == "lifecycle.not_active"
    view = broker.view(rid)
    assert view.request.state is RequestState.EXPIRED
    assert view.request.expires_at is not None
    assert view.request.expires_at <= clock.now()
    assert target.live == {}
