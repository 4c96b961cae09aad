"""Through the HTTP API: closing an incident while its grants expire answers 2xx, always.

A real broker process (its own expiry loop, real clock), a real PostgreSQL
target. Requests are timed to expire right as an approver closes their
incident and the requester revokes them: every call succeeds, each grant is
ended once, and no role is left on the target.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import httpx
import psycopg
import pytest


def login(url: str, user: str) -> dict[str, str]:
    token = httpx.post(url + "/v1/dev/token", json={"username": user}).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def wait_until_final(url: str, headers: dict[str, str], rid: str) -> dict[str, object]:
    for _ in range(100):
        body: dict[str, object] = httpx.get(f"{url}/v1/requests/{rid}", headers=headers).json()
        if body["state"] in ("expired", "revoked"):
            return body
        time.sleep(0.1)
    pytest.fail(f"request {rid} never ended: {body}")


@pytest.mark.parametrize("offset", [-0.05, 0.0, 0.03, 0.15])
def test_closing_an_incident_while_its_grants_expire_answers_2xx(broker_server, target_dsn,
                                                                 offset):
    url = broker_server
    uma, vera = login(url, "uma"), login(url, "vera")
    incident = f"SEV-{uuid.uuid4().int % 10**6:06d}"
    created = [httpx.post(url + "/v1/requests", headers=uma, timeout=30, json={
        "roles": ["embeddings-read"], "incident": incident, "reason": "recovery", "ttl": "3s"})
        for _ in range(4)]
    assert all(r.status_code == 201 for r in created), [r.text for r in created]
    bodies = [r.json() for r in created]
    assert all(b["state"] == "active" for b in bodies)
    expires = max(datetime.fromisoformat(b["expires_at"]) for b in bodies)
    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds() + offset))
    with ThreadPoolExecutor(max_workers=len(bodies) + 2) as pool:
        closes = [pool.submit(httpx.post, f"{url}/v1/incidents/{incident}/close",
                              headers=vera, timeout=30) for _ in range(2)]
        revokes = [pool.submit(httpx.post, f"{url}/v1/requests/{b['id']}/revocations",
                               headers=uma, json={"reason": "done"}, timeout=30)
                   for b in bodies]
        answers = [f.result() for f in closes + revokes]
    assert [a.status_code for a in answers] == [200] * len(answers), [a.text for a in answers]
    refs = []
    for body in bodies:
        done = wait_until_final(url, uma, str(body["id"]))
        grants = done["grants"]
        assert isinstance(grants, list)
        assert [g["state"] for g in grants] == [done["state"]]
        refs.append(grants[0]["target_ref"])
    timeline = httpx.get(f"{url}/v1/incidents/{incident}/timeline", headers=vera).json()
    for body in bodies:
        mine = [e["action"] for e in timeline if e.get("request_id") == body["id"]]
        assert mine.count("request:revocation:started") == 1, mine
        assert mine.count("grant:credential:revoked") + mine.count(
            "grant:credential:expired") == 1, mine
        assert mine.count("request:ended") == 1, mine
    with psycopg.connect(target_dsn, autocommit=True) as conn:
        left = conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)",
                            (refs,)).fetchall()
    assert left == []
