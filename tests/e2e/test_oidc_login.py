"""People log in with the CLI against a real OpenID provider and use a zone-B role.

The broker runs without ``--dev``: it knows nobody in advance and takes
names, teams, approver groups and MFA from the provider's access tokens.
Each person runs ``breakglass login`` (device flow) in their own config dir
and confirms the code in "their browser" (:func:`sign_in`).
"""

from __future__ import annotations

import json
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from tests.e2e.oidc_fixtures import (
    FIXTURES,
    Broker,
    OidcCli,
    running_broker,
    target_database,
)
from tests.services import require

CATALOG = FIXTURES / "catalog_oidc.yaml"
ROLE = "jobs-requeue"
PEOPLE = ("alice", "bob", "carol", "dave", "erin")


@pytest.fixture(scope="module")
def jobs_dsn() -> Iterator[str]:
    with target_database() as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO vectors.jobs VALUES (1, 'stuck'), (2, 'done')")
        yield dsn


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory, jobs_dsn: str) -> Iterator[Broker]:
    issuer = require("BG_TEST_OIDC_ISSUER")
    env = {"BG_TEST_OIDC_ISSUER": issuer, "TEST_TARGET_DSN": jobs_dsn}
    with running_broker(CATALOG, tmp_path_factory.mktemp("oidc-broker"), env) as running:
        yield running


@pytest.fixture(scope="module")
def cli(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> OidcCli:
    people = OidcCli(broker.url, tmp_path_factory.mktemp("oidc-homes"))
    people.login(*PEOPLE)
    return people


def run_json(cli: OidcCli, user: str, *args: str) -> dict[str, Any]:
    result = cli.run(user, *args, "--json")
    assert result.returncode == 0, (user, args, result.stdout, result.stderr)
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_login_stores_the_providers_tokens_for_the_owner_only(cli: OidcCli) -> None:
    issuer = require("BG_TEST_OIDC_ISSUER")
    for user in PEOPLE:
        path = cli.token_file(user)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, user
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700, user
        stored = json.loads(path.read_text())
        assert stored["issuer"] == issuer
        assert stored["client_id"] == "breakglass-cli"
        assert stored["server"] == cli.server
        assert stored["access_token"].count(".") == 2
        assert stored["refresh_token"]
    tokens = {json.loads(cli.token_file(u).read_text())["access_token"] for u in PEOPLE}
    assert len(tokens) == len(PEOPLE)


def test_zone_b_needs_an_approver_from_another_team(cli: OidcCli) -> None:
    asked = ["--incident", "INC-4101", "--reason", "recovery", "--justification", "jobs stuck"]
    created = run_json(cli, "alice", "request", ROLE, *asked)
    rid = created["id"]
    assert (created["state"], created["zone"], created["requester"]) == ("pending", "B", "alice")
    assert created["approvals_required"] == 1

    same_team = cli.run("bob", "approve", rid)
    assert same_team.returncode == 3, (same_team.stdout, same_team.stderr)
    assert "approval.same_team" in same_team.stderr
    assert len(same_team.stderr.strip().splitlines()) == 1
    own = cli.run("alice", "approve", rid)
    assert own.returncode == 3
    assert "approval.self" in own.stderr
    assert run_json(cli, "alice", "show", rid)["state"] == "pending"

    approved = run_json(cli, "carol", "approve", rid, "--comment", "seen in the incident channel")
    assert approved["state"] == "active"
    assert [a["approver"] for a in approved["approvals"]] == ["carol"]

    result = cli.run("alice", "creds", rid, "--format", "json")
    assert result.returncode == 0, result.stderr
    cred = json.loads(result.stdout)
    with psycopg.connect(cred["dsn"], autocommit=True) as conn:
        assert conn.execute("SELECT status FROM vectors.jobs WHERE id = 1").fetchone() == ("stuck",)
        conn.execute("UPDATE vectors.jobs SET status = 'queued' WHERE id = 1")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT v FROM vectors.items")

    events = json.loads(cli.run("carol", "timeline", "INC-4101", "--json").stdout)
    refusals = [(e["actor"], e["rule"]) for e in events if e["outcome"] != "ok"]
    assert refusals == [("bob", "approval.same_team"), ("alice", "approval.self")]
    assert [e["actor"] for e in events if e["action"] == "request:approval:added"] == ["carol"]

    revoked = run_json(cli, "alice", "revoke", rid, "--reason", "jobs requeued")
    assert revoked["state"] == "revoked"
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(cred["dsn"])


def test_a_login_without_mfa_is_refused_zone_b(cli: OidcCli) -> None:
    result = cli.run("erin", "request", ROLE, "--incident", "INC-4102", "--reason", "recovery")
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert "identity.mfa_required" in result.stderr
    assert "requires MFA" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert json.loads(cli.run("erin", "list", "--mine", "--json").stdout) == []
    events = json.loads(cli.run("carol", "timeline", "INC-4102", "--json").stdout)
    assert [(e["actor"], e["action"], e["rule"]) for e in events] == [
        ("erin", "request:refused", "identity.mfa_required")
    ]


def test_an_expiring_access_token_is_refreshed_by_the_cli(cli: OidcCli) -> None:
    path = cli.token_file("carol")
    stored = json.loads(path.read_text())
    stored["expires_at"] = (datetime.now(UTC) + timedelta(seconds=5)).isoformat()
    path.write_text(json.dumps(stored))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    listed = cli.run("carol", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    renewed = json.loads(path.read_text())
    assert renewed["access_token"] != stored["access_token"]
    assert renewed["refresh_token"]
    assert datetime.fromisoformat(renewed["expires_at"]) > datetime.now(UTC) + timedelta(minutes=2)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_logout_removes_the_token_and_later_calls_need_a_login(cli: OidcCli) -> None:
    path = cli.token_file("dave")
    assert cli.run("dave", "list", "--json").returncode == 0
    out = cli.run("dave", "logout")
    assert out.returncode == 0, out.stderr
    assert "logged out" in out.stdout
    assert not path.exists()

    after = cli.run("dave", "list")
    assert after.returncode == 1, (after.stdout, after.stderr)
    lines = after.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "identity.token_missing" in lines[0]
    assert "bearer token is required" in lines[0]
    assert "breakglass login" in lines[0]
    assert cli.run("dave", "logout").stdout.strip() == "no stored token"


def test_each_token_s_first_use_is_a_session_event_without_the_token(
        cli: OidcCli, broker: Broker) -> None:
    issuer = require("BG_TEST_OIDC_ISSUER")
    assert cli.run("alice", "list", "--json").returncode == 0
    assert cli.run("alice", "list", "--json").returncode == 0
    with closing(sqlite3.connect(f"file:{broker.db}?mode=ro", uri=True, timeout=10)) as conn:
        rows = conn.execute("SELECT actor, payload FROM events WHERE action = ? ORDER BY idx",
                            ("identity:session:started",)).fetchall()
    sessions: dict[str, list[dict[str, Any]]] = {}
    for actor, payload in rows:
        sessions.setdefault(actor, []).append(json.loads(payload))
    # alice used one token for every call; carol's was refreshed once (a second session)
    assert len(sessions["alice"]) == 1
    assert len(sessions["carol"]) == 2
    [alice] = sessions["alice"]
    assert (alice["issuer"], alice["kind"], alice["channel"]) == (issuer, "human", "api")
    assert alice["subject"]
    assert alice["mfa"] is True
    assert alice["groups"] == ["oncall", "team:platform"]
    assert datetime.fromisoformat(alice["expires_at"]) > datetime.now(UTC)
    [erin] = sessions["erin"]
    assert erin["mfa"] is False
    stored = b"".join(p.read_bytes() for p in broker.db.parent.glob(broker.db.name + "*"))
    for user in ("alice", "carol", "erin"):
        token = json.loads(cli.token_file(user).read_text())["access_token"]
        assert token.encode() not in stored
        assert token.rsplit(".", 1)[1].encode() not in stored
