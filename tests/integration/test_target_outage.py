"""A target that is down when a grant expires: retried with backoff, alerted, then finished.

The target is a PostgreSQL cluster of the test's own (stopping the shared one
would disturb every other test). A real broker process holds a short grant on
it; the cluster stops before the grant expires and comes back a little later.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy import select

from breakglass.demo import local_postgres
from breakglass.service.revocation import RETRY_CAP
from breakglass.storage import tables as t
from breakglass.storage.uow import make_engine
from tests.integration.brokers import broker_process
from tests.services import require


@dataclass
class Cluster:
    dsn: str
    workdir: Path
    bindir: Path

    def _pg_ctl(self, *args: str) -> None:
        argv = [str(self.bindir / "pg_ctl"), "-D", str(self.workdir / "pgdata"), *args]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", require("BG_TEST_PG_OS_USER"), "--", *argv]
        subprocess.run(argv, check=True, capture_output=True, timeout=60)

    def stop(self) -> None:
        self._pg_ctl("-m", "fast", "-w", "stop")

    def start(self) -> None:
        port = conninfo_to_dict(self.dsn)["port"]
        self._pg_ctl("-l", str(self.workdir / "pg.log"), "-w", "-o",
                     f"-c listen_addresses=127.0.0.1 -p {port} -k {self.workdir}", "start")


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    bindir = Path(require("BG_TEST_PG_BIN"))
    work = Path(tempfile.mkdtemp(prefix="bg-outage-"))
    os.chmod(work, 0o755)  # noqa: S103 - the postgres account must reach its data directory
    try:
        with local_postgres(work / "pg") as dsn:
            if dsn is None:
                pytest.fail("no PostgreSQL binaries for a private cluster")
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("CREATE SCHEMA fleet; CREATE TABLE fleet.t (id int)")
            yield Cluster(dsn, work / "pg", bindir)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _wait_for(what: str, check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    pytest.fail(f"{what}: not within {timeout:.0f} s")


def _role_exists(dsn: str, role: str) -> bool:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() \
            is not None


def test_a_target_down_at_expiry_is_retried_alerted_and_cleaned_when_back(cluster, tmp_path):
    state = tmp_path / "broker"
    db_url = f"sqlite:///{state / 'broker.db'}"
    env = {"FLEET_TARGET_DSN": cluster.dsn, "BREAKGLASS_DRIFT_INTERVAL": "3600"}
    with broker_process("serve", state, db_url, env) as broker, httpx.Client(
        base_url=str(broker.url), timeout=10
    ) as api:
        token = api.post("/v1/dev/token", json={"username": "uma"}).json()["access_token"]
        api.headers["Authorization"] = f"Bearer {token}"
        created = api.post("/v1/requests", json={"roles": ["fleet-read"], "incident": "FLEET-7",
                                                  "reason": "recovery", "ttl": "5s"})
        assert created.status_code == 201, created.text
        request = created.json()
        request_id, role = request["id"], request["grants"][0]["target_ref"]
        secret = api.post(f"/v1/requests/{request_id}/credentials").json()["credentials"][0]
        with psycopg.connect(secret["dsn"]) as conn:
            conn.execute("SELECT count(*) FROM fleet.t")

        cluster.stop()  # before the grant expires
        expires_at = datetime.fromisoformat(request["expires_at"])
        assert datetime.now(UTC) < expires_at, "the target went down too late for this test"

        def pending() -> dict[str, Any] | None:
            body: dict[str, Any] = api.get(f"/v1/requests/{request_id}").json()
            grant = body["grants"][0]
            return body if grant["state"] == "revocation_pending" else None

        shown = _wait_for("revocation_pending after expiry", pending, 15)
        assert shown["state"] == "revoking"
        assert "postgres target fleet-db" in shown["grants"][0]["last_error"]

        def alerts() -> list[dict[str, Any]]:
            events = api.get("/v1/incidents/FLEET-7/timeline").json()
            return [e for e in events if e["action"] == "grant:revocation:failed"]

        alert = _wait_for("an alert event", alerts, 5)[0]
        assert alert["outcome"] == "error"
        assert alert["payload"]["alert"] is True

        time.sleep(8)  # retries fail meanwhile, 1 s, 2 s, 4 s apart; the next waits 8 s
        engine = make_engine(db_url)
        with engine.connect() as conn:
            attempts, retry_at = conn.execute(
                select(t.requests.c.attempts, t.requests.c.next_attempt_at)
                .where(t.requests.c.id == request_id)).one()
        engine.dispose()
        assert attempts >= 3, "retried while the target was down"
        assert len(alerts()) == 1, "alerted once, not at every retry"

        cluster.start()
        back = time.monotonic()
        retry_in = (retry_at.replace(tzinfo=UTC) - datetime.now(UTC)).total_seconds()

        def ended() -> dict[str, Any] | None:
            body: dict[str, Any] = api.get(f"/v1/requests/{request_id}").json()
            return body if body["state"] == "expired" else None

        final = _wait_for("the request to end after the target came back", ended,
                          RETRY_CAP.total_seconds() + 5)
        took = time.monotonic() - back
        assert took <= max(retry_in, 0) + 3, (took, retry_in)  # at the next scheduled retry
        assert took <= RETRY_CAP.total_seconds()
        assert final["grants"][0]["state"] == "expired"
        assert final["grants"][0]["last_error"] is None
        assert not _role_exists(cluster.dsn, role), "the role is dropped"
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(secret["dsn"], connect_timeout=5).close()
        actions = [e["action"] for e in api.get("/v1/incidents/FLEET-7/timeline").json()]
        assert actions.count("grant:credential:expired") == 1
        assert actions.count("grant:revocation:failed") == 1
        print(f"\ntarget outage: {attempts} failed attempts; credential gone {took:.1f} s after "
              f"the target came back (next retry was due in {retry_in:.1f} s; cap "
              f"{RETRY_CAP.total_seconds():.0f} s)")
