"""A grantee, and a target with a history, try to turn a PostgreSQL grant into more.

Against the real server: the password never reaches the server's log; a target that
already lets PUBLIC do more than the catalog says makes the broker refuse and leave no
role behind; a grantee that parks objects in other databases cannot keep its role alive.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from breakglass.connectors import GrantSpec
from breakglass.connectors.postgres import PostgresConnector, role_name_for
from breakglass.connectors.postgres_revoke import remove_role
from breakglass.domain.errors import TargetError
from tests.databases import throwaway_database
from tests.fakes import fresh_ownership
from tests.services import require

OWNERSHIP = fresh_ownership()  # this module's deployment

SCHEMA = (
    "CREATE SCHEMA vectors",
    "CREATE TABLE vectors.items (id int primary key, v text)",
    "CREATE TABLE vectors.jobs (id int primary key, status text)",
    "INSERT INTO vectors.items VALUES (1, 'a')",
)
READ = {"privileges": ["SELECT"], "tables": ["vectors.*"]}


def spec(grant: dict[str, Any], zone: str = "A") -> GrantSpec:
    gid = "r-" + uuid.uuid4().hex[:12] + "-g0"
    return GrantSpec(grant_id=gid, request_id=gid[:14], principal="uma", role="r",
                     incident="SEV-1234", grant=grant, zone=zone,
                     expires_at=datetime.now(UTC) + timedelta(minutes=5))


def dbname(dsn: str) -> str:
    return str(conninfo_to_dict(dsn)["dbname"])


def role_exists(admin_dsn: str, role: str) -> bool:
    with psycopg.connect(admin_dsn) as admin:
        return admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s",
                             (role,)).fetchone() is not None


@pytest.fixture
def target() -> Iterator[str]:
    with throwaway_database("bg_breach", *SCHEMA) as dsn:
        yield dsn


# -- the password and the server's log ----------------------------------------------------


def server_log(admin_dsn: str) -> Path:
    with psycopg.connect(admin_dsn) as admin:
        current, data = admin.execute(
            "SELECT pg_current_logfile(), current_setting('data_directory')").fetchone()
    if current is not None:
        path = Path(current) if Path(current).is_absolute() else Path(data) / current
    else:  # logging to stderr: the services script sends it to its state directory
        path = Path(os.environ.get("BG_SERVICES_DIR", "/tmp/breakglass-services")) / \
            "logs" / "postgres.log"
    # a missing log is a broken harness, never a pass: the test's whole point is reading it
    assert os.access(path, os.R_OK), f"the server's log {path} is not readable here"
    return path


def test_a_target_logging_every_statement_never_logs_the_password(target: str) -> None:
    admin_dsn = require("BG_TEST_PG_ADMIN_DSN")
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("ALTER DATABASE {} SET log_statement = 'all'").format(
            sql.Identifier(dbname(target))))
    log = server_log(admin_dsn)
    start = log.stat().st_size
    connector = PostgresConnector("db", {"dsn": target}, ownership=OWNERSHIP)
    try:
        cred = connector.grant(spec(READ))
        password = cred.secret["password"]
        with psycopg.connect(cred.secret["dsn"], autocommit=True) as user:
            assert user.execute("SELECT v FROM vectors.items").fetchall() == [("a",)]
            user.execute("SELECT 1")
        connector.extend(cred.target_ref, datetime.now(UTC) + timedelta(minutes=9))
        connector.revoke(cred.target_ref)
    finally:
        connector.close()
    with log.open("rb") as f:
        f.seek(start)
        written = f.read().decode(errors="replace")
    # The log did record this role's DDL, with the verifier where a password would be...
    assert f'CREATE ROLE "{cred.target_ref}" LOGIN PASSWORD \'SCRAM-SHA-256$' in written
    # ...and nothing of the password, in any form the DSN or a statement could carry it.
    assert password not in written
    assert password[:16] not in written


def test_the_role_stores_a_scram_verifier_not_the_password(target: str) -> None:
    connector = PostgresConnector("db", {"dsn": target}, ownership=OWNERSHIP)
    try:
        cred = connector.grant(spec(READ))
        with psycopg.connect(require("BG_TEST_PG_ADMIN_DSN")) as admin:
            (stored,) = admin.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s",
                                      (cred.target_ref,)).fetchone()
        assert stored.startswith("SCRAM-SHA-256$4096:")
        assert cred.secret["password"] not in stored
    finally:
        for ref in connector.list_managed():
            connector.revoke(ref)
        connector.close()


# -- the target as the oracle --------------------------------------------------------------

WEAKNESSES = {
    "public-insert": ["GRANT INSERT ON vectors.items TO PUBLIC"],
    "public-truncate": ["GRANT TRUNCATE ON vectors.jobs TO PUBLIC"],
    "public-column-update": ["GRANT UPDATE (v) ON vectors.items TO PUBLIC"],
    "public-read-elsewhere": ["CREATE TABLE public.payroll (x int)",
                              "GRANT SELECT ON public.payroll TO PUBLIC"],
    "public-catalog-read": ["GRANT SELECT ON pg_catalog.pg_statistic TO PUBLIC"],
    "public-create-schema": ["GRANT CREATE ON SCHEMA public TO PUBLIC"],
    "public-create-database": [
        "DO $$ BEGIN EXECUTE format('GRANT CREATE ON DATABASE %I TO PUBLIC', "
        "current_database()); END $$"],
    "public-sequence": ["CREATE SEQUENCE public.ids",
                        "GRANT USAGE ON SEQUENCE public.ids TO PUBLIC"],
    "security-definer": [
        "CREATE FUNCTION public.wipe() RETURNS void LANGUAGE sql SECURITY DEFINER "
        "AS 'DELETE FROM vectors.jobs'"],
    "public-large-object": ["SELECT lo_create(4242)",
                            "GRANT UPDATE ON LARGE OBJECT 4242 TO PUBLIC"],
}


@pytest.mark.parametrize("weakness", sorted(WEAKNESSES))
def test_a_zone_a_grant_on_a_weakened_target_is_refused_and_leaves_nothing(
    weakness: str,
) -> None:
    with throwaway_database("bg_weak", *SCHEMA, *WEAKNESSES[weakness]) as dsn:
        connector = PostgresConnector("db", {"dsn": dsn}, ownership=OWNERSHIP)
        asked = spec(READ)
        try:
            with pytest.raises(TargetError) as err:
                connector.grant(asked)
            assert "more than its catalog entry" in str(err.value)
            assert not role_exists(dsn, role_name_for(OWNERSHIP, asked.grant_id))
        finally:
            connector.close()


def test_public_writes_inside_the_catalog_scope_are_the_catalogs_own() -> None:
    with throwaway_database("bg_weak", *SCHEMA, *WEAKNESSES["public-insert"]) as dsn:
        connector = PostgresConnector("db", {"dsn": dsn}, ownership=OWNERSHIP)
        try:
            cred = connector.grant(spec({"privileges": ["SELECT", "INSERT"],
                                         "tables": ["vectors.items"]}, zone="B"))
            connector.revoke(cred.target_ref)
        finally:
            connector.close()


def test_the_refusal_names_what_exceeds_the_catalog() -> None:
    with throwaway_database("bg_weak", *SCHEMA, *WEAKNESSES["public-insert"],
                            *WEAKNESSES["public-catalog-read"]) as dsn:
        connector = PostgresConnector("db", {"dsn": dsn}, ownership=OWNERSHIP)
        try:
            with pytest.raises(TargetError) as err:
                connector.grant(spec(READ))
        finally:
            connector.close()
    assert "INSERT on vectors.items" in str(err.value)
    assert "SELECT on pg_catalog.pg_statistic" in str(err.value)


# -- revocation a grantee cannot block -----------------------------------------------------


def as_grantee(cred_dsn: str, database: str) -> psycopg.Connection[Any]:
    return psycopg.connect(make_conninfo(cred_dsn, dbname=database), autocommit=True)


def park_objects(cred_dsn: str, target: str, elsewhere: str) -> list[psycopg.Connection[Any]]:
    """What a grantee with nothing but a login can leave behind; returns open sessions."""
    with as_grantee(cred_dsn, "template1") as t1:  # short: CREATE DATABASE copies template1
        t1.execute("SELECT lo_create(0)")
    other = as_grantee(cred_dsn, elsewhere)
    other.execute("SELECT lo_create(0)")
    other.execute("CREATE TABLE public.parked (x int)")
    other.execute("INSERT INTO public.parked VALUES (1)")
    other.execute("GRANT SELECT ON public.parked TO PUBLIC")
    other.execute("ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO PUBLIC")
    other.execute("CREATE TEMP TABLE stash (x int)")
    here = as_grantee(cred_dsn, dbname(target))
    here.execute("SELECT lo_create(0)")
    here.execute("CREATE TEMP TABLE stash (x int)")
    return [other, here]


def remove_leftovers(admin_dsn: str, role: str) -> None:
    """After a failed test: a role owning a large object in template1 would be copied into
    every database created meanwhile, so it must not outlive the test."""
    if role_exists(admin_dsn, role):
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            remove_role(admin, admin_dsn, role, dbname(admin_dsn))


def owned_anywhere(admin_dsn: str, oid: int) -> list[tuple[Any, ...]]:
    with psycopg.connect(admin_dsn) as admin:
        return admin.execute("SELECT dbid, classid, objid FROM pg_shdepend "
                             "WHERE refclassid = 'pg_authid'::regclass AND refobjid = %s",
                             (oid,)).fetchall()


def role_oid(admin_dsn: str, role: str) -> int:
    with psycopg.connect(admin_dsn) as admin:
        return int(admin.execute("SELECT oid FROM pg_roles WHERE rolname = %s",
                                 (role,)).fetchone()[0])


@pytest.fixture
def elsewhere() -> Iterator[str]:
    with throwaway_database("bg_elsewhere", "GRANT CREATE ON SCHEMA public TO PUBLIC") as dsn:
        yield dsn


def test_objects_parked_in_other_databases_do_not_keep_the_role_alive(
    target: str, elsewhere: str
) -> None:
    admin_dsn = require("BG_TEST_PG_ADMIN_DSN")
    connector = PostgresConnector("db", {"dsn": target}, ownership=OWNERSHIP)
    asked = spec(READ)
    sessions: list[psycopg.Connection[Any]] = []
    try:
        cred = connector.grant(asked)
        oid = role_oid(admin_dsn, cred.target_ref)
        sessions = park_objects(cred.secret["dsn"], target, dbname(elsewhere))
        parked = {row[0] for row in owned_anywhere(admin_dsn, oid)}
        assert len(parked - {0}) >= 3  # template1, elsewhere, the target (and any copies)
        connector.revoke(cred.target_ref)
        for session in sessions:
            with pytest.raises(psycopg.OperationalError):
                session.execute("SELECT 1")
        assert not role_exists(admin_dsn, cred.target_ref)
        assert owned_anywhere(admin_dsn, oid) == []
        with psycopg.connect(elsewhere) as other:
            assert other.execute("SELECT to_regclass('public.parked')").fetchone() == (None,)
        assert not connector.verify(cred.target_ref)
        connector.revoke(cred.target_ref)  # idempotent
    finally:
        for session in sessions:
            session.close()
        connector.close()
        remove_leftovers(admin_dsn, role_name_for(OWNERSHIP, asked.grant_id))


def test_what_template1_passed_on_to_new_databases_goes_too(target: str) -> None:
    admin_dsn = require("BG_TEST_PG_ADMIN_DSN")
    connector = PostgresConnector("db", {"dsn": target}, ownership=OWNERSHIP)
    asked = spec(READ)
    try:
        cred = connector.grant(asked)
        with as_grantee(cred.secret["dsn"], "template1") as t1:
            t1.execute("SELECT lo_create(0)")
        with throwaway_database("bg_copy") as copy:  # CREATE DATABASE copies template1
            with psycopg.connect(copy) as c:
                owners = c.execute("SELECT lomowner::regrole::text FROM pg_largeobject_metadata"
                                   ).fetchall()
            assert (cred.target_ref,) in owners
            connector.revoke(cred.target_ref)
            assert not role_exists(admin_dsn, cred.target_ref)
            with psycopg.connect(copy) as c:
                assert c.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone() \
                    == (0,)
    finally:
        connector.close()
        remove_leftovers(admin_dsn, role_name_for(OWNERSHIP, asked.grant_id))


BLOCKERS = {
    # The database holding the parked table stops accepting connections.
    "closed-database": (["ALTER DATABASE {db} ALLOW_CONNECTIONS false"],
                        ["ALTER DATABASE {db} ALLOW_CONNECTIONS true"], "(refuses connections)"),
    # Someone else's view is built on the parked table: not the broker's to drop.
    "dependent-object": (["CREATE VIEW public.built_on_it AS SELECT * FROM public.parked"],
                         ["DROP VIEW IF EXISTS public.built_on_it"], ""),
}


@pytest.mark.parametrize("blocker", sorted(BLOCKERS))
def test_when_the_role_cannot_be_dropped_access_is_already_cut(
    target: str, elsewhere: str, blocker: str
) -> None:
    admin_dsn = require("BG_TEST_PG_ADMIN_DSN")
    block, unblock, note = BLOCKERS[blocker]
    connector = PostgresConnector("db", {"dsn": target}, ownership=OWNERSHIP)
    parked_in = dbname(elsewhere)

    def run(statements: list[str]) -> None:
        with psycopg.connect(elsewhere if blocker != "closed-database" else admin_dsn,
                             autocommit=True) as admin:
            for statement in statements:
                admin.execute(statement.format(db=parked_in).encode())

    asked = spec(READ)
    try:
        cred = connector.grant(asked)
        with as_grantee(cred.secret["dsn"], parked_in) as other:
            other.execute("CREATE TABLE public.parked (x int)")
        run(block)
        with pytest.raises(TargetError) as err:
            connector.revoke(cred.target_ref)
        message = str(err.value)
        assert f"in database {parked_in}{' ' + note if note else ''}" in message
        assert "owns pg_class" in message
        assert "access cut" in message
        assert cred.secret["password"] not in message
        with psycopg.connect(admin_dsn) as admin:
            row = admin.execute(
                "SELECT rolcanlogin, rolpassword IS NULL, rolvaliduntil < now() "
                "FROM pg_authid WHERE rolname = %s", (cred.target_ref,)).fetchone()
        assert row == (False, True, True)
        assert not connector.verify(cred.target_ref)
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(cred.secret["dsn"])
        run(unblock)
        connector.revoke(cred.target_ref)  # the retry converges
        assert not role_exists(admin_dsn, cred.target_ref)
    finally:
        connector.close()
        run(unblock)
        remove_leftovers(admin_dsn, role_name_for(OWNERSHIP, asked.grant_id))


def test_concurrent_revocations_of_one_role_both_succeed(target: str) -> None:
    connectors = [PostgresConnector("db", {"dsn": target}, ownership=OWNERSHIP) for _ in range(4)]
    try:
        cred = connectors[0].grant(spec(READ))
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda c: c.revoke(cred.target_ref), connectors))
        assert not role_exists(require("BG_TEST_PG_ADMIN_DSN"), cred.target_ref)
    finally:
        for c in connectors:
            c.close()
