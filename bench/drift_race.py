"""Drift against live activations: no credential the broker issued is revoked by the sweep.

``--clients`` threads issue auto-approved grants for ``--seconds`` through brokers on
one PostgreSQL store and one real PostgreSQL target, while the drift sweep runs every
``--interval`` seconds (a separate broker of the same deployment, as in a fleet). It
prints how many credentials were issued, how many the sweep revoked (orphans), how many
issued credentials are no longer on the target at the end, and the sweeps run.
Target: revoked by drift 0, issued but gone 0.

Needs the test services (``scripts/services.sh env``: ``BG_TEST_PG_ADMIN_DSN``). Roles
are cluster-wide and that cluster is shared, so the run uses a marker prefix of its own
(``--prefix``): another broker's sweep or a test's clean-up on the same cluster that
still acted on the bare ``bg_`` prefix would otherwise count here.

    python bench/drift_race.py [--clients 32] [--seconds 60] [--interval 2] [--prefix P]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql

from breakglass.bootstrap import deployment_ownership
from breakglass.catalog.loader import load_catalog
from breakglass.connectors.postgres import PostgresConnector
from breakglass.domain.model import Principal, PrincipalKind, RequestState
from breakglass.service import drift
from breakglass.service.broker import Broker
from breakglass.service.ports import SecretBox, SystemClock
from breakglass.storage.migrate import upgrade
from breakglass.storage.uow import UnitOfWork, make_engine

CATALOG = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "catalog.yaml"
CONNECTORS = 8  # admin connections to the target the clients share


@contextmanager
def database(admin: str, prefix: str, *setup: str) -> Iterator[str]:
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = admin.rsplit("/", 1)[0] + "/" + name
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for statement in setup:
                conn.execute(statement.encode())
        yield dsn
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def run(clients: int, seconds: float, interval: float, prefix: str) -> int:
    admin = os.environ.get("BG_TEST_PG_ADMIN_DSN")
    if not admin:
        sys.exit("set BG_TEST_PG_ADMIN_DSN (eval \"$(scripts/services.sh env)\")")
    with database(admin, "bg_bench_store") as store, \
            database(admin, "bg_bench_target", "CREATE SCHEMA vectors",
                     "CREATE TABLE vectors.items (id int)") as target:
        engine = make_engine(store)
        upgrade(engine)
        clock = SystemClock()
        loaded = load_catalog(CATALOG, env={"TEST_TARGET_DSN": target})
        ownership = deployment_ownership(engine, prefix, clock)
        box = SecretBox(SecretBox.new_key())
        connectors = [PostgresConnector("embeddings-db", {"dsn": target}, ownership=ownership)
                      for _ in range(CONNECTORS + 1)]
        brokers = [Broker(policy=loaded.policy, uow=lambda: UnitOfWork(engine),
                          connectors={"embeddings-db": c}, clock=clock, secrets_box=box)
                   for c in connectors[:CONNECTORS]]
        sweeper = {"embeddings-db": connectors[-1]}
        uma = Principal("uma", PrincipalKind.HUMAN, frozenset({"team:ml-serving", "responders"}),
                        True, datetime.now(UTC))
        issued: list[str] = []
        failures: list[str] = []
        revoked_by_drift: list[str] = []
        sweeps = [0]
        lock = threading.Lock()
        stop = threading.Event()

        def client(i: int) -> None:
            broker = brokers[i % CONNECTORS]
            while not stop.is_set():
                try:
                    view = broker.request_access(uma, ["embeddings-read"], incident="SEV-9000",
                                                 reason="recovery")
                except Exception as exc:  # noqa: BLE001 - counted and printed
                    with lock:
                        failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                if view.request.state is RequestState.ACTIVE:
                    with lock:
                        issued.extend(g.target_ref for g in view.grants)

        def sweep() -> None:
            memory = drift.DriftMemory()
            while not stop.wait(interval):
                report = drift.sweep(lambda: UnitOfWork(engine), sweeper, clock, memory)
                with lock:
                    revoked_by_drift.extend(report.orphans_revoked)
                    sweeps[0] += 1

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        threads.append(threading.Thread(target=sweep))
        started = time.monotonic()
        for thread in threads:
            thread.start()
        time.sleep(seconds)
        stop.set()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        on_target = set(connectors[-1].list_managed())
        gone = [ref for ref in issued if ref not in on_target]
        with UnitOfWork(engine) as uow:
            alerted = sum(1 for e in uow.events_since(0) if e.action == "drift:orphan:revoked")
        for ref in on_target:  # the target database goes; its roles are cluster-wide
            if ownership.owns(ref):
                connectors[-1].revoke(ref)
        for c in connectors:
            c.close()
        engine.dispose()
    print(f"clients {clients}, {elapsed:.0f} s, {sweeps[0]} sweeps every {interval:g} s, "
          f"prefix {prefix}")
    print(f"issued            {len(issued)} ({len(issued) / elapsed:.0f}/s)")
    print(f"revoked by drift  {len(revoked_by_drift)} (orphan alerts {alerted})")
    print(f"issued but gone   {len(gone)}" + (f" (first: {gone[0]})" if gone else ""))
    print(f"client errors     {len(failures)}" + (f" (first: {failures[0]})" if failures else ""))
    return 1 if revoked_by_drift or gone or alerted else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--prefix", default=f"bgb{uuid.uuid4().hex[:4]}_")
    args = parser.parse_args()
    sys.exit(run(args.clients, args.seconds, args.interval, args.prefix))


if __name__ == "__main__":
    main()
