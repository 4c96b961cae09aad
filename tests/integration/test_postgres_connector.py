"""The PostgreSQL connector against a real server with password authentication."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from breakglass.connectors import GrantSpec
from breakglass.connectors.postgres import PostgresConnector
from breakglass.domain.errors import TargetError
from tests.databases import throwaway_database
from tests.fakes import fresh_ownership

OWNERSHIP = fresh_ownership()  # this module's deployment


@pytest.fixture(scope="module")
def target_db() -> Iterator[str]:
    with throwaway_database(
        "bg_target",
        "CREATE SCHEMA vectors",
        "CREATE TABLE vectors.items (id int primary key, v text)",
        "CREATE TABLE vectors.jobs (id int primary key, status text)",
        "INSERT INTO vectors.items VALUES (1, 'a')",
        "CREATE TABLE public.secrets (id int)",
    ) as dsn:
        yield dsn


@pytest.fixture
def connector(target_db: str) -> Iterator[PostgresConnector]:
    c = PostgresConnector("embeddings-db", {"dsn": target_db}, ownership=OWNERSHIP)
    yield c
    for ref in c.list_managed():  # its own only: the cluster is shared with other runs
        if OWNERSHIP.owns(ref):
            c.revoke(ref)
    c.close()


def spec(grant: dict, minutes: float = 5, zone: str = "A") -> GrantSpec:
    gid = "r-" + uuid.uuid4().hex[:12] + "-g0"
    return GrantSpec(grant_id=gid, request_id=gid[:14], principal="uma", role="r",
                     incident="SEV-1234", grant=grant,
                     expires_at=datetime.now(UTC) + timedelta(minutes=minutes), zone=zone)


READ = {"privileges": ["SELECT"], "tables": ["vectors.*"]}


def test_grant_is_exactly_the_catalog_privileges_with_guardrails(connector, target_db):
    cred = connector.grant(spec(READ))
    secret = cred.secret
    assert set(secret) >= {"type", "dsn", "username", "password", "host", "port", "dbname",
                           "expires_at"}
    with psycopg.connect(secret["dsn"], autocommit=True) as user:
        assert user.execute("SELECT v FROM vectors.items").fetchall() == [("a",)]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            user.execute("INSERT INTO vectors.items VALUES (2, 'b')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            user.execute("SELECT * FROM public.secrets")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            user.execute("CREATE ROLE sneaky")
        assert user.execute("SHOW log_statement").fetchone() == ("all",)
    with psycopg.connect(target_db) as admin:
        row = admin.execute(
            "SELECT rolsuper, rolcreatedb, rolcreaterole, rolinherit, rolreplication, "
            "rolbypassrls, rolconnlimit, rolvaliduntil FROM pg_roles WHERE rolname = %s",
            (cred.target_ref,)).fetchone()
    assert row[:6] == (False, False, False, False, False, False)
    assert row[6] == 5
    assert abs((row[7] - datetime.fromisoformat(secret["expires_at"])).total_seconds()) < 1


def test_native_expiry_refuses_login_even_without_the_broker(connector):
    cred = connector.grant(spec(READ, minutes=-1))
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(cred.secret["dsn"])


def test_revoke_kills_open_sessions_and_drops_the_role(connector):
    cred = connector.grant(spec({"privileges": ["SELECT", "UPDATE"], "tables": ["vectors.jobs"]},
                                zone="B"))
    with psycopg.connect(cred.secret["dsn"], autocommit=True) as session:
        session.execute("SELECT 1")
        assert connector.verify(cred.target_ref)
        connector.revoke(cred.target_ref)
        with pytest.raises(psycopg.OperationalError):
            session.execute("SELECT 1")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(cred.secret["dsn"])
    assert not connector.verify(cred.target_ref)
    assert cred.target_ref not in connector.list_managed()
    connector.revoke(cred.target_ref)  # idempotent


def test_revoke_refuses_roles_the_broker_did_not_make(connector):
    with pytest.raises(TargetError):
        connector.revoke("postgres")


def test_inventory_finds_a_planted_superuser(connector, target_db):
    with psycopg.connect(target_db, autocommit=True) as admin:
        admin.execute("DROP ROLE IF EXISTS planted_admin")
        admin.execute("CREATE ROLE planted_admin LOGIN SUPERUSER PASSWORD 'x'")
    try:
        found = {p.subject: p for p in connector.inventory()}
        assert "planted_admin" in found
        assert "SUPERUSER" in found["planted_admin"].privilege
        assert found["planted_admin"].detail == "no expiry"
    finally:
        with psycopg.connect(target_db, autocommit=True) as admin:
            admin.execute("DROP ROLE planted_admin")


@pytest.mark.parametrize("grant", [
    {"privileges": ["SELECT"], "tables": ["vectors.items; DROP TABLE x"]},
    {"privileges": ["SELECT"], "tables": ['vectors."items"']},
    {"privileges": ["ALL"], "tables": ["vectors.items"]},
    {"privileges": ["SELECT ON ALL TABLES IN SCHEMA public TO PUBLIC --"], "tables": ["a.b"]},
    {"privileges": [], "tables": ["a.b"]},
    {"privileges": ["SELECT"], "tables": ["items"]},
    {"privileges": ["SELECT"], "tables": ["*.*"]},
    {"privileges": ["SELECT"], "tables": ["a.b"], "superuser": True},
])
def test_catalog_injection_is_refused(grant):
    assert PostgresConnector.validate_grant(grant)


def test_target_errors_never_carry_the_admin_password():
    c = PostgresConnector("down", {"dsn": "postgresql://postgres:hunter2-secret@127.0.0.1:1/x"},
                          ownership=OWNERSHIP)
    with pytest.raises(TargetError) as err:
        c.list_managed()
    assert "hunter2-secret" not in str(err.value)
