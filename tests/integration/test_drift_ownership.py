"""Drift touches only what this deployment can prove it owns, on real PostgreSQL and Redis.

The PostgreSQL cluster and Redis are shared with other test runs, so the target also
holds others' names under the prefix: assertions look at the names each test made.

An attacker (or a neighbour) puts things on the target that look like the broker's:
an application role under the marker prefix owning a schema with rows, a role with a
forged tag, a second broker deployment's live grants, a Redis user under the prefix.
None of them is revoked, each is reported (event + inventory); a real orphan (this
deployment's tag, its record ended) is still revoked; grants issued while the sweep
runs are never revoked by it.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import redis
from psycopg import sql
from sqlalchemy import Engine

from breakglass.bootstrap import deployment_ownership
from breakglass.connectors import GrantSpec, Ownership
from breakglass.connectors.postgres import PostgresConnector
from breakglass.connectors.redis import RedisConnector
from breakglass.domain.model import AccessRequest, PrincipalKind, RequestState, Zone
from breakglass.service import drift
from breakglass.service.broker import Broker
from breakglass.service.ports import SecretBox
from breakglass.storage.migrate import upgrade
from breakglass.storage.uow import UnitOfWork, make_engine
from tests.databases import throwaway_database
from tests.fakes import FakeClock
from tests.services import require

LOOKALIKE = "drift:lookalike:found"
ORPHAN = "drift:orphan:revoked"


@pytest.fixture
def target_dsn() -> Iterator[str]:
    with throwaway_database("bg_own", "CREATE SCHEMA vectors",
                            "CREATE TABLE vectors.items (id int)") as dsn:
        yield dsn


@pytest.fixture
def other_store() -> Iterator[Engine]:
    """A second deployment's store (another database, so another ownership key)."""
    with throwaway_database("bg_own_store") as dsn:
        engine = make_engine(dsn)
        upgrade(engine)
        yield engine
        engine.dispose()


@pytest.fixture(params=["bg_", "acme_bg_"])
def prefix(request: pytest.FixtureRequest) -> str:
    """The default marker prefix and a configured one (BREAKGLASS_MARKER_PREFIX)."""
    return str(request.param)


class Deployment:
    """One broker deployment: a store, the ownership kept in it, a connector, a broker."""

    def __init__(self, engine: Engine, dsn: str, prefix: str, loaded, clock) -> None:
        self.engine = engine
        self.clock = clock
        self.ownership: Ownership = deployment_ownership(engine, prefix, clock)
        self.connector = PostgresConnector("embeddings-db", {"dsn": dsn},
                                           ownership=self.ownership)
        self.broker = Broker(policy=loaded.policy, uow=self.uow,
                             connectors={"embeddings-db": self.connector}, clock=clock,
                             secrets_box=SecretBox(SecretBox.new_key()))
        self.memory = drift.DriftMemory()

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.engine)

    def sweep(self, connectors=None) -> drift.DriftReport:
        return drift.sweep(self.uow, connectors or {"embeddings-db": self.connector},
                           self.clock, self.memory)

    def events(self, action: str) -> list:
        with self.uow() as u:
            return [e for e in u.events_since(0) if e.action == action]

    def close(self) -> None:
        for ref in self.connector.list_managed():  # only its own: the cluster is shared
            if self.ownership.owns(ref):
                self.connector.revoke(ref)
        self.connector.close()


@pytest.fixture
def clock() -> FakeClock:
    """Now: the target checks the credentials' VALID UNTIL against its own clock."""
    return FakeClock(datetime.now(UTC))


@pytest.fixture
def ours(pg_engine, target_dsn, prefix, loaded, clock) -> Iterator[Deployment]:
    deployment = Deployment(pg_engine, target_dsn, prefix, loaded, clock)
    yield deployment
    deployment.close()


def _lookalike_role(dsn: str, name: str, rows: int = 3) -> None:
    """An application's own role under the marker prefix, owning a schema with rows."""
    ident = sql.Identifier(name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            ident, sql.Literal(secrets.token_urlsafe(16))))
        conn.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(ident, ident))
        conn.execute(sql.SQL("CREATE TABLE {}.queue (id int)").format(ident))
        conn.execute(sql.SQL("INSERT INTO {}.queue SELECT generate_series(1, {})").format(
            ident, sql.Literal(rows)))
        conn.execute(sql.SQL("ALTER TABLE {}.queue OWNER TO {}").format(ident, ident))


def _drop_role(dsn: str, name: str) -> None:
    ident = sql.Identifier(name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone():
            conn.execute(sql.SQL("DROP OWNED BY {}").format(ident))
            conn.execute(sql.SQL("DROP ROLE {}").format(ident))


def _rows(dsn: str, schema: str) -> int | None:
    with psycopg.connect(dsn) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (schema,)).fetchone():
            return None
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}.queue").format(
            sql.Identifier(schema))).fetchone()
    return int(row[0]) if row else None


def test_an_application_role_under_the_prefix_keeps_its_schema_and_rows(ours, target_dsn,
                                                                        people):
    jobs = f"{ours.ownership.prefix}jobs{uuid.uuid4().hex[:6]}"
    _lookalike_role(target_dsn, jobs)
    try:
        live = ours.broker.request_access(people["uma"], ["embeddings-read"],
                                          incident="SEV-4400", reason="recovery")
        for _ in range(3):
            report = ours.sweep()
            assert report.orphans_revoked == []
            assert _rows(target_dsn, jobs) == 3
        assert ours.connector.verify(live.grants[0].target_ref)
        found = [e for e in ours.events(LOOKALIKE) if e.payload["target_ref"] == jobs]
        assert len(found) == 1, "reported once, not at every sweep"
        assert found[0].outcome == "alert"
        assert found[0].payload["finding"] == "lookalike"
        listed = ours.broker.inventory(people["vera"], "embeddings-db")
        assert any(p.subject == jobs and "LOOKALIKE" in p.privilege for p in listed)
        assert ours.events(ORPHAN) == []
    finally:
        _drop_role(target_dsn, jobs)


def test_a_forged_tag_is_not_touched(ours, target_dsn, people):
    ended = ours.broker.request_access(people["uma"], ["embeddings-read"], incident="SEV-4401",
                                       reason="recovery")
    ours.broker.revoke(people["uma"], ended.request.id, "done")
    real = ended.grants[0].target_ref
    stem = real.rpartition("_")[0]
    forged = [f"{stem}_{secrets.token_hex(8)}",  # the ended grant's name, a guessed tag
              f"{ours.ownership.prefix}r{secrets.token_hex(6)}g0_{secrets.token_hex(8)}"]
    for name in forged:
        _lookalike_role(target_dsn, name, rows=2)
    try:
        for _ in range(3):
            assert ours.sweep().orphans_revoked == []
        assert [_rows(target_dsn, name) for name in forged] == [2, 2]
        reported = [e.payload["target_ref"] for e in ours.events(LOOKALIKE)]
        assert sorted(r for r in reported if r in forged) == sorted(forged)
    finally:
        for name in forged:
            _drop_role(target_dsn, name)


def test_two_deployments_on_one_target_keep_each_others_grants(ours, other_store, target_dsn,
                                                               prefix, loaded, clock, people):
    theirs = Deployment(other_store, target_dsn, prefix, loaded, clock)
    try:
        assert theirs.ownership.key != ours.ownership.key
        mine = ours.broker.request_access(people["uma"], ["embeddings-read"],
                                          incident="SEV-4402", reason="recovery")
        other = theirs.broker.request_access(people["uma"], ["embeddings-read"],
                                             incident="SEV-4402", reason="recovery")
        done = theirs.broker.request_access(people["uma"], ["embeddings-read"],
                                            incident="SEV-4402", reason="recovery")
        theirs.broker.revoke(people["uma"], done.request.id, "done")
        for _ in range(3):
            assert ours.sweep().orphans_revoked == []
            assert theirs.sweep().orphans_revoked == []
        assert ours.connector.verify(mine.grants[0].target_ref)
        assert theirs.connector.verify(other.grants[0].target_ref)
        assert other.grants[0].target_ref in {e.payload["target_ref"]
                                              for e in ours.events(LOOKALIKE)}
        assert mine.grants[0].target_ref in {e.payload["target_ref"]
                                             for e in theirs.events(LOOKALIKE)}
    finally:
        theirs.close()


def test_a_redis_lookalike_user_survives(ours, people):
    url = require("BG_TEST_REDIS_URL")
    cache = RedisConnector("cache", {"url": url}, ownership=ours.ownership)
    names = [f"{ours.ownership.prefix}cache{uuid.uuid4().hex[:6]}",
             f"{ours.ownership.prefix}r{secrets.token_hex(6)}g0_{secrets.token_hex(8)}"]
    client = redis.Redis.from_url(url, protocol=2, decode_responses=True)
    try:
        for name in names:
            client.acl_setuser(name, enabled=True, passwords=["+" + secrets.token_urlsafe(16)],
                               keys=["~app:*"], commands=["+get"])
        for _ in range(3):
            report = ours.sweep({"cache": cache})
            assert report.orphans_revoked == []
            assert report.errors == []
        assert all(client.acl_getuser(name) is not None for name in names)
        reported = [e.payload["target_ref"] for e in ours.events(LOOKALIKE)]
        assert sorted(r for r in reported if r in names) == sorted(names)
    finally:
        for name in names:
            client.acl_deluser(name)
        client.close()
        cache.close()


def _failed_activation(engine: Engine, clock, request_id: str) -> None:
    """The store's record of an activation that failed while the target was down, so its
    rollback on the target never happened."""
    now = clock.now()
    with UnitOfWork(engine) as u:
        u.requests.add(AccessRequest(
            id=request_id, requester="uma", requester_kind=PrincipalKind.HUMAN,
            requester_teams=frozenset(), roles=("embeddings-read",), zone=Zone.A,
            environment="prod", incident="SEV-4403", reason="recovery", justification="",
            ttl=timedelta(minutes=5), created_at=now, pending_until=now,
            state=RequestState.FAILED, activated_at=now, ended_at=now,
            end_reason="target down during the rollback"))


def _mint(ours: Deployment, request_id: str) -> str:
    return ours.connector.grant(GrantSpec(
        grant_id=f"{request_id}-g0", request_id=request_id, principal="uma",
        role="embeddings-read", incident="SEV-4403",
        grant={"privileges": ["SELECT"], "tables": ["vectors.*"]},
        expires_at=ours.clock.now() + timedelta(minutes=5))).target_ref


def test_a_real_orphan_is_still_revoked_and_an_unrecorded_one_only_reported(ours, clock):
    orphan_request = "r-" + secrets.token_hex(6)
    _failed_activation(ours.engine, clock, orphan_request)
    orphan = _mint(ours, orphan_request)  # this deployment's tag, its record ended
    unknown = _mint(ours, "r-" + secrets.token_hex(6))  # this deployment's tag, no record
    report = ours.sweep()
    assert report.orphans_revoked == [orphan]
    assert not ours.connector.verify(orphan)
    assert orphan not in ours.connector.list_managed()
    assert [e.payload["target_ref"] for e in ours.events(ORPHAN)] == [orphan]
    assert ours.connector.verify(unknown), "no record is no evidence: reported, not revoked"
    found = [(e.payload["target_ref"], e.payload["finding"]) for e in ours.events(LOOKALIKE)]
    assert (unknown, "unrecorded") in found
    assert [ref for ref, _ in found if ours.ownership.owns(ref)] == [unknown]


def test_grants_issued_while_the_sweep_runs_are_never_revoked_by_it(ours, people):
    issued: list[str] = []
    orphans: list[str] = []
    failures: list[BaseException] = []
    stop = threading.Event()
    lock = threading.Lock()

    def issue() -> None:
        try:
            while not stop.is_set():
                view = ours.broker.request_access(people["uma"], ["embeddings-read"],
                                                  incident="SEV-4404", reason="recovery")
                with lock:
                    issued.append(view.grants[0].target_ref)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failures.append(exc)

    def sweep() -> None:
        try:
            while not stop.is_set():
                orphans.extend(ours.sweep().orphans_revoked)
        except BaseException as exc:  # noqa: BLE001 - as above
            failures.append(exc)

    threads = [threading.Thread(target=issue) for _ in range(6)]
    threads.append(threading.Thread(target=sweep))
    for thread in threads:
        thread.start()
    time.sleep(4)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []
    assert issued, "the issuers issued nothing"
    assert orphans == []
    assert ours.events(ORPHAN) == []
    on_target = set(ours.connector.list_managed())
    assert [ref for ref in issued if ref not in on_target] == []


def test_a_fleet_starting_at_once_shares_one_key(other_store, clock):
    keys: list[bytes] = []
    lock = threading.Lock()

    def start() -> None:
        key = deployment_ownership(other_store, "bg_", clock).key
        with lock:
            keys.append(key)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(keys) == 8
    assert len(set(keys)) == 1
