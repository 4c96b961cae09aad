"""Audit log writes and checkpoints on the real stores.

Prints append throughput on SQLite (synchronous=FULL) and on PostgreSQL
with concurrent writers, for the broker's two paths:

- with a state change: the event is written in the transaction of the change
  (here a read of the request row, then the event), one transaction each;
  on PostgreSQL as threads of one process and as separate processes (a fleet
  of brokers sharing one database), and with the event observers ``serve``
  registers: for an event they pass over; for a revocation, which the
  late-revocation rule judges by the grant's expiry the event carries (here on
  time: passed over); and for a zone-C activation, which
  raises an alert (composed before the log head is taken; the head is then held
  while the alert is written to the outbox with the event's index, and the
  commit follows);
- event only (refusals, logins, findings): concurrent writers' events share
  a transaction (group commit); each writer returns once its event is committed.

and the latency of signing and anchoring a checkpoint. Indices are checked
gapless afterwards. Merkle proof sizes and
1,000,000-event verification are in ``bench/audit_merkle.py``.

PostgreSQL is measured on a private cluster with the server's durable defaults
(fsync and synchronous_commit on: each commit waits for its WAL flush), started
here and removed afterwards; ``--pg-admin-dsn`` measures an existing server
instead. The settings in force are printed with the figures.

    python bench/audit.py [--events 3000] [--writers 8] [--pg-admin-dsn DSN]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
import multiprocessing
import os
import queue
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import structlog
from psycopg import sql
from sqlalchemy import Engine, bindparam, select

from breakglass.bootstrap import build_audit
from breakglass.catalog.loader import parse_catalog
from breakglass.demo import local_postgres
from breakglass.domain.events import EventTag
from breakglass.notify.operations import build_operations
from breakglass.service.ports import SecretBox, SystemClock
from breakglass.settings import Settings
from breakglass.storage import tables as t
from breakglass.storage.migrate import upgrade
from breakglass.storage.uow import UnitOfWork, make_engine

CATALOG = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "catalog.yaml"


# a webhook sink, so alerts are written to the outbox as a configured broker writes them
SINK = """
alerts:
  sinks:
    - {type: webhook, name: soc, url: "http://127.0.0.1:9/hook", secret_env: BENCH_HOOK_KEY}
"""

# events the observers of `serve` look at: (action, zone); a revocation carries its grant
OBSERVED = {
    "an event they pass over": ("bench:event:appended", "A"),
    "a revocation on time": (str(EventTag.GRANT_REVOKED), "A"),
    "a zone-C activation (alerted)": (str(EventTag.REQUEST_ACTIVE), "C"),
}


# the read a state change starts with; built once, so its construction is not timed
READ = select(t.requests.c.state).where(t.requests.c.id == bindparam("id"))


def append(engine: Engine, i: int, change: bool = False,
           action: str = "bench:event:appended", zone: str = "A") -> None:
    now = datetime.now(UTC)
    revoked = action == EventTag.GRANT_REVOKED
    payload: dict[str, Any] = {"i": i, "note": "synthetic"}
    if revoked:  # as the broker writes it: with the grant's expiry, here still ahead
        payload["expires_at"] = (now + timedelta(minutes=30)).isoformat()
    with UnitOfWork(engine) as uow:
        if change:  # what the broker does first: read the row it changes
            uow.connection.execute(READ, {"id": f"r-{i:012d}"}).first()
        uow.events.append(ts=now, actor="bench", action=action,
                          grant_id=f"g-{i:012d}" if revoked else None,
                          request_id=f"r-{i:012d}", incident="SEV-1000", zone=zone,
                          payload=payload)


def throughput(engine: Engine, events: int, writers: int, change: bool) -> float:
    per_writer = events // writers
    base = next(_numbers)
    start = time.perf_counter()

    def work(w: int) -> None:
        for j in range(per_writer):
            append(engine, base + w * per_writer + j, change)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(writers)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return per_writer * writers / (time.perf_counter() - start)


def _process_writer(url: str, first: int, count: int, ready: Any, done: Any,
                    observed: tuple[str, str] | None) -> None:
    engine = make_engine(url)
    if observed is not None:  # what `serve` registers: reviews, notifications, alerts, metrics
        # the alerts are logged too: not thousands of lines into the figures
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
        env = {"TEST_TARGET_DSN": "postgresql://bench@127.0.0.1:1/x", "BENCH_HOOK_KEY": "k"}
        loaded = parse_catalog(CATALOG.read_text() + SINK, "bench", env)
        build_operations(loaded, engine, SystemClock(), env)  # delivery is not started
    action, zone = observed or ("bench:event:appended", "A")
    append(engine, first, True, action, zone)  # connect and warm up before the clock starts
    ready.wait()  # the clock starts once every writer is here
    for i in range(first + 1, first + 1 + count):
        append(engine, i, True, action, zone)
    done.put(count)
    engine.dispose()


def throughput_processes(url: str, events: int, writers: int,
                         observed: tuple[str, str] | None = None) -> float:
    per_writer = events // writers
    ctx = multiprocessing.get_context("spawn")
    # started processes import and connect first: the clock waits for the last of them
    ready, done = ctx.Barrier(writers + 1), ctx.Queue()
    base = next(_numbers)
    procs = [ctx.Process(target=_process_writer,
                         args=(url, base + w * (per_writer + 1), per_writer, ready, done, observed))
             for w in range(writers)]
    for proc in procs:
        proc.start()
    try:
        ready.wait(timeout=300)
    except threading.BrokenBarrierError:
        ready.abort()
        sys.exit("a writer process did not get ready; its traceback is above")
    start = time.perf_counter()
    total = 0
    for _ in procs:
        while True:
            try:
                total += done.get(timeout=1)
                break
            except queue.Empty:
                if any(proc.exitcode not in (None, 0) for proc in procs):
                    sys.exit("a writer process failed; its traceback is above")
    elapsed = time.perf_counter() - start
    for proc in procs:
        proc.join()
    return total / elapsed


_numbers = itertools.count(0, 1_000_000)  # request ids distinct across runs


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


def durability(admin: str) -> str:
    with psycopg.connect(admin) as conn:
        found = {name: conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()
                 for name in ("server_version", "fsync", "synchronous_commit", "wal_sync_method")}
    return ", ".join(f"{name}={row[0] if row else '?'}" for name, row in found.items())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--pg-admin-dsn", help="measure this server instead of a private "
                        "cluster with durable defaults (it must allow CREATE DATABASE)")
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="bg-audit-bench-"))
    os.chmod(state, 0o755)  # noqa: S103 - the postgres account must reach the private cluster
    try:
        with contextlib.ExitStack() as stack:
            admin = args.pg_admin_dsn or stack.enter_context(local_postgres(state / "pg"))
            if not admin:
                sys.exit("no PostgreSQL binaries (initdb) found: pass --pg-admin-dsn")
            run(args, admin, state)
    finally:
        shutil.rmtree(state, ignore_errors=True)


def run(args: argparse.Namespace, admin: str, state: Path) -> None:

    sqlite = make_engine(f"sqlite:///{state / 'audit.db'}")
    upgrade(sqlite)
    rate_sqlite = throughput(sqlite, args.events, 1, change=True)
    rate_sqlite_mt = throughput(sqlite, args.events, 4, change=True)
    rate_sqlite_group = throughput(sqlite, args.events, args.writers, change=False)
    name = "bg_audit_" + uuid.uuid4().hex[:8]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = admin.rsplit("/", 1)[0] + "/" + name
    pg = make_engine(url)
    upgrade(pg)
    rate_pg = throughput(pg, args.events, args.writers, change=True)
    rate_pg_procs = {n: throughput_processes(url, args.events, n) for n in (2, 4, args.writers)}
    rate_pg_observed = {label: throughput_processes(url, args.events, 2, observed=observed)
                        for label, observed in OBSERVED.items()}
    rate_pg_group = throughput(pg, args.events, args.writers, change=False)
    print(f"audit appends ({args.events} events per line; targets: SQLite >= 1000/s, "
          "PostgreSQL >= 2000/s)")
    print(f"  PostgreSQL: {durability(admin)}")
    print("  with a state change, one transaction each")
    print(f"    SQLite, synchronous=FULL, 1 writer               {rate_sqlite:8.0f} /s")
    print(f"    SQLite, synchronous=FULL, 4 writers              {rate_sqlite_mt:8.0f} /s")
    print(f"    PostgreSQL, {args.writers} writer threads in 1 process     {rate_pg:8.0f} /s")
    for n, rate in rate_pg_procs.items():
        print(f"    PostgreSQL, {n} writer processes                 {rate:8.0f} /s")
    print("    PostgreSQL, 2 writer processes, with the observers of `serve`:")
    for label, rate in rate_pg_observed.items():
        print(f"      {label:<46}  {rate:8.0f} /s")
    print("  event only, group commit")
    print(f"    SQLite, synchronous=FULL, {args.writers} writers              "
          f"{rate_sqlite_group:8.0f} /s")
    print(f"    PostgreSQL, {args.writers} writer threads in 1 process     {rate_pg_group:8.0f} /s")
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
