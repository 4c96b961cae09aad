"""Extensions, expiry warnings, incident-bound access and both tracks on both stores.

Targets are in memory and time is a fake clock; the real PostgreSQL target is
exercised in ``test_workload_override.py`` and the e2e tests.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from breakglass.catalog.loader import load_catalog
from breakglass.domain.errors import PolicyRefused, TargetError
from breakglass.domain.extensions import ExtensionState
from breakglass.domain.model import Principal, PrincipalKind, RequestState
from breakglass.service.broker import Broker
from breakglass.service.ports import SecretBox
from breakglass.storage.uow import UnitOfWork
from tests.fakes import FakeIncidentDirectory, MemoryConnector

CATALOG = Path(__file__).parent.parent / "fixtures" / "catalog_workloads.yaml"
ENV = {"TEST_TARGET_DSN": "postgresql://x@127.0.0.1:1/db", "TEST_SERVICE_ACCOUNT": "emb_svc"}


class ExtendingConnector(MemoryConnector):
    """Remembers native expiry moves; can be told that the target is down for them."""

    def __init__(self) -> None:
        super().__init__("embeddings-db")
        self.native: dict[str, datetime] = {}
        self.fail_extend = False

    def extend(self, target_ref: str, expires_at: datetime) -> None:
        if self.fail_extend:
            raise TargetError("target embeddings-db is down")
        self.native[target_ref] = expires_at


@pytest.fixture
def target() -> ExtendingConnector:
    return ExtendingConnector()


@pytest.fixture
def incidents() -> FakeIncidentDirectory:
    return FakeIncidentDirectory(SEV_1234="open", SEV_2000="closed")


def make_broker(engine, clock, target, incidents=None) -> Broker:
    loaded = load_catalog(CATALOG, env=ENV)
    return Broker(policy=loaded.policy, uow=lambda: UnitOfWork(engine),
                  connectors={"embeddings-db": target}, clock=clock,
                  secrets_box=SecretBox(SecretBox.new_key()), incidents=incidents)


@pytest.fixture
def broker(engine, clock, target) -> Broker:
    return make_broker(engine, clock, target)


def actions(broker: Broker, incident: str = "SEV-1234") -> list[str]:
    return [e.action for e in broker.timeline(incident)]


def zone_c(broker: Broker, people, ttl: timedelta = timedelta(minutes=10)) -> str:
    rid = broker.request_access(people["uma"], ["embeddings-repair"], incident="SEV-1234",
                                reason="data_integrity", ttl=ttl).request.id
    broker.approve(people["vera"], rid)
    assert broker.approve(people["wim"], rid).request.state is RequestState.ACTIVE
    return rid


def test_zone_c_extension_with_two_fresh_approvals_moves_every_expiry(
        broker, people, clock, target):
    rid = zone_c(broker, people)
    old = broker.view(rid).request.expires_at
    clock.advance(minutes=8)
    ext = broker.extensions.request_extension(people["uma"], rid, timedelta(minutes=5),
                                              "migration still running").extension
    assert (ext.state, ext.required) == (ExtensionState.PENDING, 2)
    with pytest.raises(PolicyRefused) as same_team:
        broker.extensions.approve(people["ugo"], rid, ext.id)
    assert same_team.value.rule == "approval.same_team"
    broker.extensions.approve(people["vera"], rid, ext.id, "ok")
    assert broker.view(rid).request.expires_at == old  # pending: nothing moved yet
    done = broker.extensions.approve(people["wim"], rid, ext.id, "ok").extension
    assert done.state is ExtensionState.APPLIED
    view = broker.view(rid)
    new = old + timedelta(minutes=5)
    assert view.request.expires_at == new
    assert [g.expires_at for g in view.grants] == [new]
    assert target.native == {view.grants[0].target_ref: new}
    clock.advance(minutes=2, seconds=1)  # past the old expiry
    assert broker.expire_due() == 0
    assert target.live
    clock.advance(minutes=5)
    assert broker.expire_due() == 1
    assert target.live == {}
    assert broker.view(rid).request.state is RequestState.EXPIRED
    tail = actions(broker)
    start, end = tail.index("extension:request:created"), tail.index("request:revocation:started")
    assert tail[start:end] == [
        "extension:request:created", "extension:approval:refused", "extension:approval:added",
        "extension:approval:added", "grant:expiry:extended", "extension:expiry:moved"]


def test_without_its_approvals_access_ends_at_the_old_expiry(broker, people, clock, target):
    rid = zone_c(broker, people)
    ext = broker.extensions.request_extension(people["uma"], rid, timedelta(minutes=5),
                                              "need more").extension
    broker.extensions.approve(people["vera"], rid, ext.id)
    clock.advance(minutes=10)
    assert broker.expire_due() == 1
    assert target.live == {}
    broker.extensions.tick()
    lapsed = broker.extensions.view(rid, ext.id).extension
    assert lapsed.state is ExtensionState.LAPSED
    with pytest.raises(PolicyRefused) as late:
        broker.extensions.approve(people["wim"], rid, ext.id)
    assert late.value.rule == "extension.not_pending"
    assert "extension:request:lapsed" in actions(broker)


def test_zone_a_extends_at_once_and_one_extension_waits_at_a_time(broker, people, clock):
    rid = broker.request_access(people["uma"], ["embeddings-read"], incident="SEV-1234",
                                reason="recovery").request.id
    old = broker.view(rid).request.expires_at
    ext = broker.extensions.request_extension(people["uma"], rid, timedelta(minutes=10),
                                              "still looking").extension
    assert ext.state is ExtensionState.APPLIED
    assert broker.view(rid).request.expires_at == old + timedelta(minutes=10)
    assert "extension:approval:auto" in actions(broker)
    rid_b = broker.request_access(people["uma"], ["embeddings-append"], incident="SEV-1234",
                                  reason="recovery").request.id
    broker.approve(people["vera"], rid_b)
    broker.extensions.request_extension(people["uma"], rid_b, timedelta(minutes=5), "more")
    with pytest.raises(PolicyRefused) as second:
        broker.extensions.request_extension(people["uma"], rid_b, timedelta(minutes=5), "more")
    assert second.value.rule == "extension.pending"


def test_lifetime_is_capped_by_max_total(broker, people, clock):
    rid = zone_c(broker, people, ttl=timedelta(minutes=12))
    ext = broker.extensions.request_extension(people["uma"], rid, timedelta(minutes=12),
                                              "long repair").extension
    broker.extensions.approve(people["vera"], rid, ext.id)
    broker.extensions.approve(people["wim"], rid, ext.id)
    with pytest.raises(PolicyRefused) as capped:  # 24 of 30 minutes used
        broker.extensions.request_extension(people["uma"], rid, timedelta(minutes=7), "more")
    assert capped.value.rule == "extension.max_total"
    assert "6m" in str(capped.value)


def test_a_target_down_while_applying_keeps_the_extension_approved_until_it_is_back(
        broker, people, clock, target):
    rid = zone_c(broker, people)
    ext = broker.extensions.request_extension(people["uma"], rid, timedelta(minutes=5),
                                              "need more").extension
    broker.extensions.approve(people["vera"], rid, ext.id)
    target.fail_extend = True
    assert broker.extensions.approve(people["wim"], rid, ext.id).extension.state is (
        ExtensionState.APPROVED)
    old = broker.view(rid).request.expires_at
    broker.extensions.tick()
    assert broker.view(rid).request.expires_at == old
    target.fail_extend = False
    clock.advance(minutes=1)
    broker.extensions.tick()
    assert broker.extensions.view(rid, ext.id).extension.state is ExtensionState.APPLIED
    assert broker.view(rid).request.expires_at == old + timedelta(minutes=5)


def test_the_requester_withdraws_or_an_approver_denies(broker, people):
    rid = zone_c(broker, people)
    ext = broker.extensions.request_extension(people["uma"], rid, timedelta(minutes=5),
                                              "more").extension
    with pytest.raises(PolicyRefused):
        broker.extensions.deny(people["yuri"], rid, ext.id, "no")
    denied = broker.extensions.deny(people["vera"], rid, ext.id, "fix it in 10").extension
    assert denied.state is ExtensionState.DENIED
    again = broker.extensions.request_extension(people["uma"], rid, timedelta(minutes=5),
                                                "please").extension
    assert broker.extensions.deny(people["uma"], rid, again.id, "not needed").extension.state \
        is ExtensionState.DENIED


def test_expiry_warning_once_per_grant_and_again_after_an_extension(broker, people, clock):
    rid = zone_c(broker, people)
    broker.extensions.tick()
    assert "grant:expiry:warning" not in actions(broker)
    clock.advance(minutes=5, seconds=1)
    broker.extensions.tick()
    broker.extensions.tick()
    warnings = [e for e in broker.timeline("SEV-1234") if e.action == "grant:expiry:warning"]
    assert len(warnings) == 1
    assert warnings[0].grant_id == f"{rid}-g0"
    assert warnings[0].payload["extend"].startswith(f"breakglass extend {rid}")
    ext = broker.extensions.request_extension(people["uma"], rid, timedelta(minutes=10),
                                              "more").extension
    broker.extensions.approve(people["vera"], rid, ext.id)
    broker.extensions.approve(people["wim"], rid, ext.id)
    clock.advance(minutes=5)
    broker.extensions.tick()
    assert actions(broker).count("grant:expiry:warning") == 1
    clock.advance(minutes=5)
    broker.extensions.tick()
    assert actions(broker).count("grant:expiry:warning") == 2


def test_unknown_and_closed_incidents_are_refused_and_recorded(
        engine, clock, target, incidents, people):
    broker = make_broker(engine, clock, target, incidents)
    with pytest.raises(PolicyRefused) as unknown:
        broker.request_access(people["uma"], ["embeddings-append"], incident="SEV-9999",
                              reason="recovery")
    assert (unknown.value.rule, str(unknown.value)) == ("incident.unknown",
                                                        "unknown incident SEV-9999")
    with pytest.raises(PolicyRefused) as closed:
        broker.request_access(people["uma"], ["embeddings-append"], incident="SEV-2000",
                              reason="recovery")
    assert closed.value.rule == "incident.closed"
    assert [e.rule for e in broker.timeline("SEV-2000")] == ["incident.closed"]
    incidents.down = True
    with pytest.raises(PolicyRefused) as down:
        broker.request_access(people["uma"], ["embeddings-append"], incident="SEV-1234",
                              reason="recovery")
    assert down.value.rule == "incident.unavailable"
    zone_a = broker.request_access(people["uma"], ["embeddings-read"], incident="SEV-1234",
                                   reason="recovery")  # the catalog lets zone A fail open
    assert zone_a.request.state is RequestState.ACTIVE
    created = next(e for e in broker.timeline("SEV-1234") if e.action == "request:created")
    assert created.payload["incident_check"].startswith("fail-open")
    assert target.live


def test_an_incident_closed_before_approval_activates_nothing(
        engine, clock, target, incidents, people):
    broker = make_broker(engine, clock, target, incidents)
    rid = broker.request_access(people["uma"], ["embeddings-append"], incident="SEV-1234",
                                reason="recovery").request.id
    incidents.incidents["SEV-1234"] = "closed"
    with pytest.raises(PolicyRefused) as refused:
        broker.approve(people["vera"], rid)
    assert refused.value.rule == "incident.closed"
    assert broker.view(rid).request.state is RequestState.PENDING
    assert target.live == {}


def test_closing_the_incident_revokes_both_tracks(engine, clock, target, incidents, people):
    broker = make_broker(engine, clock, target, incidents)
    human = broker.request_access(people["uma"], ["embeddings-read"], incident="SEV-1234",
                                  reason="recovery").request.id
    robot = Principal("embeddings-pipeline", PrincipalKind.WORKLOAD, frozenset(), False, None,
                      issuer="https://k8s.test", subject="system:serviceaccount:ml:embeddings")
    override = broker.request_access(robot, ["embeddings-read"], incident="SEV-1234",
                                     reason="recovery").request
    assert (override.requester, override.workload) == ("embeddings-pipeline",
                                                       "embeddings-pipeline")
    accounts = sorted(str(spec.account) for spec in target.live.values())
    assert accounts == ["None", "emb_svc"]
    closed = broker.close_incident(people["vera"], "SEV-1234")
    assert sorted(closed) == sorted([human, override.id])
    assert target.live == {}
    for rid in closed:
        assert broker.view(rid).request.state is RequestState.REVOKED
    timeline = broker.timeline("SEV-1234")
    assert {e.request_id for e in timeline if e.action == "grant:credential:revoked"} == {
        human, override.id}


def test_a_human_requests_for_the_workload_and_the_event_names_both(broker, people, target):
    view = broker.request_access(people["uma"], ["embeddings-append"], incident="SEV-1234",
                                 reason="recovery", workload="embeddings-pipeline")
    assert (view.request.requester, view.request.workload) == ("uma", "embeddings-pipeline")
    created = next(e for e in broker.timeline("SEV-1234") if e.action == "request:created")
    assert (created.payload["workload"], created.payload["account"]) == (
        "embeddings-pipeline", "emb_svc")
    broker.approve(people["vera"], view.request.id)
    (spec,) = target.live.values()
    assert spec.account == "emb_svc"
    with pytest.raises(PolicyRefused) as other:
        broker.request_access(people["uma"], ["embeddings-repair"], incident="SEV-1234",
                              reason="data_integrity", workload="embeddings-pipeline")
    assert other.value.rule == "workload.roles"
