"""A flood of bad tokens against a production broker: every call refused, the log bounded.

The broker records the first refusals from an address one by one (with the
address), counts the rest, and writes the count when the window ends or the
broker stops, so the log grows by a bounded number of events however many
requests an anonymous caller sends, and no refusal goes unaccounted for.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.oidc_fixtures import FIXTURES, running_broker
from tests.services import require

CATALOG = FIXTURES / "catalog_oidc.yaml"
REFUSED = "identity:token:refused"
COUNTED = "identity:refusals:counted"


def rows(db: Path, action: str) -> list[dict[str, Any]]:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn:
        found = conn.execute("SELECT rule, payload, reason FROM events WHERE action = ? "
                             "ORDER BY idx", (action,)).fetchall()
    return [{"rule": r, "payload": json.loads(p), "reason": why} for r, p, why in found]


def test_a_flood_of_bad_tokens_is_refused_and_recorded_within_the_budget(tmp_path: Path) -> None:
    env = {"BG_TEST_OIDC_ISSUER": require("BG_TEST_OIDC_ISSUER"),
           "TEST_TARGET_DSN": "postgresql://nobody@127.0.0.1:1/none",
           "BREAKGLASS_ANON_REFUSALS_PER_ADDRESS": "3",
           "BREAKGLASS_ANON_REFUSALS_PER_MINUTE": "100"}
    garbage = [secrets.token_urlsafe(24) for _ in range(12)]
    with running_broker(CATALOG, tmp_path, env) as broker, httpx.Client(timeout=10) as http:
        for token in garbage:
            answer = http.get(broker.url + "/v1/requests",
                              headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == 401
            assert answer.json()["rule"].startswith("identity.")
        for _ in range(2):  # no token at all is a refusal too
            answer = http.get(broker.url + "/v1/requests")
            assert (answer.status_code, answer.json()["rule"]) == (401, "identity.token_missing")
        recorded = rows(broker.db, REFUSED)
        assert len(recorded) == 3
        assert {r["payload"]["source"] for r in recorded} == {"127.0.0.1"}
        assert rows(broker.db, COUNTED) == [], "counted until the window ends"
        db, log = broker.db, broker.log
    # the broker stopped: what it counted is written before it exits
    summaries = rows(db, COUNTED)
    assert {s["rule"] for s in summaries} >= {"identity.token_missing"}
    assert sum(s["payload"]["counted"] for s in summaries) == 11
    assert all(s["payload"]["sources"] == {"127.0.0.1": s["payload"]["counted"]}
               for s in summaries)
    assert summaries[0]["payload"]["alert"] is True
    written = log.read_text() + json.dumps(rows(db, REFUSED) + summaries)
    assert not any(token in written for token in garbage)
