"""Activation overhead: request -> usable credential, self-approved zone A, real PostgreSQL.

Runs the real broker (catalog, SQLite store with synchronous=FULL, HTTP app)
in-process against the real PostgreSQL target from ``scripts/services.sh``,
and prints P50/P95 of the whole activation, of the target's share (the
connector minting the role) and of the broker's own overhead (the rest).

    python bench/activation.py [--n 200] [--db URL]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from fastapi.testclient import TestClient
from psycopg import sql

from breakglass.api.app import create_app
from breakglass.bootstrap import bootstrap
from breakglass.connectors import Connector, GrantSpec, IssuedCredential
from breakglass.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
CATALOG = ROOT / "tests" / "fixtures" / "catalog.yaml"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Timed:
    """Wraps a connector and records how long each grant took on the target."""

    def __init__(self, inner: Connector) -> None:
        self.inner = inner
        self.last = 0.0

    def grant(self, spec: GrantSpec) -> IssuedCredential:
        start = time.perf_counter()
        try:
            return self.inner.grant(spec)
        finally:
            self.last = time.perf_counter() - start

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--db", default=None, help="broker store (default: SQLite file)")
    args = parser.parse_args()
    admin = os.environ.get("BG_TEST_PG_ADMIN_DSN")
    if not admin:
        sys.exit("BG_TEST_PG_ADMIN_DSN is not set: run scripts/services.sh start first")
    name = "bg_bench_" + uuid.uuid4().hex[:8]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    target = admin.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA vectors; CREATE TABLE vectors.items (id int)")
    os.environ["TEST_TARGET_DSN"] = target
    state = Path(tempfile.mkdtemp(prefix="bg-bench-"))
    db = args.db or f"sqlite:///{state / 'broker.db'}"
    container = bootstrap(Settings.from_env(CATALOG, db_url=db, dev=True, state_dir=state))
    container.settings = dataclasses.replace(container.settings, run_expiry=False)
    timed = Timed(container.connectors["embeddings-db"])
    container.connectors["embeddings-db"] = timed  # type: ignore[assignment]
    container.broker._connectors = container.connectors
    token, _ = container.dev_login("uma")
    headers = {"Authorization": f"Bearer {token}"}
    totals, target_share = [], []
    ids = []
    with TestClient(create_app(container)) as client:
        for i in range(args.n + 10):
            start = time.perf_counter()
            r = client.post("/v1/requests", headers=headers, json={
                "roles": ["embeddings-read"], "incident": "SEV-9000", "reason": "recovery"})
            r.raise_for_status()
            rid = r.json()["id"]
            c = client.post(f"/v1/requests/{rid}/credentials", headers=headers)
            c.raise_for_status()
            elapsed = time.perf_counter() - start
            ids.append(rid)
            if i >= 10:  # warm-up excluded
                totals.append(elapsed * 1000)
                target_share.append(timed.last * 1000)
        for rid in ids:
            client.post(f"/v1/requests/{rid}/revocations", headers=headers, json={})
    overhead = [t - g for t, g in zip(totals, target_share, strict=True)]
    print(f"activations: {len(totals)} (store: {db.split(':')[0]}, target: real PostgreSQL)")
    for label, values in (("request -> usable credential", totals),
                          ("target (CREATE ROLE + GRANTs)", target_share),
                          ("broker overhead", overhead)):
        print(f"  {label:<30} P50 {statistics.median(values):7.1f} ms   "
              f"P95 {pct(values, 0.95):7.1f} ms   max {max(values):7.1f} ms")
    print(f"  target P95 < 100 ms for broker overhead: "
          f"{'met' if pct(overhead, 0.95) < 100 else 'NOT met'}")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


if __name__ == "__main__":
    main()
