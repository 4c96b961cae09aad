"""A token's first use is one audit event, across brokers sharing a store, on both backends."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import Engine, func, select

from breakglass.audit.ocsf import to_ocsf
from breakglass.domain.events import EventTag
from breakglass.domain.names import subject_key
from breakglass.identity.devissuer import DevIssuer, dev_subject
from breakglass.identity.oidc import split_token
from breakglass.service.sessions import SessionLog
from breakglass.storage import tables as t
from breakglass.storage.events import iter_events
from breakglass.storage.uow import UnitOfWork
from tests.fakes import FakeClock

ALICE = {"groups": ["team:ml-serving", "responders"], "mfa": True}


def sessions_of(engine: Engine) -> list[dict[str, object]]:
    with engine.connect() as conn:
        return [e.record() for e in iter_events(conn)
                if e.action == EventTag.SESSION_STARTED]


def stored_tokens(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(t.sessions)).scalar_one())


def log(engine: Engine, clock: FakeClock) -> SessionLog:
    return SessionLog(lambda: UnitOfWork(engine), clock)


def test_first_use_is_recorded_once_with_who_and_how_never_the_token(
        engine: Engine, clock: FakeClock) -> None:
    issuer = DevIssuer()
    verify = issuer.verifier(clock=clock.now)
    token = issuer.issue("alice", ALICE, clock.now(), timedelta(minutes=10))
    here, there = log(engine, clock), log(engine, clock)  # two brokers, one store
    for sessions in (here, here, there, there):
        sessions.started(token, verify.authenticate(token), "api")
    [event] = sessions_of(engine)
    assert event["actor"] == "alice"
    assert event["payload"] == {
        "channel": "api", "kind": "human", "issuer": issuer.issuer,
        "subject": dev_subject("alice"),
        "actor_subject": subject_key(issuer.issuer, dev_subject("alice")),
        "token_id": split_token(token)[1]["jti"], "mfa": True, "amr": ["mfa"],
        "auth_time": clock.now().replace(microsecond=0).isoformat(),
        "groups": ["responders", "team:ml-serving"],
        "expires_at": (clock.now() + timedelta(minutes=10)).replace(microsecond=0).isoformat(),
    }
    with engine.connect() as conn:
        everything = " ".join(str(r) for r in conn.execute(select(t.events)).all())
        kept = conn.execute(select(t.sessions)).all()
    assert token not in everything
    assert token.rsplit(".", 1)[1] not in everything  # nor its signature
    assert [bytes(r.token_sha256) for r in kept] != [token.encode()]
    ocsf = to_ocsf({**event, "leaf_hash": "00"})
    assert (ocsf["class_uid"], ocsf["activity_id"], ocsf["type_uid"]) == (3002, 1, 300201)
    # a new token (after a refresh, say) is a new session
    clock.advance(minutes=5)
    fresh = issuer.issue("alice", ALICE, clock.now(), timedelta(minutes=10))
    there.started(fresh, verify.authenticate(fresh), "web")
    assert [e["payload"]["channel"] for e in sessions_of(engine)] == ["api", "web"]  # type: ignore[index]


def test_concurrent_first_uses_of_one_token_make_one_event(
        engine: Engine, clock: FakeClock) -> None:
    issuer = DevIssuer()
    token = issuer.issue("alice", ALICE, clock.now())
    principal = issuer.verifier(clock=clock.now).authenticate(token)
    brokers = [log(engine, clock) for _ in range(6)]
    start = threading.Barrier(len(brokers))
    failures: list[BaseException] = []

    def use(sessions: SessionLog) -> None:
        start.wait()
        try:
            sessions.started(token, principal, "api")
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=use, args=(b,)) for b in brokers]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert failures == []
    assert len(sessions_of(engine)) == 1


def test_expired_tokens_are_forgotten_and_the_store_stays_small(
        engine: Engine, clock: FakeClock) -> None:
    issuer = DevIssuer()
    sessions = log(engine, clock)
    for name in ("alice", "bob", "carol"):
        token = issuer.issue(name, ALICE, clock.now(), timedelta(minutes=5))
        sessions.started(token, issuer.verifier(clock=clock.now).authenticate(token), "api")
    assert stored_tokens(engine) == 3
    clock.advance(minutes=6)
    late = issuer.issue("dave", ALICE, clock.now(), timedelta(minutes=5))
    sessions.started(late, issuer.verifier(clock=clock.now).authenticate(late), "api")
    assert stored_tokens(engine) == 1
    assert [e["actor"] for e in sessions_of(engine)] == ["alice", "bob", "carol", "dave"]
