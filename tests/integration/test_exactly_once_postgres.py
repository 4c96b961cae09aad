"""Revoke, incident close and expiry racing on a real PostgreSQL target and store.

Every caller gets a success; each grant's role is dropped on the target by
exactly one call and recorded by exactly one event set; no role outlives it.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta

import psycopg
import pytest
from psycopg import sql

from breakglass.connectors import GrantSpec, IssuedCredential
from breakglass.connectors.postgres import PostgresConnector
from breakglass.domain.model import RequestState
from breakglass.service.broker import Broker
from breakglass.service.ports import SecretBox
from breakglass.storage.uow import UnitOfWork
from tests.fakes import fresh_ownership
from tests.integration.test_exactly_once import actions, race
from tests.services import require


class CountingPostgres(PostgresConnector):
    def __init__(self, name: str, config: dict[str, str]) -> None:
        super().__init__(name, config, ownership=fresh_ownership())
        self.calls: Counter[str] = Counter()
        self.minted: list[str] = []
        self._count_lock = threading.Lock()

    def grant(self, spec: GrantSpec) -> IssuedCredential:
        issued = super().grant(spec)
        self.minted.append(issued.target_ref)
        return issued

    def revoke(self, target_ref: str, artefacts: tuple[str, ...] = ()) -> None:
        with self._count_lock:
            self.calls[target_ref] += 1
        super().revoke(target_ref, artefacts)


@pytest.fixture
def target() -> Iterator[tuple[str, CountingPostgres]]:
    admin = require("BG_TEST_PG_ADMIN_DSN")
    name = "bg_once_" + uuid.uuid4().hex[:8]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = admin.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA vectors; CREATE TABLE vectors.items (id int); "
                     "CREATE TABLE vectors.jobs (id int)")
    connector = CountingPostgres("embeddings-db", {"dsn": dsn})
    yield dsn, connector
    for ref in connector.minted:  # only what this test minted
        PostgresConnector.revoke(connector, ref)
    connector.close()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def role_exists(dsn: str, role: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() \
            is not None


@pytest.mark.parametrize("time_up", [False, True], ids=["before-expiry", "at-expiry"])
def test_racing_enders_drop_each_role_once_and_every_caller_succeeds(
        target, pg_engine, loaded, clock, people, time_up):
    dsn, connector = target
    broker = Broker(policy=loaded.policy, uow=lambda: UnitOfWork(pg_engine),
                    connectors={"embeddings-db": connector}, clock=clock,
                    secrets_box=SecretBox(SecretBox.new_key()))
    incident = f"SEV-{uuid.uuid4().int % 10**6:06d}"
    views = [broker.request_access(people["uma"], ["embeddings-requeue"], incident=incident,
                                   reason="recovery", ttl=timedelta(seconds=30), runbook="RB-7")
             for _ in range(6)]
    refs = {v.request.id: v.grants[0].target_ref for v in views}
    assert all(role_exists(dsn, ref) for ref in refs.values())
    if time_up:
        clock.advance(seconds=31)
    calls: list[Callable[[], object]] = [
        broker.expire_due, broker.expire_due,
        lambda: broker.close_incident(people["vera"], incident),
        lambda: broker.close_incident(people["wim"], incident)]
    for rid in refs:
        calls += [lambda rid=rid: broker.revoke(people["uma"], rid),
                  lambda rid=rid: broker.revoke(people["ugo"], rid, "fixed")]
    outcomes = race(calls)
    assert not [o for o in outcomes if isinstance(o, Exception)], outcomes
    broker.expire_due()
    for rid, ref in refs.items():
        view = broker.view(rid)
        assert view.request.state is (RequestState.EXPIRED if time_up
                                      else RequestState.REVOKED)
        assert connector.calls[ref] == 1
        assert not role_exists(dsn, ref)
        seen = actions(pg_engine, rid)
        assert seen.count("request:revocation:started") == 1
        assert seen.count("grant:credential:revoked") + seen.count(
            "grant:credential:expired") == 1
        assert seen.count("request:ended") == 1
