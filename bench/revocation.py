"""Revocation lag: how long a credential still works after its ``expires_at``.

A real broker process (``breakglass serve``, its expiry loop sleeping until the
next deadline) on a PostgreSQL store, with a real PostgreSQL target on a
private cluster started for each run. The bench mints ``--active`` grants
through the service layer: all but ``--measured`` of them live for an hour (so
the broker holds that many active grants throughout), and the measured ones
expire one after another at ``--rate`` per second, so the loop revokes
continuously. Grants are spread over several catalog roles, each on a table of its own:
PostgreSQL keeps a table's privileges in one catalog row that cannot grow past
8 kB, which caps one table at about 2,000 grantees. The lag of each is the
broker's own record in its
``grant:credential:expired`` event (``lag_ms``): from ``expires_at`` to the
moment the target finished dropping the role. It prints P50/P95/P99 per run
and the broker process's resident memory while it held the active grants.
Targets: P99 under 1 s with 10,000 active grants; under 250 MB RSS.

    python bench/revocation.py [--active 1000,10000] [--measured 1000] [--rate 20]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
from psycopg import sql
from sqlalchemy import Engine, func, select

from breakglass.bootstrap import deployment_ownership
from breakglass.catalog.loader import load_catalog
from breakglass.connectors import MARKER_PREFIX
from breakglass.connectors.postgres import PostgresConnector
from breakglass.demo import local_postgres
from breakglass.domain.model import Principal, PrincipalKind, RequestState
from breakglass.service.broker import Broker
from breakglass.service.ports import SecretBox, SystemClock
from breakglass.storage import tables as t
from breakglass.storage.migrate import upgrade
from breakglass.storage.uow import UnitOfWork, make_engine

BIN = Path(sys.executable).parent / "breakglass"
MINTERS = 8
MEASURED = "FLEET-2"  # the incident of the grants whose lag is measured
BACKGROUND = "FLEET-1"
PER_TABLE = 800  # grantees per table, well under PostgreSQL's ~2,000

CATALOG_HEAD = """\
version: 1
organization: revocation-bench
identity: {issuer: 'https://idp.bench.invalid', audience: breakglass}
incident: {id_pattern: '^FLEET-[0-9]+$'}
zones:
  A: {default_ttl: 5m, max_ttl: 2h, approvals: 0, self_approval: true}
  B: {default_ttl: 5m, max_ttl: 1h, approvals: 1}
  C: {default_ttl: 5m, max_ttl: 1h, approvals: 2}
directory:
  uma: {groups: [team:ml-serving, responders], mfa: true}
targets:
  fleet-db: {type: postgres, environment: prod, dsn: "${FLEET_TARGET_DSN}"}
roles:
"""


def need(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        sys.exit(f"{name} is not set: run scripts/services.sh start and load its env first")
    return value


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@contextmanager
def store_database() -> Iterator[Engine]:
    admin = need("BG_TEST_PG_ADMIN_DSN")
    name = "bg_bench_rev_" + uuid.uuid4().hex[:8]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    engine = make_engine(admin.rsplit("/", 1)[0] + "/" + name)
    upgrade(engine)
    try:
        yield engine
    finally:
        engine.dispose()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@dataclass
class Target:
    dsn: str
    catalog: Path
    roles: list[str]


@contextmanager
def target_cluster(tables: int) -> Iterator[Target]:
    """A private PostgreSQL cluster (the demo's), so 10,000 roles touch nothing shared, and
    a catalog with one role per table there."""
    work = Path(tempfile.mkdtemp(prefix="bg-bench-revocation-"))
    os.chmod(work, 0o755)  # noqa: S103 - the postgres account must reach its data directory
    roles = [f"read-{k}" for k in range(tables)]
    catalog = work / "catalog.yaml"
    catalog.write_text(CATALOG_HEAD + "".join(
        f"  read-{k}: {{zone: A, target: fleet-db, requesters: [group:responders], "
        f"grant: {{privileges: [SELECT], tables: [s{k}.t]}}}}\n" for k in range(tables)))
    try:
        with local_postgres(work / "pg") as dsn:
            if dsn is None:
                sys.exit("no PostgreSQL binaries (initdb) found for the target cluster")
            with psycopg.connect(dsn, autocommit=True) as conn:
                for k in range(tables):
                    conn.execute(sql.SQL("CREATE SCHEMA {}; CREATE TABLE {} (id int)").format(
                        sql.Identifier(f"s{k}"), sql.Identifier(f"s{k}", "t")))
            yield Target(dsn, catalog, roles)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextmanager
def broker_process(db_url: str, target: Target) -> Iterator[subprocess.Popen[bytes]]:
    state = Path(tempfile.mkdtemp(prefix="bg-bench-broker-"))
    port = free_port()
    env = {**os.environ, "FLEET_TARGET_DSN": target.dsn, "BREAKGLASS_STATE_DIR": str(state),
           "BREAKGLASS_ANCHOR_DIR": f"{state}-anchor"}
    try:
        with (state / "broker.log").open("wb") as log, subprocess.Popen(
            [str(BIN), "serve", "--dev", "--catalog", str(target.catalog), "--db", db_url,
             "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
        ) as proc:
            try:
                for _ in range(300):
                    if proc.poll() is not None:
                        sys.exit("broker exited:\n" + (state / "broker.log").read_text())
                    try:
                        if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    time.sleep(0.1)
                yield proc
            finally:
                proc.terminate()
                proc.wait(timeout=60)
    finally:
        shutil.rmtree(state, ignore_errors=True)


@dataclass
class Minter:
    brokers: list[Broker]
    connectors: list[PostgresConnector]
    roles: list[str]
    minted: int = 0

    @classmethod
    def open(cls, engine: Engine, target: Target) -> Minter:
        loaded = load_catalog(target.catalog, env={"FLEET_TARGET_DSN": target.dsn})
        box = SecretBox(SecretBox.new_key())
        ownership = deployment_ownership(engine, MARKER_PREFIX, SystemClock())  # the store's
        connectors = [PostgresConnector("fleet-db", {"dsn": target.dsn}, ownership=ownership)
                      for _ in range(MINTERS)]
        brokers = [Broker(policy=loaded.policy, uow=lambda: UnitOfWork(engine),
                          connectors={"fleet-db": c}, clock=SystemClock(), secrets_box=box)
                   for c in connectors]
        return cls(brokers, connectors, target.roles)

    def close(self) -> None:
        for c in self.connectors:
            c.close()

    def mint(self, count: int, incident: str, expiry_of: list[datetime] | None = None,
             label: str = "") -> float:
        """Mint ``count`` grants (expiring at ``expiry_of[i]``, else in an hour); per second."""
        uma = Principal("uma", PrincipalKind.HUMAN,
                        frozenset({"team:ml-serving", "responders"}), True, datetime.now(UTC))
        done = [0]
        lock = threading.Lock()
        started = time.monotonic()
        first = self.minted
        self.minted += count

        def one(i: int) -> None:
            ttl = (timedelta(hours=1) if expiry_of is None
                   else expiry_of[i] - datetime.now(UTC))
            role = self.roles[(first + i) % len(self.roles)]
            view = self.brokers[i % MINTERS].request_access(
                uma, [role], incident=incident, reason="recovery", ttl=ttl)
            if view.request.state is not RequestState.ACTIVE:
                raise RuntimeError(f"not activated: {view.request.end_reason}")
            with lock:
                done[0] += 1
                if label and done[0] % 1000 == 0:
                    rate = done[0] / (time.monotonic() - started)
                    print(f"    {label}: {done[0]}/{count} minted ({rate:.0f}/s)", flush=True)

        with ThreadPoolExecutor(max_workers=MINTERS) as pool:
            list(pool.map(one, range(count)))
        return count / (time.monotonic() - started)


def count_in(engine: Engine, incident: str, state: RequestState) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(t.requests).where(
            t.requests.c.incident == incident, t.requests.c.state == state.value)).scalar_one())


def run(active: int, measured: int, rate: float) -> dict[str, float]:
    measured = min(measured, active)
    print(f"{active} active grants, {measured} of them expiring at {rate:g}/s:", flush=True)
    with ExitStack() as stack:
        engine = stack.enter_context(store_database())
        target = stack.enter_context(target_cluster(-(-(active + 1) // PER_TABLE)))
        db_url = engine.url.render_as_string(hide_password=False)
        proc = stack.enter_context(broker_process(db_url, target))
        idle_rss = rss_mb(proc.pid)
        minter = Minter.open(engine, target)
        stack.callback(minter.close)
        minter.mint(1, "FLEET-0")  # the audit log's first event, before any concurrency
        speed = minter.mint(active - measured, BACKGROUND, label="long-lived") \
            if active > measured else 40.0
        lead = measured / speed * 1.3 + 5  # time to mint the measured ones, and some
        start = datetime.now(UTC) + timedelta(seconds=lead)
        expiry = [start + timedelta(seconds=i / rate) for i in range(measured)]
        minter.mint(measured, MEASURED, expiry, label="measured")
        late = (datetime.now(UTC) - start).total_seconds()
        if late > 0:
            print(f"    (minting ran {late:.1f} s into the expiry window)")
        peak = rss_mb(proc.pid)
        deadline = time.monotonic() + lead + measured / rate + 120
        while time.monotonic() < deadline:
            peak = max(peak, rss_mb(proc.pid))
            if count_in(engine, MEASURED, RequestState.EXPIRED) == measured:
                break
            time.sleep(0.5)
        still_active = count_in(engine, BACKGROUND, RequestState.ACTIVE) + count_in(
            engine, MEASURED, RequestState.ACTIVE)
        peak = max(peak, rss_mb(proc.pid))
        with engine.connect() as conn:
            lags = [float(p["lag_ms"]) for (p,) in conn.execute(
                select(t.events.c.payload).where(
                    t.events.c.incident == MEASURED,
                    t.events.c.action == "grant:credential:expired"))]
            orphans = conn.execute(select(func.count()).select_from(t.events).where(
                t.events.c.action == "drift:orphan:revoked")).scalar_one()
    if len(lags) < measured:
        print(f"    only {len(lags)}/{measured} revoked before the deadline")
    if not lags:
        sys.exit("nothing was revoked")
    result = {"active": active, "n": len(lags), "p50": statistics.median(lags),
              "p95": pct(lags, 0.95), "p99": pct(lags, 0.99), "max": max(lags),
              "rss": peak, "idle_rss": idle_rss}
    print(f"  revocation lag (expires_at -> role dropped on the target), n={len(lags)}: "
          f"P50 {result['p50']:.0f} ms  P95 {result['p95']:.0f} ms  "
          f"P99 {result['p99']:.0f} ms  max {result['max']:.0f} ms")
    print(f"  broker RSS: {idle_rss:.0f} MB at start, {peak:.0f} MB peak "
          f"({still_active} grants still active at the end); drift orphans alerted: {orphans}",
          flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--active", default="1000,10000",
                        help="comma-separated numbers of active grants, one run each")
    parser.add_argument("--measured", type=int, default=1000,
                        help="grants per run whose expiry is measured")
    parser.add_argument("--rate", type=float, default=20.0,
                        help="expiries per second during the measured window")
    args = parser.parse_args()
    results = [run(int(n), args.measured, args.rate) for n in args.active.split(",")]
    print()
    print(f"{'active':>7} {'n':>6}  {'P50':>8} {'P95':>8} {'P99':>8} {'max':>8}  {'RSS':>7}  "
          f"P99 < 1 s   RSS < 250 MB")
    for r in results:
        print(f"{r['active']:>7.0f} {r['n']:>6.0f}  {r['p50']:>5.0f} ms {r['p95']:>5.0f} ms "
              f"{r['p99']:>5.0f} ms {r['max']:>5.0f} ms  {r['rss']:>4.0f} MB  "
              f"{'met' if r['p99'] < 1000 else 'NOT met':<10} "
              f"{'met' if r['rss'] < 250 else 'NOT met'}")


if __name__ == "__main__":
    main()
