"""Extensions, workload overrides and incident-bound access, driven through the CLI.

A real ``breakglass serve --dev`` (with its expiry loop) grants on a real
PostgreSQL target and asks a real HTTP incident system started by the test.
TTLs are seconds long, so expiry and extension happen while the test watches.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import sql

from tests.e2e.conftest import BIN, Cli, free_port
from tests.incident_service import IncidentService
from tests.services import require

CATALOG = Path(__file__).parent.parent / "fixtures" / "catalog_workloads.yaml"
PASSWORD = "svc-password-for-tests"


@pytest.fixture(scope="module")
def incidents() -> Iterator[IncidentService]:
    with IncidentService() as service:
        yield service


@pytest.fixture(scope="module")
def target() -> Iterator[tuple[str, str]]:
    """A target database and a service account that already reads ``vectors.items``."""
    admin = require("BG_TEST_PG_ADMIN_DSN")
    name = "bg_ext_" + uuid.uuid4().hex[:8]
    account = "svc_" + uuid.uuid4().hex[:10]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(account), sql.Literal(PASSWORD)))
    dsn = admin.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA vectors")
        conn.execute("CREATE TABLE vectors.items (id int primary key, v text)")
        conn.execute("INSERT INTO vectors.items VALUES (1, 'seed')")
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA vectors TO {}").format(
            sql.Identifier(account)))
        conn.execute(sql.SQL("GRANT SELECT ON vectors.items TO {}").format(
            sql.Identifier(account)))
    yield dsn, account
    with psycopg.connect(dsn, autocommit=True) as conn:
        # what the broker may have left: logins it made here, overrides of the account
        mine = [r[0] for r in conn.execute(
            "SELECT r.rolname FROM pg_database d, aclexplode(d.datacl) a "
            "JOIN pg_roles r ON r.oid = a.grantee WHERE d.datname = current_database() "
            "AND starts_with(r.rolname, 'bg_') UNION SELECT rolname FROM pg_roles "
            "WHERE shobj_description(oid, 'pg_authid') LIKE %s", (f"%{account}%",)).fetchall()]
        for role in [*mine, account]:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        for role in [*mine, account]:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory, target: tuple[str, str],
        incidents: IncidentService) -> Iterator[Cli]:
    dsn, account = target
    state = tmp_path_factory.mktemp("broker")
    port = free_port()
    env = {**os.environ, "TEST_TARGET_DSN": dsn, "TEST_SERVICE_ACCOUNT": account,
           "TEST_INCIDENT_URL": incidents.url, "BREAKGLASS_STATE_DIR": str(state),
           "BREAKGLASS_ANCHOR_DIR": f"{state}-anchor"}
    log = (state / "server.log").open("w")
    proc = subprocess.Popen(
        [str(BIN), "serve", "--catalog", str(CATALOG), "--dev", "--port", str(port),
         "--db", f"sqlite:///{state / 'broker.db'}"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("broker did not start:\n" + (state / "server.log").read_text())
    client = Cli(url, tmp_path_factory.mktemp("homes"))
    for user in ("uma", "vera", "wim"):
        result = client.run(user, "login", "--dev", user)
        assert result.returncode == 0, result.stderr
    yield client
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


def ok(cli: Cli, user: str, *args: str) -> dict:
    result = cli.run(user, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def refused(cli: Cli, user: str, *args: str) -> str:
    result = cli.run(user, *args)
    assert result.returncode == 3, (result.stdout, result.stderr)
    return result.stderr


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def wait_for_state(cli: Cli, rid: str, state: str, seconds: float) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        shown = ok(cli, "uma", "show", rid)
        if shown["state"] == state or time.monotonic() > deadline:
            return shown
        time.sleep(0.3)


def sleep_until(moment: datetime) -> None:
    left = (moment - datetime.now(moment.tzinfo)).total_seconds()
    if left > 0:
        time.sleep(left)


def zone_c(cli: Cli, incident: str, ttl: str) -> tuple[str, dict]:
    data = ok(cli, "uma", "request", "embeddings-repair", "--incident", incident, "--reason",
              "data_integrity", "--ttl", ttl)
    rid = data["id"]
    ok(cli, "vera", "approve", rid)
    assert ok(cli, "wim", "approve", rid)["state"] == "active"
    shown = cli.run("uma", "creds", rid, "--format", "json")
    assert shown.returncode == 0, shown.stderr
    return rid, json.loads(shown.stdout)


def can_login(dsn: str) -> bool:
    try:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return False
    return True


def valid_until(target: tuple[str, str], role: str) -> datetime:
    with psycopg.connect(target[0]) as conn:
        row = conn.execute("SELECT rolvaliduntil FROM pg_roles WHERE rolname = %s",
                           (role,)).fetchone()
    assert row is not None
    return row[0]


def test_an_approved_extension_keeps_the_same_credential_working_past_the_old_expiry(
        cli, incidents, target):
    incidents.open("SEV-3001")
    rid, cred = zone_c(cli, "SEV-3001", "20s")
    old = when(ok(cli, "uma", "show", rid)["expires_at"])
    ext = ok(cli, "uma", "extend", rid, "--ttl", "15s", "--justification", "reindex running")
    assert (ext["state"], ext["approvals_required"]) == ("pending", 2)
    refused_same = refused(cli, "uma", "approve", rid)
    assert "approval.self" in refused_same
    first = ok(cli, "vera", "approve", rid)  # picks the one pending extension
    assert (first["id"], first["state"]) == (ext["id"], "pending")
    second = ok(cli, "wim", "approve", rid, "--extension", ext["id"])
    assert second["state"] == "applied"
    new = when(second["request_expires_at"])
    assert new == old + timedelta(seconds=15)
    assert abs((valid_until(target, cred["username"]) - new).total_seconds()) < 1
    sleep_until(old + timedelta(seconds=2))
    assert can_login(cred["dsn"]), "the same credential works after the old expiry"
    assert ok(cli, "uma", "show", rid)["state"] == "active"
    ended = wait_for_state(cli, rid, "expired", seconds=25)
    assert ended["state"] == "expired"
    assert when(ended["ended_at"]) - new < timedelta(seconds=3)
    assert not can_login(cred["dsn"])
    events = [e["action"] for e in ok(cli, "vera", "timeline", "SEV-3001")]
    assert events.count("extension:approval:added") == 2
    assert "extension:expiry:moved" in events


def test_without_fresh_approvals_access_ends_at_the_old_expiry(cli, incidents):
    incidents.open("SEV-3002")
    rid, cred = zone_c(cli, "SEV-3002", "8s")
    old = when(ok(cli, "uma", "show", rid)["expires_at"])
    ext = ok(cli, "uma", "extend", rid, "--ttl", "30s", "--justification", "more time")
    ok(cli, "vera", "approve", rid)  # one of two
    ended = wait_for_state(cli, rid, "expired", seconds=20)
    assert ended["state"] == "expired"
    assert when(ended["ended_at"]) - old < timedelta(seconds=3)
    assert not can_login(cred["dsn"])
    time.sleep(1.5)
    (found,) = httpx.get(cli.server + f"/v1/requests/{rid}/extensions",
                         headers={"Authorization": f"Bearer {token(cli, 'uma')}"}).json()
    assert (found["id"], found["state"]) == (ext["id"], "lapsed")
    late = refused(cli, "wim", "approve", rid, "--extension", ext["id"])
    assert "extension.not_pending" in late


def test_unknown_and_closed_incidents_are_refused(cli, incidents):
    incidents.close("SEV-3003")
    unknown = refused(cli, "uma", "request", "embeddings-read", "--incident", "SEV-3999",
                      "--reason", "recovery")
    assert "incident.unknown" in unknown
    assert "unknown incident SEV-3999" in unknown
    closed = refused(cli, "uma", "request", "embeddings-read", "--incident", "SEV-3003",
                     "--reason", "recovery")
    assert "incident.closed" in closed
    assert {"SEV-3999", "SEV-3003"} <= set(incidents.asked)


def test_closing_the_incident_revokes_both_tracks(cli, incidents, target):
    dsn, account = target
    incidents.open("SEV-3004")
    human = ok(cli, "uma", "request", "embeddings-read", "--incident", "SEV-3004", "--reason",
               "recovery")
    human_cred = json.loads(cli.run("uma", "creds", human["id"], "--format", "json").stdout)
    robot = ok(cli, "uma", "request", "embeddings-append", "--workload", "embeddings-pipeline",
               "--incident", "SEV-3004", "--reason", "recovery")
    assert (robot["state"], robot["workload"]) == ("pending", "embeddings-pipeline")
    assert ok(cli, "vera", "approve", robot["id"])["state"] == "active"
    assert service_can_insert(dsn, account)
    closed = ok(cli, "vera", "close-incident", "SEV-3004")
    assert sorted(closed["revoked"]) == sorted([human["id"], robot["id"]])
    for rid in (human["id"], robot["id"]):
        assert ok(cli, "uma", "show", rid)["state"] == "revoked"
    assert not service_can_insert(dsn, account)
    assert not can_login(human_cred["dsn"])
    with psycopg.connect(service_dsn(dsn, account)) as conn:  # what it had before stays
        assert conn.execute("SELECT v FROM vectors.items WHERE id = 1").fetchone() == ("seed",)
    incidents.close("SEV-3004")
    again = refused(cli, "uma", "request", "embeddings-append", "--workload",
                    "embeddings-pipeline", "--incident", "SEV-3004", "--reason", "recovery")
    assert "incident.closed" in again


def test_an_override_expires_back_to_exactly_what_the_account_had(cli, incidents, target):
    dsn, account = target
    incidents.open("SEV-3005")
    data = ok(cli, "uma", "request", "embeddings-append", "--workload", "embeddings-pipeline",
              "--incident", "SEV-3005", "--reason", "recovery", "--ttl", "5s")
    assert ok(cli, "vera", "approve", data["id"])["state"] == "active"
    assert service_can_insert(dsn, account)
    ended = wait_for_state(cli, data["id"], "expired", seconds=20)
    assert ended["state"] == "expired"
    assert not service_can_insert(dsn, account)
    with psycopg.connect(service_dsn(dsn, account)) as conn:
        assert conn.execute("SELECT v FROM vectors.items WHERE id = 1").fetchone() == ("seed",)
    actions = [e["action"] for e in ok(cli, "vera", "timeline", "SEV-3005")]
    assert actions.index("grant:credential:expired") < actions.index("request:ended")


def token(cli: Cli, user: str) -> str:
    stored = cli.home / user / "breakglass" / "token.json"
    return str(json.loads(stored.read_text())["access_token"])


def service_dsn(dsn: str, account: str) -> str:
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    return psycopg.conninfo.make_conninfo(dsn, user=account, password=PASSWORD,
                                          dbname=params["dbname"])


def service_can_insert(dsn: str, account: str) -> bool:
    with psycopg.connect(service_dsn(dsn, account), autocommit=True) as conn:
        try:
            conn.execute("INSERT INTO vectors.items VALUES (%s, 'pipeline')",
                         (uuid.uuid4().int % 1_000_000_000,))
        except psycopg.errors.InsufficientPrivilege:
            return False
    return True
