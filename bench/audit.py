"""Audit log writes and checkpoints on the real stores.

Prints append throughput on SQLite (synchronous=FULL, one transaction per
event, as the broker writes them) and on PostgreSQL with concurrent writers
(each event its own transaction, gapless indices under a row lock), and the
latency of signing and anchoring a checkpoint. Merkle proof sizes and
1,000,000-event verification are in ``bench/audit_merkle.py``.

    python bench/audit.py [--events 3000] [--writers 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy import Engine, select

from breakglass.bootstrap import build_audit
from breakglass.service.ports import SecretBox, SystemClock
from breakglass.settings import Settings
from breakglass.storage import tables as t
from breakglass.storage.migrate import upgrade
from breakglass.storage.uow import UnitOfWork, make_engine

CATALOG = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "catalog.yaml"


def append(engine: Engine, i: int) -> None:
    with UnitOfWork(engine) as uow:
        uow.events.append(ts=datetime.now(UTC), actor="bench", action="bench:event:appended",
                          request_id=f"r-{i:012d}", incident="SEV-1000", zone="A",
                          payload={"i": i, "note": "synthetic"})


def throughput(engine: Engine, events: int, writers: int) -> float:
    per_writer = events // writers
    start = time.perf_counter()

    def work(w: int) -> None:
        for j in range(per_writer):
            append(engine, w * per_writer + j)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(writers)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return per_writer * writers / (time.perf_counter() - start)


def gapless(engine: Engine) -> bool:
    with engine.connect() as conn:
        idx = [r.idx for r in conn.execute(select(t.events.c.idx).order_by(t.events.c.idx))]
    return idx == list(range(len(idx)))


def checkpoint_latency(engine: Engine, state: Path, rounds: int = 100) -> list[float]:
    settings = Settings(catalog=CATALOG, db_url="unused", dev=True, state_dir=state,
                        secret_key=SecretBox.new_key(), audit_key_file=state / "audit.key",
                        anchor_dir=state / "anchors")
    audit = build_audit(settings, engine, "bench", SystemClock())
    samples = []
    for i in range(rounds):
        for j in range(5):
            append(engine, 10_000_000 + i * 5 + j)
        start = time.perf_counter()
        audit.checkpoint()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--writers", type=int, default=8)
    args = parser.parse_args()
    admin = os.environ.get("BG_TEST_PG_ADMIN_DSN")
    if not admin:
        sys.exit("BG_TEST_PG_ADMIN_DSN is not set: run scripts/services.sh start first")
    state = Path(tempfile.mkdtemp(prefix="bg-audit-bench-"))

    sqlite = make_engine(f"sqlite:///{state / 'audit.db'}")
    upgrade(sqlite)
    rate_sqlite = throughput(sqlite, args.events, 1)
    rate_sqlite_mt = throughput(sqlite, args.events, 4)
    name = "bg_audit_" + uuid.uuid4().hex[:8]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    pg = make_engine(admin.rsplit("/", 1)[0] + "/" + name)
    upgrade(pg)
    rate_pg = throughput(pg, args.events, args.writers)
    print(f"audit appends ({args.events} events, one transaction each)")
    print(f"  SQLite, synchronous=FULL, 1 writer        {rate_sqlite:8.0f} /s   (target >= 1000)")
    print(f"  SQLite, synchronous=FULL, 4 writers       {rate_sqlite_mt:8.0f} /s")
    print(f"  PostgreSQL, {args.writers} concurrent writers        {rate_pg:8.0f} /s   "
          "(target >= 2000)")
    print(f"  indices gapless: SQLite {gapless(sqlite)}, PostgreSQL {gapless(pg)}")
    for label, engine in (("SQLite", sqlite), ("PostgreSQL", pg)):
        samples = checkpoint_latency(engine, state / label)
        print(f"  checkpoint (sign + anchor) on {label:<10} P50 {statistics.median(samples):6.1f} "
              f"ms  P99 {pct(samples, 0.99):6.1f} ms   (target P99 <= 1000 ms)")
    sqlite.dispose()
    pg.dispose()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


if __name__ == "__main__":
    main()
