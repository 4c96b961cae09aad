"""Two ``serve`` processes and one ``worker`` on one PostgreSQL store share a mass expiry.

2,000 grants on a real PostgreSQL target all expire at the same instant. The
three processes' loops claim them with row locks; the test counts, on the
target side, the revocation statements each grant's role received (on a
PostgreSQL server of the test's own, whose admin role for the fleet logs every
statement), so a grant revoked twice or never shows up whatever the store says.
"""

from __future__ import annotations

import os
import secrets
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from sqlalchemy import Engine, func, select

from breakglass.bootstrap import deployment_ownership
from breakglass.catalog.loader import load_catalog
from breakglass.connectors import MARKER_PREFIX
from breakglass.connectors.postgres import PostgresConnector
from breakglass.demo import local_postgres
from breakglass.domain.model import RequestState
from breakglass.service.broker import Broker
from breakglass.service.ports import Clock, SecretBox, SystemClock
from breakglass.storage import tables as t
from breakglass.storage.uow import UnitOfWork
from tests.integration.brokers import (
    CATALOG,
    broker_process,
    count_revocations,
    responder,
    wait_up,
)

GRANTS = int(os.environ.get("BG_FLEET_GRANTS", "2000"))
CREATORS = 8  # threads (each with its own target connection) minting the grants
INCIDENT = "FLEET-1"
ROLES = ["fleet-read", "fleet-read-1", "fleet-read-2", "fleet-read-3"]  # a table each


@dataclass
class Target:
    creator_dsn: str  # the test's own admin connection: its statements are not logged
    fleet_dsn: str  # the fleet's admin role: every statement logged
    log: Path


@pytest.fixture
def target() -> Iterator[Target]:
    """A PostgreSQL server of the test's own: nothing else revokes (or logs) there."""
    work = Path(tempfile.mkdtemp(prefix="bg-fleet-"))
    os.chmod(work, 0o755)  # noqa: S103 - the postgres account must reach its data directory
    try:
        with local_postgres(work / "pg") as admin:
            if admin is None:
                pytest.fail("no PostgreSQL binaries for a private server")
            password = secrets.token_hex(16)
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute("CREATE DATABASE fleet")
                conn.execute(sql.SQL("CREATE ROLE fleet_admin SUPERUSER LOGIN PASSWORD {}")
                             .format(sql.Literal(password)))
                conn.execute("ALTER ROLE fleet_admin SET log_statement = 'all'")
            creator_dsn = make_conninfo(admin, dbname="fleet")
            with psycopg.connect(creator_dsn, autocommit=True) as conn:
                for schema in ("fleet", "fleet1", "fleet2", "fleet3"):
                    conn.execute(sql.SQL("CREATE SCHEMA {}; CREATE TABLE {} (id int)").format(
                        sql.Identifier(schema), sql.Identifier(schema, "t")))
            yield Target(creator_dsn, make_conninfo(admin, dbname="fleet", user="fleet_admin",
                                                    password=password), work / "pg" / "pg.log")
    finally:
        shutil.rmtree(work, ignore_errors=True)


class FrozenClock:
    """Every grant minted by the test gets exactly the same ``expires_at``."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at


def _creators(pg_engine: Engine, dsn: str,
              clock: Clock) -> tuple[list[Broker], list[PostgresConnector]]:
    loaded = load_catalog(CATALOG, env={"FLEET_TARGET_DSN": dsn})
    box = SecretBox(SecretBox.new_key())
    ownership = deployment_ownership(pg_engine, MARKER_PREFIX, clock)  # the fleet's store's
    connectors = [PostgresConnector("fleet-db", {"dsn": dsn}, ownership=ownership)
                  for _ in range(CREATORS)]
    brokers = [Broker(policy=loaded.policy, uow=lambda: UnitOfWork(pg_engine),
                      connectors={"fleet-db": c}, clock=clock, secrets_box=box)
               for c in connectors]
    return brokers, connectors


def _mint(brokers: list[Broker], count: int, incident: str, ttl: timedelta) -> list[str]:
    uma = responder()

    def one(i: int) -> str:
        view = brokers[i % len(brokers)].request_access(uma, [ROLES[i % len(ROLES)]],
                                                        incident=incident, reason="recovery",
                                                        ttl=ttl)
        assert view.request.state is RequestState.ACTIVE, view.request.end_reason
        return view.grants[0].target_ref

    with ThreadPoolExecutor(max_workers=len(brokers)) as pool:
        return list(pool.map(one, range(count)))


def _expired_count(pg_engine: Engine) -> int:
    with pg_engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(t.requests).where(
            t.requests.c.incident == INCIDENT,
            t.requests.c.state == RequestState.EXPIRED.value)).scalar_one())


def test_two_brokers_and_a_worker_revoke_2000_grants_exactly_once(target, pg_engine, tmp_path):
    db_url = pg_engine.url.render_as_string(hide_password=False)
    env = {
        "FLEET_TARGET_DSN": target.fleet_dsn,
        "BREAKGLASS_SECRET_KEY": SecretBox.new_key().decode(),
        "BREAKGLASS_DRIFT_INTERVAL": "3600",  # only expiry revokes here
        # The test mints with a frozen clock: activations look as old as the minting run.
        "BREAKGLASS_RECOVER_GRACE": "3600",
    }
    log_offset = target.log.stat().st_size
    with ExitStack() as stack:
        fleet = [stack.enter_context(broker_process(kind, tmp_path / f"{kind}{i}", db_url, env,
                                                    wait=False))
                 for i, kind in enumerate(["serve", "serve", "worker"])]
        for broker in fleet:
            wait_up(broker)

        # A probe with the real clock (and a long TTL) measures how fast grants are minted.
        probe, probe_connectors = _creators(pg_engine, target.creator_dsn, SystemClock())
        stack.callback(lambda: [c.close() for c in probe_connectors])
        _mint(probe[:1], 1, "FLEET-0", timedelta(minutes=30))  # the log's head
        _mint(probe, CREATORS, "FLEET-0", timedelta(minutes=30))  # connections
        started = time.monotonic()
        _mint(probe, 4 * CREATORS, "FLEET-0", timedelta(minutes=30))
        rate = 4 * CREATORS / (time.monotonic() - started)
        for view in probe[0].search(incident="FLEET-0"):
            probe[0].end_access(view.request.id, RequestState.REVOKED, "test", "probe done")

        frozen = datetime.now(UTC)
        budget = timedelta(seconds=GRANTS / rate * 1.15 + 3)
        brokers, connectors = _creators(pg_engine, target.creator_dsn, FrozenClock(frozen))
        stack.callback(lambda: [c.close() for c in connectors])
        minting = time.monotonic()
        refs = _mint(brokers, GRANTS, INCIDENT, budget)
        minted_in = time.monotonic() - minting
        expires_at = frozen + budget
        ahead = (expires_at - datetime.now(UTC)).total_seconds()

        deadline = time.monotonic() + max(ahead, 0) + 180  # a bound on waiting, not a target
        done = 0
        while time.monotonic() < deadline:
            done = _expired_count(pg_engine)
            if done == GRANTS:
                break
            time.sleep(0.2)
        finished = datetime.now(UTC)
        assert done == GRANTS, (f"{done}/{GRANTS} expired; logs:\n"
                                + "\n".join(b.log() for b in fleet))
    # All three processes are stopped now: nothing more can happen on the target.

    counted = count_revocations(target.log, log_offset, set(refs))
    twice = {r: n for r, n in counted.terminations.items() if n != 1}
    assert not twice, f"revoked more than once on the target: {dict(list(twice.items())[:10])}"
    never = set(refs) - set(counted.terminations)
    assert not never, f"{len(never)} grants never revoked on the target, e.g. {sorted(never)[:5]}"
    assert all(counted.drops.get(r) == 1 for r in refs), "each role is dropped exactly once"
    assert len(counted.backends) >= 2, f"one process did all the work: {counted.backends}"

    with psycopg.connect(target.creator_dsn) as conn:
        left = conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)",
                            (refs,)).fetchall()
    assert not left, f"{len(left)} grant roles remain on the target"

    with pg_engine.connect() as conn:
        states = dict(conn.execute(
            select(t.requests.c.state, func.count()).where(t.requests.c.incident == INCIDENT)
            .group_by(t.requests.c.state)).all())
        grant_states = dict(conn.execute(
            select(t.grants.c.state, func.count()).join(
                t.requests, t.requests.c.id == t.grants.c.request_id)
            .where(t.requests.c.incident == INCIDENT).group_by(t.grants.c.state)).all())
        size, low, high = conn.execute(
            select(func.count(), func.min(t.events.c.idx), func.max(t.events.c.idx))).one()
        expired_events = conn.execute(
            select(t.events.c.grant_id, t.events.c.payload).where(
                t.events.c.incident == INCIDENT,
                t.events.c.action == "grant:credential:expired")).all()
        failures = conn.execute(select(func.count()).select_from(t.events).where(
            t.events.c.action == "grant:revocation:failed")).scalar_one()
        last_revoked = conn.execute(select(func.max(t.grants.c.revoked_at)).join(
            t.requests, t.requests.c.id == t.grants.c.request_id).where(
            t.requests.c.incident == INCIDENT)).scalar_one()
    assert states == {"expired": GRANTS}
    assert grant_states == {"expired": GRANTS}
    assert (low, high) == (0, size - 1), f"event index gap: {size} events, {low}..{high}"
    assert len(expired_events) == GRANTS
    assert len({e.grant_id for e in expired_events}) == GRANTS, "one expiry event per grant"
    assert failures == 0, "no revocation failed: the target was up throughout"

    lags = sorted(e.payload["lag_ms"] for e in expired_events)
    last = (last_revoked.replace(tzinfo=UTC) if last_revoked.tzinfo is None else last_revoked)
    span = (last - expires_at).total_seconds()
    print(f"\nfleet: {GRANTS} grants minted in {minted_in:.1f} s "
          f"(expiry {ahead:.1f} s after minting ended); 2 serve + 1 worker revoked all of them "
          f"{span:.2f} s after expires_at (seen by the test at "
          f"{(finished - expires_at).total_seconds():.2f} s); lag ms P50 "
          f"{statistics.median(lags):.0f} P99 {lags[int(0.99 * len(lags)) - 1]} max {lags[-1]}; "
          f"drops per target backend {sorted(counted.backends.values(), reverse=True)}")
