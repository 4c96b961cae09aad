"""Every event a client's call causes records the client's address, and the OCSF export
names it as the source endpoint."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

from tests.conftest import CATALOG
from tests.e2e.conftest import BIN, Cli, run_broker

UNUSED_TARGET = {"TEST_TARGET_DSN": "postgresql://nobody@127.0.0.1:9/never_contacted"}


def test_the_events_of_a_call_carry_the_callers_address(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    with run_broker(CATALOG, state, UNUSED_TARGET) as url:
        cli = Cli(url, tmp_path / "home")
        assert cli.run("uma", "login", "--dev", "uma").returncode == 0
        made = cli.run("uma", "request", "embeddings-requeue", "--incident", "SEV-6001",
                       "--reason", "recovery", "--json")  # zone B: waits for approvers
        assert made.returncode == 0, made.stderr
        request_id = json.loads(made.stdout)["id"]
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
        env={**os.environ, **UNUSED_TARGET, "BREAKGLASS_STATE_DIR": str(state)},
        capture_output=True, text=True, timeout=60, check=False)
    assert exported.returncode == 0, exported.stderr
    records = [json.loads(line) for line in (out / "events.ocsf.jsonl").read_text().splitlines()]
    [created] = [r for r in records if r["unmapped"]["action"] == "request:created"]
    assert (created["class_uid"], created["src_endpoint"]) == (6003, {"ip": "127.0.0.1"})
