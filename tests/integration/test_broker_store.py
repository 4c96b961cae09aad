"""The service layer on both storage backends (SQLite and PostgreSQL), target in memory."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from breakglass.domain.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    PolicyRefused,
    TargetError,
)
from breakglass.domain.model import RequestState
from breakglass.service.broker import Broker
from breakglass.service.ports import SecretBox
from breakglass.storage import tables as t
from breakglass.storage.uow import UnitOfWork
from tests.fakes import MemoryConnector


@pytest.fixture
def target():
    return MemoryConnector("embeddings-db")


@pytest.fixture
def broker(engine, loaded, clock, target):
    return Broker(policy=loaded.policy, uow=lambda: UnitOfWork(engine),
                  connectors={"embeddings-db": target}, clock=clock,
                  secrets_box=SecretBox(SecretBox.new_key()))


def counts(engine):
    with engine.connect() as conn:
        return {name: conn.execute(select(func.count()).select_from(table)).scalar_one()
                for name, table in (("requests", t.requests), ("grants", t.grants),
                                    ("events", t.events), ("approvals", t.approvals))}


def last_event(engine):
    with engine.connect() as conn:
        return conn.execute(select(t.events).order_by(t.events.c.idx.desc()).limit(1)).one()


def test_zone_a_self_approved_request_activates_at_once(broker, people, target, engine):
    view = broker.request_access(people["uma"], ["embeddings-read"], incident="SEV-1234",
                                 reason="recovery")
    assert view.request.state is RequestState.ACTIVE
    assert view.request.expires_at == view.request.created_at + timedelta(minutes=20)
    assert len(view.grants) == 1
    assert target.verify(view.grants[0].target_ref)
    actions = [e.action for e in broker.timeline("SEV-1234")]
    assert actions == ["request:created", "request:approval:auto", "request:activation:started",
                       "grant:credential:issued", "request:activated"]


def test_a_refusal_changes_nothing_but_is_recorded(broker, people, target, engine):
    before = counts(engine)
    with pytest.raises(PolicyRefused) as err:
        broker.request_access(people["uma"], ["embeddings-read"], incident="INC-9",
                              reason="recovery")
    assert err.value.rule == "incident.pattern"
    after = counts(engine)
    assert after == {**before, "events": before["events"] + 1}
    event = last_event(engine)
    assert (event.action, event.outcome, event.rule) == ("request:refused", "denied",
                                                         "incident.pattern")
    assert target.live == {}


def test_credentials_are_shown_once_and_only_to_the_requester(broker, people):
    view = broker.request_access(people["uma"], ["embeddings-read"], incident="SEV-1234",
                                 reason="recovery")
    with pytest.raises(PolicyRefused) as err:
        broker.credentials(people["vera"], view.request.id)
    assert err.value.rule == "credentials.requester_only"
    creds = broker.credentials(people["uma"], view.request.id)
    assert creds[0]["token"].startswith("s3cr3t-")
    with pytest.raises(PolicyRefused) as again:
        broker.credentials(people["uma"], view.request.id)
    assert again.value.rule == "credentials.shown_once"


def test_secrets_never_reach_the_audit_log(broker, people, engine):
    view = broker.request_access(people["uma"], ["embeddings-read"], incident="SEV-1234",
                                 reason="recovery")
    secret = broker.credentials(people["uma"], view.request.id)[0]["token"]
    with engine.connect() as conn:
        rows = conn.execute(select(t.events.c.payload, t.events.c.reason)).all()
    assert secret not in json.dumps([list(r) for r in rows], default=str)


def test_zone_c_needs_two_outside_approvals(broker, people, target):
    view = broker.request_access(people["uma"], ["embeddings-repair"], incident="SEV-1234",
                                 reason="data_integrity")
    rid = view.request.id
    assert view.request.state is RequestState.PENDING
    for who, rule in (("uma", "approval.self"), ("ugo", "approval.same_team")):
        with pytest.raises(PolicyRefused) as err:
            broker.approve(people[who], rid)
        assert err.value.rule == rule
    assert broker.approve(people["vera"], rid).request.state is RequestState.PENDING
    with pytest.raises(PolicyRefused) as dup:
        broker.approve(people["vera"], rid)
    assert dup.value.rule == "approval.duplicate"
    assert len(broker.view(rid).request.approvals) == 1
    final = broker.approve(people["wim"], rid)
    assert final.request.state is RequestState.ACTIVE
    assert [a.approver for a in final.request.approvals] == ["vera", "wim"]
    assert len(target.live) == 1


def test_expiry_revokes_on_time_and_not_before(broker, people, target, clock):
    view = broker.request_access(people["uma"], ["embeddings-read"], incident="SEV-1234",
                                 reason="recovery", ttl=timedelta(seconds=30))
    clock.advance(seconds=29)
    assert broker.expire_due() == 0
    assert target.live
    clock.advance(seconds=1)
    assert broker.expire_due() == 1
    assert target.live == {}
    done = broker.view(view.request.id)
    assert done.request.state is RequestState.EXPIRED
    assert done.grants[0].state.value == "expired"


def test_pending_requests_time_out(broker, people, clock):
    view = broker.request_access(people["uma"], ["embeddings-requeue"], incident="SEV-1234",
                                 reason="recovery")
    clock.advance(minutes=61)
    broker.expire_due()
    assert broker.view(view.request.id).request.state is RequestState.EXPIRED
    with pytest.raises(PolicyRefused) as err:
        broker.approve(people["vera"], view.request.id)
    assert err.value.rule == "lifecycle.not_pending"


def test_revoke_ends_access_at_once(broker, people, target):
    view = broker.request_access(people["uma"], ["embeddings-read"], incident="SEV-1234",
                                 reason="recovery")
    with pytest.raises(PolicyRefused):
        broker.revoke(people["yuri"], view.request.id)
    assert target.live
    ended = broker.revoke(people["uma"], view.request.id, "fixed")
    assert ended.request.state is RequestState.REVOKED
    assert target.live == {}
    with pytest.raises(PolicyRefused) as err:
        broker.revoke(people["uma"], view.request.id)
    assert err.value.rule == "lifecycle.not_active"


def test_a_target_down_at_revocation_is_retried_with_backoff_and_alerted_once(
        broker, people, target, clock, engine):
    view = broker.request_access(people["uma"], ["embeddings-read"], incident="SEV-1234",
                                 reason="recovery", ttl=timedelta(seconds=10))
    target.fail_revoke = True
    clock.advance(seconds=11)
    broker.expire_due()
    stuck = broker.view(view.request.id)
    assert stuck.request.state is RequestState.REVOKING
    assert stuck.grants[0].state.value == "revocation_pending"
    with UnitOfWork(engine) as uow:
        assert "is down" in (uow.requests.last_error(view.request.id) or "")
    tries = len(target.revocations)
    broker.expire_due()  # before the backoff has passed: no new attempt
    assert len(target.revocations) == tries
    for _ in range(5):  # still down: attempts continue, the alert is raised only once
        clock.advance(seconds=31)
        broker.expire_due()
    alerts = [e for e in broker.timeline("SEV-1234") if e.action == "grant:revocation:failed"]
    assert len(alerts) == 1
    target.fail_revoke = False
    clock.advance(seconds=31)  # the cap: within one retry interval after the target is back
    broker.expire_due()
    done = broker.view(view.request.id)
    assert done.request.state is RequestState.EXPIRED
    assert done.grants[0].state.value == "expired"
    assert target.live == {}


def test_a_second_broker_never_revokes_what_the_first_holds(engine, loaded, clock, people,
                                                            target, broker):
    other = Broker(policy=loaded.policy, uow=lambda: UnitOfWork(engine),
                   connectors={"embeddings-db": target}, clock=clock,
                   secrets_box=SecretBox(SecretBox.new_key()))
    view = broker.request_access(people["uma"], ["embeddings-read"], incident="SEV-1234",
                                 reason="recovery", ttl=timedelta(seconds=5))
    clock.advance(seconds=6)
    with UnitOfWork(engine) as uow:  # the first broker claims the work, then "dies"
        assert uow.requests.claim_due(clock.now(), broker.revoker.owner,
                                      timedelta(seconds=30)) == [view.request.id]
    assert other.expire_due() == 0
    assert target.revocations == []
    clock.advance(seconds=31)  # the lease ran out: the other broker takes over, once
    assert other.expire_due() == 1
    assert len(target.revocations) == 1
    assert broker.expire_due() == 0
    assert len(target.revocations) == 1


def test_closing_an_incident_revokes_all_its_access(broker, people, target):
    for _ in range(3):
        broker.request_access(people["uma"], ["embeddings-read"], incident="SEV-7777",
                              reason="recovery")
    other = broker.request_access(people["uma"], ["embeddings-read"], incident="SEV-8888",
                                  reason="recovery")
    with pytest.raises(PolicyRefused):
        broker.close_incident(people["uma"], "SEV-7777")
    closed = broker.close_incident(people["vera"], "SEV-7777")
    assert len(closed) == 3
    assert next(iter(target.live.values())).request_id == other.request.id
    assert len(target.live) == 1


def test_a_target_down_at_activation_fails_cleanly(broker, people, target):
    target.fail_grant = True
    with pytest.raises(TargetError):
        broker.request_access(people["uma"], ["embeddings-read"], incident="SEV-1234",
                              reason="recovery")
    (req,) = broker.search(incident="SEV-1234")
    assert req.request.state is RequestState.FAILED
    assert req.grants == []


def test_deny_and_cancel(broker, people):
    first = broker.request_access(people["uma"], ["embeddings-requeue"], incident="SEV-1234",
                                  reason="recovery").request.id
    with pytest.raises(PolicyRefused) as err:
        broker.deny(people["ugo"], first, "same team")
    assert err.value.rule == "approval.same_team"
    assert broker.deny(people["vera"], first, "use the runbook").request.state is (
        RequestState.DENIED)
    second = broker.request_access(people["uma"], ["embeddings-requeue"], incident="SEV-1234",
                                   reason="recovery").request.id
    with pytest.raises(PolicyRefused):
        broker.cancel(people["vera"], second)
    assert broker.cancel(people["uma"], second).request.state is RequestState.CANCELLED


def test_runbook_auto_approves_and_names_itself(broker, people):
    view = broker.request_access(people["uma"], ["embeddings-requeue"], incident="SEV-1234",
                                 reason="recovery", runbook="RB-7")
    assert view.request.state is RequestState.ACTIVE
    auto = [e for e in broker.timeline("SEV-1234") if e.action == "request:approval:auto"]
    assert auto[0].reason == "runbook RB-7"


def test_event_indices_are_gapless(broker, people, engine):
    broker.request_access(people["uma"], ["embeddings-read"], incident="SEV-1234",
                          reason="recovery")
    with pytest.raises(PolicyRefused):
        broker.request_access(people["yuri"], ["embeddings-read"], incident="SEV-1234",
                              reason="recovery")
    with engine.connect() as conn:
        indices = [r.idx for r in conn.execute(select(t.events.c.idx).order_by(t.events.c.idx))]
    assert indices == list(range(len(indices)))


def test_unknown_request_is_not_found(broker, people):
    with pytest.raises(NotFound):
        broker.approve(people["vera"], "r-000000000000")
    with pytest.raises(NotFound):
        broker.timeline("SEV-9999")


def test_lost_updates_are_impossible(engine, broker, people):
    rid = broker.request_access(people["uma"], ["embeddings-requeue"], incident="SEV-1234",
                                reason="recovery").request.id
    with UnitOfWork(engine) as uow:
        stale = uow.requests.get(rid)
    broker.deny(people["vera"], rid, "no")
    stale.transition(RequestState.CANCELLED)
    with pytest.raises(Conflict), UnitOfWork(engine) as uow:
        uow.requests.save(stale)


class KeySigningConnector(MemoryConnector):
    accepts_public_key = True


REQUESTER_KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGm50dtAMHltctvhVfuBTN6YCmrY8aPnIC0vY5c1"
                 "nCmU uma@laptop")
REQUESTER_KEY_SHA256 = "SHA256:6/SbTJn3voEDlHfNg++v3Ye/Z03O7ab9M9MeYu87MHo"  # ssh-keygen -l


def test_a_public_key_is_kept_until_approval_and_reaches_the_connector(engine, loaded, clock,
                                                                      people):
    target = KeySigningConnector("embeddings-db")
    broker = Broker(policy=loaded.policy, uow=lambda: UnitOfWork(engine),
                    connectors={"embeddings-db": target}, clock=clock,
                    secrets_box=SecretBox(SecretBox.new_key()))
    rid = broker.request_access(people["uma"], ["embeddings-repair"], incident="SEV-1234",
                                reason="data_integrity", public_key=REQUESTER_KEY + "\n").request.id
    created = broker.timeline("SEV-1234")[0]
    assert created.payload["public_key_sha256"] == REQUESTER_KEY_SHA256
    assert REQUESTER_KEY.split()[1] not in json.dumps(created.payload)
    broker.approve(people["vera"], rid)
    view = broker.approve(people["wim"], rid)
    assert view.request.state is RequestState.ACTIVE
    (spec,) = target.live.values()
    assert spec.public_key == REQUESTER_KEY


@pytest.mark.parametrize(("key", "message"), [
    ("ssh-ed25519 AAAA-not-base64", "not an OpenSSH public key"),
    (REQUESTER_KEY + "\n" + REQUESTER_KEY, "one line"),
    ("ssh-ed25519 " + "A" * 17000, "longer than 16384 bytes"),
    ("-----BEGIN OPENSSH PRIVATE KEY----- b3Blbn", "private key"),
])
def test_a_bad_public_key_is_refused_and_creates_nothing(engine, loaded, clock, people, key,
                                                         message):
    target = KeySigningConnector("embeddings-db")
    broker = Broker(policy=loaded.policy, uow=lambda: UnitOfWork(engine),
                    connectors={"embeddings-db": target}, clock=clock,
                    secrets_box=SecretBox(SecretBox.new_key()))
    before = counts(engine)
    with pytest.raises(InvalidInput, match=message):
        broker.request_access(people["uma"], ["embeddings-read"], incident="SEV-1234",
                              reason="recovery", public_key=key)
    assert counts(engine) == before
    assert target.live == {}


def test_a_public_key_needs_a_role_that_signs_keys(broker, people, engine):
    before = counts(engine)
    with pytest.raises(InvalidInput) as err:
        broker.request_access(people["uma"], ["embeddings-read"], incident="SEV-1234",
                              reason="recovery", public_key=REQUESTER_KEY)
    assert err.value.rule == "request.public_key_unused"
    assert counts(engine) == before


class FixedExpiryConnector(MemoryConnector):
    extends_natively = False


def test_an_extension_is_refused_where_the_credential_cannot_move(engine, loaded, clock, people):
    target = FixedExpiryConnector("embeddings-db")
    broker = Broker(policy=loaded.policy, uow=lambda: UnitOfWork(engine),
                    connectors={"embeddings-db": target}, clock=clock,
                    secrets_box=SecretBox(SecretBox.new_key()))
    view = broker.request_access(people["uma"], ["embeddings-read"], incident="SEV-1234",
                                 reason="recovery", ttl=timedelta(minutes=5))
    with pytest.raises(PolicyRefused) as err:
        broker.extensions.request_extension(people["uma"], view.request.id,
                                            timedelta(minutes=5), "still broken")
    assert err.value.rule == "extension.target_fixed_expiry"
    assert broker.view(view.request.id).request.expires_at == view.request.expires_at
