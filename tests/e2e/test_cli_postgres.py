"""A responder, two approvers and a stranger drive the CLI against a real broker and target."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
import zipfile

import httpx
import psycopg
import pytest

from tests.conftest import CATALOG
from tests.e2e.conftest import BIN, Cli


def managed_roles(dsn: str) -> set[str]:
    """Broker roles that hold privileges on this target database (the cluster is shared)."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT r.rolname FROM pg_database d, aclexplode(d.datacl) a "
            "JOIN pg_roles r ON r.oid = a.grantee "
            "WHERE d.datname = current_database() AND r.rolname LIKE 'bg\\_%'").fetchall()
    return {r[0] for r in rows}


def request(cli: Cli, user: str, *args: str) -> dict:
    result = cli.run(user, "request", *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def creds(cli: Cli, user: str, rid: str) -> dict:
    result = cli.run(user, "creds", rid, "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_zone_a_self_approved_grant_reads_but_cannot_write(cli):
    data = request(cli, "uma", "embeddings-read", "--incident", "SEV-2001", "--reason",
                   "recovery", "--justification", "gateway 5xx")
    assert {"id", "state", "roles", "zone", "incident", "reason", "requester",
            "expires_at"} <= set(data)
    assert (data["state"], data["zone"], data["requester"]) == ("active", "A", "uma")
    cred = creds(cli, "uma", data["id"])
    assert {"type", "dsn", "username", "password", "host", "port", "dbname",
            "expires_at"} <= set(cred)
    with psycopg.connect(cred["dsn"], autocommit=True) as conn:
        assert conn.execute("SELECT v FROM vectors.items WHERE id = 1").fetchone() == ("seed",)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO vectors.items VALUES (99, 'nope')")
    again = cli.run("uma", "creds", data["id"])
    assert again.returncode == 3
    assert "already shown" in again.stderr
    env = cli.run("ugo", "creds", data["id"], "--format", "env")
    assert env.returncode == 3


def test_creds_env_format_prints_pg_exports(cli):
    data = request(cli, "uma", "embeddings-read", "--incident", "SEV-2002", "--reason",
                   "recovery")
    out = cli.run("uma", "creds", data["id"], "--format", "env")
    assert out.returncode == 0, out.stderr
    names = [line.split("=")[0] for line in out.stdout.splitlines()]
    assert names == ["export PGHOST", "export PGPORT", "export PGDATABASE", "export PGUSER",
                     "export PGPASSWORD"]


def test_creds_env_format_with_two_grants_keeps_both_usable(cli, tmp_path):
    """Two roles on one PostgreSQL target: each grant's variables go to its own file, as the
    README shows, so the second grant's PGPASSWORD does not overwrite the first's."""
    data = request(cli, "uma", "embeddings-read", "embeddings-requeue", "--incident",
                   "SEV-2003", "--reason", "recovery", "--runbook", "RB-7")
    assert data["state"] == "active", data
    out = cli.run("uma", "creds", data["id"], "--format", "env")
    assert out.returncode == 0, out.stderr
    exports = dict(line.removeprefix("export ").split("=", 1) for line in out.stdout.splitlines())
    assert set(exports) == {"BREAKGLASS_ENV_EMBEDDINGS_READ", "BREAKGLASS_ENV_EMBEDDINGS_REQUEUE"}
    assert "PGPASSWORD" not in out.stdout
    users = set()
    for variable in sorted(exports):
        script = (f'eval "$(cat {tmp_path / "out.env"})" && . "${variable}" && '
                  'psql -XAtc "SELECT current_user, count(*) FROM vectors.jobs"')
        (tmp_path / "out.env").write_text(out.stdout)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        used = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True,
                              timeout=30, check=False)
        assert used.returncode == 0, used.stderr
        users.add(used.stdout.split("|")[0])
        path = exports[variable]
        assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert len(users) == 2


def test_zone_c_needs_two_outside_approvers_then_can_write(cli, target_dsn):
    data = request(cli, "uma", "embeddings-repair", "--incident", "SEV-2003", "--reason",
                   "data_integrity")
    rid = data["id"]
    assert data["state"] == "pending"
    before = managed_roles(target_dsn)
    own = cli.run("uma", "approve", rid)
    assert own.returncode == 3
    assert "approval.self" in own.stderr
    same_team = cli.run("ugo", "approve", rid)
    assert same_team.returncode == 3
    assert "approval.same_team" in same_team.stderr
    first = cli.run("vera", "approve", rid, "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["state"] == "pending"
    dup = cli.run("vera", "approve", rid)
    assert dup.returncode == 3
    assert "approval.duplicate" in dup.stderr
    shown = json.loads(cli.run("uma", "show", rid, "--json").stdout)
    assert [a["approver"] for a in shown["approvals"]] == ["vera"]
    assert managed_roles(target_dsn) == before
    second = cli.run("wim", "approve", rid, "--json")
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["state"] == "active"
    cred = creds(cli, "uma", rid)
    with psycopg.connect(cred["dsn"], autocommit=True) as conn:
        conn.execute("INSERT INTO vectors.items VALUES (2003, 'fixed')")
    revoked = cli.run("vera", "revoke", rid, "--reason", "done", "--json")
    assert revoked.returncode == 0, revoked.stderr
    assert json.loads(revoked.stdout)["state"] == "revoked"
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(cred["dsn"])


def test_short_ttl_expires_and_kills_open_sessions(cli, target_dsn):
    data = request(cli, "uma", "embeddings-read", "--incident", "SEV-2004", "--reason",
                   "recovery", "--ttl", "3s")
    cred = creds(cli, "uma", data["id"])
    with psycopg.connect(cred["dsn"], autocommit=True) as session:
        session.execute("SELECT 1")
        deadline = time.monotonic() + 15
        state = "active"
        while time.monotonic() < deadline and state != "expired":
            time.sleep(0.5)
            state = json.loads(cli.run("uma", "show", data["id"], "--json").stdout)["state"]
        assert state == "expired"
        with pytest.raises(psycopg.OperationalError):
            session.execute("SELECT 1")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(cred["dsn"])
    assert cred["username"] not in managed_roles(target_dsn)


def test_revoke_ends_access_at_once(cli):
    data = request(cli, "uma", "embeddings-read", "--incident", "SEV-2005", "--reason",
                   "recovery")
    cred = creds(cli, "uma", data["id"])
    with psycopg.connect(cred["dsn"], autocommit=True) as session:
        result = cli.run("uma", "revoke", data["id"])
        assert result.returncode == 0, result.stderr
        with pytest.raises(psycopg.OperationalError):
            session.execute("SELECT 1")


@pytest.mark.parametrize(("user", "args", "rule"), [
    ("uma", ["embeddings-read", "--reason", "recovery"], "incident.required"),
    ("uma", ["embeddings-read", "--incident", "INC-77", "--reason", "recovery"],
     "incident.pattern"),
    ("uma", ["embeddings-read", "--incident", "SEV-2006", "--reason", "boredom"],
     "reason.unknown"),
    ("uma", ["embeddings-read", "--incident", "SEV-2006", "--reason", "recovery", "--ttl",
             "2h"], "ttl.max"),
    ("yuri", ["embeddings-read", "--incident", "SEV-2006", "--reason", "recovery"],
     "role.requesters"),
])
def test_refusals_exit_3_name_the_rule_and_create_nothing(cli, target_dsn, user, args, rule):
    before = managed_roles(target_dsn)
    result = cli.run(user, "request", *args)
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert rule in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert managed_roles(target_dsn) == before
    listed = json.loads(cli.run(user, "list", "--mine", "--json").stdout)
    assert all(r["incident"] != "SEV-2006" for r in listed)


def test_shared_accounts_cannot_log_in(cli):
    result = cli.run("shared", "login", "--dev", "break-glass-admin")
    assert result.returncode == 3
    assert "identity.shared_account" in result.stderr


def test_usage_errors_exit_2_and_unknown_requests_exit_4(cli):
    assert cli.run("uma", "request", "embeddings-read", "--ttl", "forever").returncode == 2
    assert cli.run("uma", "show", "r-000000000000").returncode == 4
    assert cli.run("uma", "creds", "r-000000000000", "--format", "yaml").returncode == 2


def test_timeline_lists_the_incident_in_order(cli):
    data = request(cli, "uma", "embeddings-read", "--incident", "SEV-2007", "--reason",
                   "recovery")
    cli.run("uma", "revoke", data["id"])
    events = json.loads(cli.run("vera", "timeline", "SEV-2007", "--json").stdout)
    actions = [e["action"] for e in events]
    assert actions[0] == "request:created"
    assert "grant:credential:issued" in actions
    assert actions.index("grant:credential:revoked") < actions.index("request:ended")
    assert [e["index"] for e in events] == sorted(e["index"] for e in events)


def test_no_token_is_refused_with_401_problem_json(broker_server):
    response = httpx.post(broker_server + "/v1/requests", json={
        "roles": ["embeddings-read"], "incident": "SEV-1", "reason": "recovery"})
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["rule"] == "identity.token_missing"


def test_evidence_zip_verifies_offline_and_a_modified_zip_fails(cli, broker_server, tmp_path):
    data = request(cli, "uma", "embeddings-read", "--incident", "SEV-2008", "--reason",
                   "recovery")
    assert isinstance(data["audit_index"], int)
    cli.run("uma", "revoke", data["id"])
    out = tmp_path / "evidence.zip"
    got = cli.run("vera", "evidence", "SEV-2008", "--out", str(out))
    assert got.returncode == 0, got.stderr
    vkey = httpx.get(broker_server + "/v1/audit/key").text.strip()
    checkpoint = httpx.get(broker_server + "/v1/audit/checkpoint").text
    assert checkpoint.startswith("breakglass/test-org\n")
    # the auditor's machine: only the zip, the published key and breakglass itself
    clean_env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    verify = subprocess.run([str(BIN), "audit", "verify", "--evidence", str(out), "--key", vkey,
                             "--json"], capture_output=True, text=True, env=clean_env,
                            check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert json.loads(verify.stdout)["ok"] is True
    with zipfile.ZipFile(out) as bundle:  # the catalog version that judged the request
        catalog = json.loads(bundle.read("catalog.json"))
    version = hashlib.sha256(CATALOG.read_bytes()).hexdigest()
    assert catalog["in_force"] == [{"sha256": version, "first_index": catalog["in_force"][0][
        "first_index"], "requests": [data["id"]]}]
    assert catalog["serving"]["sha256"] == version
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(out) as src, zipfile.ZipFile(tampered, "w") as dst:
        for item in src.infolist():
            body = src.read(item.filename)
            if item.filename == "incident.jsonl":
                body = body.replace(b'"uma"', b'"eve"', 1)
            dst.writestr(item, body)
    bad = subprocess.run([str(BIN), "audit", "verify", "--evidence", str(tampered), "--key",
                          vkey], capture_output=True, text=True, env=clean_env, check=False)
    assert bad.returncode == 1
    assert "FAIL" in bad.stdout
