"""People are subjects, on both stores, with real signed tokens from the dev issuer.

An attacker controls their display name (``preferred_username``) but not their
``sub``: a second username on one ``sub`` is still the requester, and a second
``sub`` under the requester's username is somebody else. Rows written before
subjects were recorded are backfilled by migration 0008 and grant nobody new.
"""

# ruff: noqa: RUF001 - full-width letters are the attack under test

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine, select, text

from breakglass.domain.errors import PolicyRefused
from breakglass.domain.model import Principal, RequestState
from breakglass.domain.names import legacy_key
from breakglass.identity.devissuer import DevIssuer
from breakglass.service.broker import Broker
from breakglass.service.ports import SecretBox
from breakglass.storage import tables as t
from breakglass.storage.migrate import upgrade
from breakglass.storage.uow import UnitOfWork, make_engine
from tests.conftest import _drop_pg_database, _fresh_pg_database
from tests.fakes import FakeClock, MemoryConnector

RESPONDER = ["team:ml-serving", "responders"]
REVIEWER = ["team:sre", "reviewers"]
OTHER_REVIEWER = ["team:data-eng", "reviewers"]

Person = Callable[..., Principal]


@pytest.fixture
def person(clock: FakeClock) -> Person:
    """A principal verified from a real EdDSA token: ``person(name, groups, sub=...)``."""
    issuer = DevIssuer()
    verifier = issuer.verifier(clock=clock.now, mfa_amr_any_of=("mfa", "hwk"))

    def make(name: str, groups: list[str], sub: str) -> Principal:
        token = issuer.issue(name, {"groups": groups, "mfa": True}, clock.now(), subject=sub)
        return verifier.verify(token)

    return make


@pytest.fixture
def target() -> MemoryConnector:
    return MemoryConnector("embeddings-db")


@pytest.fixture
def broker(engine, loaded, clock, target) -> Broker:
    return Broker(policy=loaded.policy, uow=lambda: UnitOfWork(engine),
                  connectors={"embeddings-db": target}, clock=clock,
                  secrets_box=SecretBox(SecretBox.new_key()))


def refused(rule: str, action: Callable[[], object]) -> None:
    with pytest.raises(PolicyRefused) as caught:
        action()
    assert caught.value.rule == rule, caught.value


def events(engine: Engine, action: str) -> list[dict[str, object]]:
    with engine.connect() as conn:
        rows = conn.execute(select(t.events.c.actor, t.events.c.payload)
                            .where(t.events.c.action == action).order_by(t.events.c.idx))
        return [{"actor": r.actor, **r.payload} for r in rows]


def test_one_sub_under_two_usernames_cannot_approve_its_own_request(broker, person, engine):
    uma = person("uma", RESPONDER, sub="u-1")
    alias = person("uma-reviewer", REVIEWER, sub="u-1")  # same person, a reviewer's name
    req = broker.request_access(uma, ["embeddings-requeue"], incident="SEV-1234",
                                reason="recovery").request
    refused("approval.self", lambda: broker.approve(alias, req.id))
    refused("approval.self", lambda: broker.approve(
        person("ANOTHER", OTHER_REVIEWER, sub="u-1"), req.id))
    view = broker.view(req.id)
    assert view.request.state is RequestState.PENDING
    assert view.request.approvals == []
    [refusal, *_] = events(engine, "request:approval:refused")
    assert refusal["actor"] == "uma-reviewer"
    assert refusal["actor_subject"] == uma.subject_id


def test_a_second_approval_by_one_sub_is_a_duplicate(broker, person, target):
    uma = person("uma", RESPONDER, sub="u-1")
    vera = person("vera", REVIEWER, sub="v-1")
    vera_renamed = person("v.renamed", OTHER_REVIEWER, sub="v-1")
    req = broker.request_access(uma, ["embeddings-repair"], incident="SEV-1234",
                                reason="recovery").request
    broker.approve(vera, req.id)
    refused("approval.duplicate", lambda: broker.approve(vera_renamed, req.id))
    view = broker.view(req.id)
    assert view.request.state is RequestState.PENDING
    assert [a.approver_subject for a in view.request.approvals] == [vera.subject_id]
    assert target.live == {}


def test_two_subs_sharing_a_username_are_two_approvers(broker, person, target, engine):
    uma = person("uma", RESPONDER, sub="u-1")
    vera = person("vera", REVIEWER, sub="v-1")
    other_vera = person("vera", OTHER_REVIEWER, sub="v-2")
    req = broker.request_access(uma, ["embeddings-repair"], incident="SEV-1234",
                                reason="recovery").request
    broker.approve(vera, req.id)
    view = broker.approve(other_vera, req.id)
    assert view.request.state is RequestState.ACTIVE
    assert len(target.live) == 1
    added = events(engine, "request:approval:added")
    assert [(e["actor"], e["actor_subject"]) for e in added] == [
        ("vera", vera.subject_id), ("vera", other_vera.subject_id)]


def test_a_second_sub_under_the_requesters_name_gets_nothing(broker, person, loaded):
    uma = person("uma", RESPONDER, sub="u-1")
    impostors = [person("uma", RESPONDER, sub="u-666"), person("UMA ", RESPONDER, sub="u-667"),
                 person("ｕｍａ", RESPONDER, sub="u-668")]
    active = broker.request_access(uma, ["embeddings-read"], incident="SEV-1234",
                                   reason="recovery").request
    pending = broker.request_access(uma, ["embeddings-requeue"], incident="SEV-1234",
                                    reason="recovery").request
    assert active.state is RequestState.ACTIVE
    for impostor in impostors:
        refused("credentials.requester_only", lambda i=impostor: broker.credentials(i, active.id))
        refused("cancel.requester_only", lambda i=impostor: broker.cancel(i, pending.id))
        refused("revoke.not_allowed", lambda i=impostor: broker.revoke(i, active.id))
        refused("extension.requester_only", lambda i=impostor: broker.extensions.request_extension(
            i, active.id, timedelta(minutes=5)))
        assert broker.search(requester_subject=impostor.subject_id) == []
    [secret] = broker.credentials(uma, active.id)  # still unseen: the impostors got nothing
    assert secret["token"].startswith("s3cr3t-")
    assert broker.cancel(uma, pending.id).request.state is RequestState.CANCELLED
    mine = broker.search(requester_subject=uma.subject_id)
    assert {v.request.id for v in mine} == {active.id, pending.id}


@pytest.mark.parametrize("spelling", ["ops ", "OPS", "ｏｐｓ", "o\u200bps"])
def test_the_shared_account_is_refused_in_any_spelling(broker, person, engine, spelling):
    who = person(spelling, RESPONDER, sub="s-" + spelling.strip())
    refused("identity.shared_account", lambda: broker.request_access(
        who, ["embeddings-read"], incident="SEV-1234", reason="recovery"))
    with engine.connect() as conn:
        assert conn.execute(select(t.requests.c.id)).all() == []


@pytest.fixture(params=["sqlite", "postgresql"])
def store_at_0006(request: pytest.FixtureRequest, tmp_path) -> Iterator[Engine]:
    """A store of the days before subjects (migrated to 0006 only), on both backends."""
    if request.param == "sqlite":
        eng = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
        upgrade(eng, "0006")
        yield eng
        eng.dispose()
        return
    admin, name = _fresh_pg_database()
    eng = make_engine(f"{admin.rsplit('/', 1)[0]}/{name}")
    upgrade(eng, "0006")
    yield eng
    eng.dispose()
    _drop_pg_database(admin, name)


def test_rows_older_than_subjects_are_backfilled_and_grant_nobody_new(
        store_at_0006, clock, loaded, target, person):
    """Migration 0008 gives old rows the legacy key: nobody new is their requester, and
    their names still cannot approve twice or approve their own request."""
    eng = store_at_0006
    now = clock.now()
    if eng.dialect.name == "sqlite":
        now = now.replace(tzinfo=None)
    with eng.begin() as conn:
        conn.execute(text(
            "INSERT INTO requests (id, requester, requester_kind, requester_teams, roles, zone,"
            " environment, incident, reason, justification, ttl_seconds, created_at,"
            " pending_until, state, end_reason, attempts, version) VALUES ('r-old', 'uma',"
            " 'human', '[\"ml-serving\"]', '[\"embeddings-repair\"]', 'C', 'production',"
            " 'SEV-1234', 'recovery', '', 600, :now, :until, 'pending', '', 0, 0)"),
            {"now": now, "until": now + timedelta(hours=1)})
        conn.execute(text(
            "INSERT INTO approvals (request_id, approver, teams, mfa, at, comment) VALUES"
            " ('r-old', 'vera', '[\"sre\"]', TRUE, :now, '')"), {"now": now})
    upgrade(eng)
    with eng.connect() as conn:
        assert conn.execute(select(t.requests.c.requester_subject)).scalar_one() == (
            legacy_key("uma"))
        assert conn.execute(select(t.approvals.c.approver_subject)).scalar_one() == (
            legacy_key("vera"))
    broker = Broker(policy=loaded.policy, uow=lambda: UnitOfWork(eng),
                    connectors={"embeddings-db": target}, clock=clock,
                    secrets_box=SecretBox(SecretBox.new_key()))
    refused("cancel.requester_only", lambda: broker.cancel(person("uma", RESPONDER, sub="u-1"),
                                                           "r-old"))
    refused("approval.self", lambda: broker.approve(person("Uma", REVIEWER, sub="u-1"),
                                                    "r-old"))
    refused("approval.duplicate", lambda: broker.approve(
        person("VERA", OTHER_REVIEWER, sub="v-1"), "r-old"))
    assert broker.view("r-old").request.state is RequestState.PENDING
    broker.approve(person("wim", OTHER_REVIEWER, sub="w-1"), "r-old")
    assert broker.view("r-old").request.state is RequestState.ACTIVE
