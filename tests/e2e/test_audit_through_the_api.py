"""The audit log as an API client sees it: every event a call causes records the caller's
address (the OCSF export names it as the source endpoint), and the export comes from the
server as well as from the database."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import httpx

from tests.conftest import CATALOG
from tests.e2e.conftest import BIN, Cli, run_broker

UNUSED_TARGET = {"TEST_TARGET_DSN": "postgresql://nobody@127.0.0.1:9/never_contacted"}


@contextmanager
def broker_with_a_request(tmp_path: Path, incident: str) -> Iterator[tuple[Cli, Path, str]]:
    """A dev broker on SQLite where uma logged in and asked for zone-B access (it waits for
    approvers, so no target is contacted): the CLI, the state directory, the request id."""
    state = tmp_path / "state"
    state.mkdir()
    with run_broker(CATALOG, state, UNUSED_TARGET) as url:
        cli = Cli(url, tmp_path / "home")
        assert cli.run("uma", "login", "--dev", "uma").returncode == 0
        made = cli.run("uma", "request", "embeddings-requeue", "--incident", incident,
                       "--reason", "recovery", "--json")
        assert made.returncode == 0, made.stderr
        yield cli, state, json.loads(made.stdout)["id"]


def test_the_events_of_a_call_carry_the_callers_address(tmp_path: Path) -> None:
    with broker_with_a_request(tmp_path, "SEV-6001") as (_, state, request_id):
        pass  # the broker has stopped: its database is read here
    with closing(sqlite3.connect(f"file:{state / 'broker.db'}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT action, payload FROM events WHERE request_id = ? OR "
                          "action LIKE 'identity:%' ORDER BY idx", (request_id,)).fetchall()
    sources = {action: json.loads(payload).get("source") for action, payload in rows}
    assert sources["identity:login:issued"] == "127.0.0.1"
    assert sources["request:created"] == "127.0.0.1"

    out = tmp_path / "export"
    exported = subprocess.run(
        [str(BIN), "audit", "export", "--format", "ocsf", "--out", str(out), "--catalog",
         str(CATALOG), "--db", f"sqlite:///{state / 'broker.db'}"],
        env={**os.environ, **UNUSED_TARGET, "BREAKGLASS_STATE_DIR": str(state),
             "BREAKGLASS_ANCHOR_DIR": f"{state}-anchor"},
        capture_output=True, text=True, timeout=60, check=False)
    assert exported.returncode == 0, exported.stderr
    records = [json.loads(line) for line in (out / "events.ocsf.jsonl").read_text().splitlines()]
    [created] = [r for r in records if r["unmapped"]["action"] == "request:created"]
    assert (created["class_uid"], created["src_endpoint"]) == (6003, {"ip": "127.0.0.1"})


def test_audit_export_from_the_server_verifies_offline(tmp_path: Path) -> None:
    """`breakglass audit export --out DIR` as an API client (no database at hand), as the
    CLI contract has it; a caller without a token gets a refusal and no files."""
    with broker_with_a_request(tmp_path, "SEV-6002") as (cli, _, _):
        refused = cli.run("nobody", "audit", "export", "--out", str(tmp_path / "refused"))
        assert refused.returncode != 0
        assert "identity.token_missing" in refused.stderr
        assert not (tmp_path / "refused").exists()
        for fmt in ("jsonl", "ocsf"):
            done = cli.run("uma", "audit", "export", "--format", fmt,
                           "--out", str(tmp_path / fmt))
            assert done.returncode == 0, done.stderr
        online = cli.run("uma", "audit", "verify").stdout  # the same log, online
    verified = subprocess.run([str(BIN), "audit", "verify", "--export", str(tmp_path / "jsonl")],
                              capture_output=True, text=True, timeout=60, check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "verified" in verified.stdout
    assert "verified" in online
    ocsf = (tmp_path / "ocsf" / "events.ocsf.jsonl").read_text().splitlines()
    jsonl = (tmp_path / "jsonl" / "events.jsonl").read_text().splitlines()
    assert len(ocsf) >= len(jsonl) > 0
    assert {json.loads(line)["metadata"]["version"] for line in ocsf} == {"1.3.0"}


def test_out_of_range_log_positions_are_input_refusals(tmp_path: Path) -> None:
    """Positions past the log, past the proof's size or beyond any integer SQL can hold
    are the caller's mistake: 4xx naming the rule, never a 5xx."""
    with broker_with_a_request(tmp_path, "SEV-6002") as (cli, _, _):
        saved = json.loads((tmp_path / "home" / "uma" / "breakglass" / "token.json").read_text())
        token = saved.get("access_token") or saved.get("token")
        headers = {"Authorization": f"Bearer {token}"}
        huge = "9" * 24
        for path, params in [
            ("/v1/audit/entries", {"start": huge}),
            ("/v1/audit/entries", {"start": "0", "end": huge}),
            ("/v1/audit/entries", {"start": "-1"}),
            ("/v1/audit/proof/inclusion", {"index": "5", "size": "2"}),
            ("/v1/audit/proof/inclusion", {"index": "2", "size": "2"}),
            ("/v1/audit/proof/inclusion", {"index": huge, "size": "1"}),
            ("/v1/audit/proof/consistency", {"from": "3", "to": "2"}),
            ("/v1/audit/proof/consistency", {"from": "1", "to": huge}),
        ]:
            answer = httpx.get(cli.server + path, params=params, headers=headers, timeout=30)
            assert 400 <= answer.status_code < 500, (path, params, answer.status_code)
        fine = httpx.get(cli.server + "/v1/audit/proof/inclusion",
                         params={"index": "0", "size": "2"}, headers=headers, timeout=30)
        assert fine.status_code == 200, fine.text


def test_input_the_api_refuses_is_recorded_with_who_sent_it(tmp_path: Path) -> None:
    """A 422 leaves a trace: one api:input:refused event naming the caller, method, path and
    rule (never the body), for schema errors and for the domain's input rules alike."""
    with broker_with_a_request(tmp_path, "SEV-6003") as (cli, state, _):
        saved = json.loads((tmp_path / "home" / "uma" / "breakglass" / "token.json").read_text())
        headers = {"Authorization": f"Bearer {saved['access_token']}"}
        body = {"roles": ["embeddings-read"], "incident": "SEV-6003", "reason": "recovery",
                "justification": "body-only-marker"}
        bad_ttl = httpx.post(cli.server + "/v1/requests", json={**body, "ttl": "999999999999d"},
                             headers=headers, timeout=30)
        unknown = httpx.post(cli.server + "/v1/requests", json={**body, "sudo": True},
                             headers=headers, timeout=30)
        anonymous = httpx.post(cli.server + "/v1/dev/token", json={"nobody": 1}, timeout=30)
        assert (bad_ttl.status_code, unknown.status_code, anonymous.status_code) == (422,) * 3
    with closing(sqlite3.connect(f"file:{state / 'broker.db'}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT actor, rule, outcome, payload FROM events WHERE action = "
                          "'api:input:refused' ORDER BY idx").fetchall()
    seen = [(actor, rule, outcome, json.loads(payload)["path"]) for actor, rule, outcome, payload
            in rows]
    assert seen == [("uma", "input.duration", "denied", "/v1/requests"),
                    ("uma", "input.invalid", "denied", "/v1/requests"),
                    ("anonymous", "input.invalid", "denied", "/v1/dev/token")]
    assert all(json.loads(p)["source"] == "127.0.0.1" for *_, p in rows)
    assert "body-only-marker" not in json.dumps(rows)
