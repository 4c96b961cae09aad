"""Workload overrides on a real PostgreSQL target, rolled back to exactly the previous state.

The service account already reads ``vectors.items``; the override adds what the
role has and the account lacks. Expiry, revocation, a crash in the middle of a
rollback, a crash between granting and recording, SIGKILL of a real broker
process at each step, a second override of the same account, and an override
no grant owns all end with the account holding exactly what it held before. A
workload's own token asks for its override through the real HTTP server.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest
import uvicorn
from psycopg import sql
from sqlalchemy import select

from breakglass.api.app import create_app
from breakglass.bootstrap import Container, bootstrap
from breakglass.catalog.loader import load_catalog
from breakglass.connectors import GrantSpec
from breakglass.connectors import postgres_override as pg_override
from breakglass.connectors.postgres import PostgresConnector
from breakglass.domain.model import AccessRequest, PrincipalKind, RequestState, Zone
from breakglass.service import crashpoints, drift
from breakglass.service.broker import Broker
from breakglass.service.ports import SecretBox
from breakglass.settings import Settings
from breakglass.storage import tables as t
from breakglass.storage.uow import UnitOfWork
from tests.databases import throwaway_database
from tests.fakes import FakeClock, fresh_ownership

OWNERSHIP = fresh_ownership()  # this module's deployment

CATALOG = Path(__file__).parent.parent / "fixtures" / "catalog_workloads.yaml"
PASSWORD = "svc-password-for-tests"


class Crash(BaseException):
    """The broker process dying at this point (not an error it could handle)."""


@pytest.fixture(scope="module")
def target_db() -> Iterator[str]:
    with throwaway_database(
        "bg_override",
        "CREATE SCHEMA vectors",
        "CREATE TABLE vectors.items (id int primary key, v text)",
        "INSERT INTO vectors.items VALUES (1, 'seed')",
    ) as dsn:
        yield dsn


@pytest.fixture
def account(target_db: str) -> Iterator[str]:
    """An existing service role that reads vectors.items, as a running pipeline would."""
    name = "svc_" + uuid.uuid4().hex[:10]
    with psycopg.connect(target_db, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(name), sql.Literal(PASSWORD)))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA vectors TO {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("GRANT SELECT ON vectors.items TO {}").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(target_db, autocommit=True) as conn:
        markers = conn.execute(
            "SELECT rolname FROM pg_roles WHERE shobj_description(oid, 'pg_authid') LIKE %s",
            (f"%{name}%",)).fetchall()
        for (marker,) in markers:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(marker)))
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def connector(target_db: str) -> Iterator[PostgresConnector]:
    c = PostgresConnector("embeddings-db", {"dsn": target_db}, ownership=OWNERSHIP)
    yield c
    c.close()


def make_broker(pg_engine, clock, connector, target_db, account) -> Broker:
    loaded = load_catalog(CATALOG, env={"TEST_TARGET_DSN": target_db,
                                        "TEST_SERVICE_ACCOUNT": account})
    return Broker(policy=loaded.policy, uow=lambda: UnitOfWork(pg_engine),
                  connectors={"embeddings-db": connector}, clock=clock,
                  secrets_box=SecretBox(SecretBox.new_key()))


@pytest.fixture
def broker(pg_engine, clock, connector, target_db, account) -> Broker:
    return make_broker(pg_engine, clock, connector, target_db, account)


def held(dsn: str, account: str) -> set[str]:
    """Every privilege the account holds directly on the schema and its tables."""
    with psycopg.connect(dsn) as conn:
        tables = conn.execute(
            "SELECT a.privilege_type || ' ON vectors.' || c.relname FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a "
            "WHERE n.nspname = 'vectors' AND a.grantee = (SELECT oid FROM pg_roles "
            "WHERE rolname = %s)", (account,)).fetchall()
        schema = conn.execute(
            "SELECT a.privilege_type || ' ON SCHEMA vectors' FROM pg_namespace n, "
            "aclexplode(n.nspacl) a WHERE n.nspname = 'vectors' AND a.grantee = "
            "(SELECT oid FROM pg_roles WHERE rolname = %s)", (account,)).fetchall()
    return {r[0] for r in tables + schema}


BEFORE = {"SELECT ON vectors.items", "USAGE ON SCHEMA vectors"}


def as_account(dsn: str, account: str) -> psycopg.Connection:
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    return psycopg.connect(host=params.get("host", "127.0.0.1"), port=params.get("port", 5432),
                           dbname=params["dbname"], user=account, password=PASSWORD,
                           autocommit=True)


def can_insert(dsn: str, account: str) -> bool:
    with as_account(dsn, account) as conn:
        try:
            conn.execute("INSERT INTO vectors.items VALUES (%s, 'by the pipeline')",
                         (uuid.uuid4().int % 1_000_000_000,))
        except psycopg.errors.InsufficientPrivilege:
            return False
        assert conn.execute("SELECT v FROM vectors.items WHERE id = 1").fetchone() == ("seed",)
    return True


def override(broker: Broker, people, role: str = "embeddings-append") -> str:
    rid = broker.request_access(people["uma"], [role], incident="SEV-1234", reason="recovery",
                                workload="embeddings-pipeline").request.id
    assert broker.approve(people["vera"], rid).request.state is RequestState.ACTIVE
    return rid


def test_override_adds_insert_and_expiry_leaves_exactly_select(
        broker, people, clock, target_db, account, connector):
    assert held(target_db, account) == BEFORE
    assert not can_insert(target_db, account)
    rid = override(broker, people)
    assert held(target_db, account) == BEFORE | {"INSERT ON vectors.items"}
    assert can_insert(target_db, account)
    issued = next(e for e in broker.timeline("SEV-1234")
                  if e.action == "grant:credential:issued")
    assert issued.payload["added"] == ["INSERT ON vectors.items"]
    assert sorted(issued.payload["already_present"]) == ["SELECT ON vectors.items",
                                                         "USAGE ON SCHEMA vectors"]
    grant = broker.view(rid).grants[0]
    assert [pg_override.Privilege.decode(a) for a in grant.artefacts] == [
        pg_override.Privilege(account, "vectors", "items", "INSERT")]
    assert connector.verify(grant.target_ref)
    assert grant.target_ref in connector.list_managed()
    clock.advance(minutes=20, seconds=1)
    assert broker.expire_due() == 1
    assert held(target_db, account) == BEFORE
    assert not can_insert(target_db, account)
    assert grant.target_ref not in connector.list_managed()
    expired = next(e for e in broker.timeline("SEV-1234")
                   if e.action == "grant:credential:expired")
    assert expired.payload["cleaned"] == list(grant.artefacts)


def test_revoke_midway_leaves_exactly_select(broker, people, target_db, account):
    rid = override(broker, people)
    assert can_insert(target_db, account)
    assert broker.revoke(people["uma"], rid, "pipeline caught up").request.state is (
        RequestState.REVOKED)
    assert held(target_db, account) == BEFORE
    assert not can_insert(target_db, account)


def test_a_crash_mid_rollback_converges_after_restart(
        broker, people, clock, target_db, account, connector, pg_engine, monkeypatch):
    rid = override(broker, people, "embeddings-rewrite")
    added = {"INSERT ON vectors.items", "UPDATE ON vectors.items"}
    assert held(target_db, account) == BEFORE | added
    # Half of the rollback is done on the target, then the broker dies in the other half.
    with psycopg.connect(target_db, autocommit=True) as conn:
        conn.execute(sql.SQL("REVOKE INSERT ON vectors.items FROM {}").format(
            sql.Identifier(account)))
    calls = []

    def dies_on_second(conn, priv):
        calls.append(priv)
        if len(calls) == 2:
            raise Crash
        conn.execute(priv.statement(grant=False))

    monkeypatch.setattr(pg_override, "revoke_privilege", dies_on_second)
    with pytest.raises(Crash):
        broker.revoke(people["uma"], rid, "done")
    assert broker.view(rid).request.state is RequestState.REVOKING
    assert "UPDATE ON vectors.items" in held(target_db, account)
    monkeypatch.undo()
    restarted = make_broker(pg_engine, clock, connector, target_db, account)
    clock.advance(seconds=31)  # the dead broker's lease runs out
    assert restarted.expire_due() == 1
    assert broker.view(rid).request.state is RequestState.REVOKED
    assert held(target_db, account) == BEFORE
    assert not can_insert(target_db, account)
    assert broker.view(rid).grants[0].target_ref not in connector.list_managed()


def test_a_crash_between_granting_and_recording_is_rolled_back_at_restart(
        broker, people, clock, target_db, account, connector, pg_engine, monkeypatch):
    def dies_after_minting(point: str) -> None:
        if point == "activation.minted":
            raise Crash

    monkeypatch.setattr(crashpoints, "reached", dies_after_minting)
    rid = broker.request_access(people["uma"], ["embeddings-append"], incident="SEV-1234",
                                reason="recovery", workload="embeddings-pipeline").request.id
    with pytest.raises(Crash):
        broker.approve(people["vera"], rid)
    assert held(target_db, account) == BEFORE | {"INSERT ON vectors.items"}
    monkeypatch.undo()
    restarted = make_broker(pg_engine, clock, connector, target_db, account)
    assert restarted.recover(older_than=timedelta(0)) == 1
    assert restarted.view(rid).request.state is RequestState.FAILED
    assert held(target_db, account) == BEFORE


def test_two_overrides_of_one_account_keep_what_the_other_still_needs(
        broker, people, target_db, account):
    first = override(broker, people)
    second = override(broker, people)
    for rid in (first, second):
        issued = [e for e in broker.timeline("SEV-1234")
                  if e.action == "grant:credential:issued" and e.request_id == rid]
        assert issued[0].payload["added"] == ["INSERT ON vectors.items"]
    broker.revoke(people["uma"], first)
    assert can_insert(target_db, account)
    broker.revoke(people["uma"], second)
    assert held(target_db, account) == BEFORE


def _failed_activation(pg_engine, clock, request_id: str) -> None:
    """The store's record of an activation that failed, whose rollback on the target did not
    happen (the target was down): the positive evidence drift needs to roll it back."""
    now = clock.now()
    with UnitOfWork(pg_engine) as uow:
        uow.requests.add(AccessRequest(
            id=request_id, requester="uma", requester_kind=PrincipalKind.HUMAN,
            requester_teams=frozenset(), roles=("embeddings-append",), zone=Zone.B,
            environment="prod", incident="SEV-1234", reason="recovery", justification="",
            ttl=timedelta(minutes=5), created_at=now, pending_until=now,
            state=RequestState.FAILED, workload="embeddings-pipeline", activated_at=now,
            ended_at=now, end_reason="target down during the rollback"))


def test_an_override_no_grant_owns_is_rolled_back_by_drift(
        broker, clock, target_db, account, connector, pg_engine):
    _failed_activation(pg_engine, clock, "r-0123456789ab")
    stray = connector.grant(GrantSpec(
        grant_id="r-0123456789ab-g0", request_id="r-0123456789ab", principal="uma",
        role="embeddings-append", incident="SEV-1234",
        grant={"privileges": ["SELECT", "INSERT"], "tables": ["vectors.items"]},
        expires_at=clock.now() + timedelta(minutes=5), account=account, zone="B"))
    assert held(target_db, account) == BEFORE | {"INSERT ON vectors.items"}
    report = drift.sweep(lambda: UnitOfWork(pg_engine), {"embeddings-db": connector}, clock)
    assert stray.target_ref in report.orphans_revoked
    assert held(target_db, account) == BEFORE
    connector.revoke(stray.target_ref, stray.artefacts)  # again: nothing left to do
    assert held(target_db, account) == BEFORE


@pytest.fixture
def served(tmp_path, monkeypatch, target_db, account) -> Iterator[tuple[str, Container]]:
    """The real HTTP server (dev identity) in this process, so the test can mint a
    workload token with the server's own dev issuer."""
    monkeypatch.setenv("TEST_TARGET_DSN", target_db)
    monkeypatch.setenv("TEST_SERVICE_ACCOUNT", account)
    monkeypatch.delenv("TEST_INCIDENT_URL", raising=False)
    container = bootstrap(Settings(catalog=CATALOG, db_url=f"sqlite:///{tmp_path / 'b.db'}",
                                   dev=True, state_dir=tmp_path,
                                   anchor_dir=Path(f"{tmp_path}-anchor")))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(create_app(container), host="127.0.0.1", port=port,
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{port}", container
    server.should_exit = True
    thread.join(timeout=10)
    container.engine.dispose()


def test_a_workload_token_requests_an_override_of_its_own_account(served, target_db, account):
    url, container = served
    assert container.dev_issuer is not None
    robot = container.dev_issuer.issue_workload("system:serviceaccount:ml:embeddings",
                                                datetime.now(UTC))
    vera = httpx.post(url + "/v1/dev/token", json={"username": "vera"}).json()["access_token"]

    def call(token: str, path: str, body: dict | None = None) -> httpx.Response:
        return httpx.post(url + path, json=body or {}, timeout=30,
                          headers={"Authorization": f"Bearer {token}"})

    created = call(robot, "/v1/requests", {"roles": ["embeddings-append"],
                                           "incident": "SEV-4001", "reason": "recovery"})
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["requester"], body["requester_kind"], body["workload"], body["state"]) == (
        "embeddings-pipeline", "workload", "embeddings-pipeline", "pending")
    other = call(robot, "/v1/requests", {"roles": ["embeddings-append"], "incident": "SEV-4001",
                                         "reason": "recovery", "workload": "someone-else"})
    assert (other.status_code, other.json()["rule"]) == (403, "workload.unknown")
    approved = call(vera, f"/v1/requests/{body['id']}/approvals", {"comment": "go"})
    assert approved.json()["state"] == "active", approved.text
    assert can_insert(target_db, account)
    revoked = call(robot, f"/v1/requests/{body['id']}/revocations", {"reason": "caught up"})
    assert revoked.json()["state"] == "revoked", revoked.text
    assert held(target_db, account) == BEFORE


DRILL_POINTS = ("activation.minted", "activation.stored", "revocation.started",
                "revocation.revoked")


@pytest.mark.parametrize("point", DRILL_POINTS)
def test_kill_9_while_overriding_converges_after_restart(
        point, target_db, account, pg_engine, tmp_path):
    """A real broker process is SIGKILLed at each step of an override's life; the next
    process leaves the account holding exactly what it held before."""
    runner = Path(__file__).parent / "override_drill_runner.py"
    db_url = pg_engine.url.render_as_string(hide_password=False)
    env = {**os.environ, "TEST_TARGET_DSN": target_db, "TEST_SERVICE_ACCOUNT": account}
    env.pop("TEST_INCIDENT_URL", None)
    outcomes = []
    for crash in (f"{point}:1", f"{point}:2", None):
        run_env = {**env, "BREAKGLASS_CRASH_AT": crash} if crash else env
        with subprocess.Popen(
            [sys.executable, str(runner), str(CATALOG), db_url, str(tmp_path)],
            env=run_env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        ) as proc:
            assert proc.stdout is not None
            assert proc.stdin is not None
            line = proc.stdout.readline().strip()
            assert line == "reconciled", proc.communicate()[1][-3000:]
            assert held(target_db, account) == BEFORE, f"after {outcomes}"
            proc.stdin.write("go\n" if crash else "stop\n")
            proc.stdin.flush()
            _, err = proc.communicate(timeout=60)
        outcomes.append(proc.returncode)
        assert proc.returncode in (0, -9), err[-3000:]
    assert outcomes[:2] == [-9, -9]
    with pg_engine.connect() as conn:
        states = {r.state for r in conn.execute(select(t.requests.c.state))}
    assert states <= {"revoked", "expired", "failed"}
    assert not markers_of(target_db, account)


def markers_of(dsn: str, account: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT rolname FROM pg_roles WHERE shobj_description(oid, "
                            "'pg_authid') LIKE %s", (f"%{account}%",)).fetchall()
    return [r[0] for r in rows]
