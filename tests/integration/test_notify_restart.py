"""A real broker process tells approvers over a webhook, and a kill -9 loses nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from tests.ops_harness import ENV, WebhookReceiver, catalog_text, running_broker
from tests.services import require


@pytest.fixture
def target_dsn() -> Iterator[str]:
    admin = require("BG_TEST_PG_ADMIN_DSN")
    name = "bg_notify_" + uuid.uuid4().hex[:8]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = admin.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA vectors")
        conn.execute("CREATE TABLE vectors.jobs (id int primary key, status text)")
        conn.execute("CREATE TABLE vectors.items (id int primary key, v text)")
    yield dsn
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    found = WebhookReceiver().start()
    yield found
    found.stop()


@pytest.fixture
def setup(tmp_path: Path, receiver: WebhookReceiver, target_dsn: str) -> dict[str, Any]:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(catalog_text(None, hook_url=receiver.url + "/hook",
                                    slack_url=receiver.url + "/slack"))
    return {"catalog": catalog, "state": tmp_path / "state", "db": tmp_path / "broker.db",
            "env": {**os.environ, **ENV, "TEST_TARGET_DSN": target_dsn,
                    "BREAKGLASS_STATE_DIR": str(tmp_path / "state"),
                    "BREAKGLASS_ANCHOR_DIR": str(tmp_path / "anchor")}}


@contextmanager
def broker(setup: dict[str, Any]) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    with running_broker(setup["catalog"], setup["db"], setup["env"],
                        setup["state"].with_suffix(".log")) as found:
        yield found


def login(url: str, user: str) -> dict[str, str]:
    token = httpx.post(url + "/v1/dev/token", json={"username": user}).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def ask(url: str, incident: str) -> str:
    response = httpx.post(url + "/v1/requests", headers=login(url, "uma"), json={
        "roles": ["embeddings-requeue"], "incident": incident, "reason": "recovery"})
    assert response.status_code == 201, response.text
    rid: str = response.json()["id"]
    return rid


def topic(name: str, request_id: str):
    return lambda r: r.doc.get("topic") == name and r.doc.get("request_id") == request_id


def test_approvers_hear_of_a_request_within_two_seconds_and_of_each_other(setup, receiver):
    with broker(setup) as (url, _):
        started = time.time()
        rid = ask(url, "SEV-6001")
        asked = receiver.wait_for(topic("approval.requested", rid))
        first = asked.at - started
        assert first < 2.0
        assert asked.doc["recipients"] == ["vera", "wim"]
        started = time.time()
        approved = httpx.post(f"{url}/v1/requests/{rid}/approvals", headers=login(url, "vera"),
                              json={"comment": "go"}, timeout=30)
        assert approved.json()["state"] == "active", approved.text
        told = receiver.wait_for(topic("approval.added", rid))
        follow_up = told.at - started
        assert follow_up < 2.0
        assert (told.doc["recipients"], told.doc["acted_by"]) == (["wim"], "vera")
        revoked = httpx.post(f"{url}/v1/requests/{rid}/revocations", headers=login(url, "uma"),
                             json={"reason": "done"}, timeout=30)
        assert revoked.json()["state"] == "revoked", revoked.text
        ended = receiver.wait_for(topic("request.ended", rid))
        assert ended.doc["recipients"] == ["vera", "wim"]
        assigned = receiver.wait_for(topic("review.assigned", rid))
        assert assigned.doc["recipients"] == ["wim"]
        print(f"\nnotification latency through a real broker: {first:.3f} s (request), "
              f"{follow_up:.3f} s (follow-up, from the approval call, activation included)")


def test_a_broker_killed_between_event_and_delivery_delivers_after_restart(setup, receiver):
    receiver.mode = "hang"  # the first delivery is on the wire when the broker dies
    with broker(setup) as (url, proc):
        rid = ask(url, "SEV-6002")
        deadline = time.monotonic() + 5
        while receiver.hung == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        tried = receiver.hung
        assert tried >= 1
    receiver.mode = "ok"
    restarted = time.time()
    with broker(setup):
        asked = receiver.wait_for(topic("approval.requested", rid), timeout=30)
        assert int(asked.headers["X-Breakglass-Attempt"]) == tried + 1
        assert asked.doc["recipients"] == ["vera", "wim"]
        print(f"\ndelivered {asked.at - restarted:.1f} s after the restart (lease expiry)")
    assert [r.doc["request_id"] for r in receiver.received
            if r.doc["topic"] == "approval.requested"] == [rid]
