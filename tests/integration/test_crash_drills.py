"""SIGKILL at every activation and revocation step, then restart: nothing is left behind.

Each run arms one crash point at a random occurrence, lets a real broker
process work against real PostgreSQL and Redis targets until it kills itself,
then starts the next process, which must reconcile: every credential on a
target belongs to exactly one active grant, and no due grant is still active.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
import redis
from psycopg import sql
from sqlalchemy import select

from breakglass.connectors import MARKER_PREFIX, Ownership
from breakglass.connectors.postgres import role_name_for
from breakglass.connectors.redis import user_name_for
from breakglass.service.crashpoints import POINTS
from breakglass.storage import tables as t
from breakglass.storage.uow import make_engine
from tests.services import require

HERE = Path(__file__).parent
CATALOG = HERE.parent / "fixtures" / "catalog_chaos.yaml"
RUNS = int(os.environ.get("BG_CRASH_RUNS", "200"))


@pytest.fixture
def targets() -> Iterator[tuple[str, str]]:
    admin = require("BG_TEST_PG_ADMIN_DSN")
    redis_url = require("BG_TEST_REDIS_URL")
    name = "bg_chaos_" + uuid.uuid4().hex[:8]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = admin.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA drill; CREATE TABLE drill.t (id int)")
    yield dsn, redis_url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def _pg_roles(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE 'bg\\_%'")
        return {r[0] for r in rows}


def _redis_users(url: str) -> set[str]:
    with redis.Redis.from_url(url, protocol=2) as r:
        return {u.decode() if isinstance(u, bytes) else u for u in r.acl_users()
                if (u.decode() if isinstance(u, bytes) else u).startswith("bg_")}


def _ours(engine) -> tuple[set[str], set[str]]:
    """The target-side names this drill's requests could have minted (roles, ACL users)."""
    with engine.connect() as conn:
        ids = [r.id for r in conn.execute(select(t.requests.c.id))]
        key = conn.execute(select(t.deployment.c.ownership_key)).scalar()
    if key is None:  # no broker started yet: nothing minted
        return set(), set()
    ownership = Ownership(MARKER_PREFIX, bytes(key))
    grant_ids = [f"{rid}-g{i}" for rid in ids for i in (0, 1)]
    return ({role_name_for(ownership, g) for g in grant_ids},
            {user_name_for(ownership, g) for g in grant_ids})


def _clean(engine, dsn: str, redis_url: str) -> None:
    roles, users = _ours(engine)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for role in _pg_roles(dsn) & roles:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
    with redis.Redis.from_url(redis_url, protocol=2) as r:
        for user in _redis_users(redis_url) & users:
            r.acl_deluser(user)


def _check(engine, dsn: str, redis_url: str, run: int) -> None:
    now = datetime.now(UTC)
    with engine.connect() as conn:
        active = {(g.target, g.target_ref) for g in conn.execute(
            select(t.grants.c.target, t.grants.c.target_ref).where(t.grants.c.state == "active"))}
        due = conn.execute(select(t.requests.c.id).where(
            t.requests.c.state.in_(["active", "revoking", "activating"]),
            t.requests.c.expires_at <= now)).all()
    roles, users = _ours(engine)
    on_targets = {("store-db", r) for r in _pg_roles(dsn) & roles} | {
        ("cache", u) for u in _redis_users(redis_url) & users}
    assert on_targets <= active, f"run {run}: orphaned credentials {on_targets - active}"
    assert not due, f"run {run}: due requests still active: {due}"


def _drive(proc: subprocess.Popen[str], check: Callable[[], None], *, last: bool) -> str:
    """Wait for the broker to reconcile, check the targets, then let it work until killed."""
    assert proc.stdout is not None
    assert proc.stdin is not None
    if proc.stdout.readline().strip() != "reconciled":
        proc.kill()
        return "did not reconcile: " + proc.communicate()[1][-2000:]
    check()
    proc.stdin.write("stop\n" if last else "go\n")
    proc.stdin.flush()
    _, err = proc.communicate(timeout=60)
    if proc.returncode == -9:
        return "killed"
    return "finished" if proc.returncode == 0 else f"failed: {err[-2000:]}"


@pytest.mark.timeout(1200)
def test_kill_9_at_every_step_leaves_no_orphan(targets, pg_engine, tmp_path):
    dsn, redis_url = targets
    db_url = pg_engine.url.render_as_string(hide_password=False)
    check_engine = make_engine(db_url)
    env = {**os.environ, "CHAOS_PG_DSN": dsn, "CHAOS_REDIS_URL": redis_url,
           "BREAKGLASS_STATE_DIR": str(tmp_path), "BREAKGLASS_ANCHOR_DIR": f"{tmp_path}-anchor"}
    rng = random.Random(20261123)
    killed = dict.fromkeys(POINTS, 0)
    for run in range(RUNS + 1):
        point = POINTS[run % len(POINTS)]
        crash = f"{point}:{rng.randint(1, 2)}"
        with subprocess.Popen(
            [sys.executable, str(HERE / "chaos_runner.py"), str(CATALOG), db_url, str(tmp_path),
             str(run)],
            env={**env, "BREAKGLASS_CRASH_AT": crash}, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ) as proc:
            outcome = _drive(proc, lambda run=run: _check(check_engine, dsn, redis_url, run),
                             last=run == RUNS)
        if outcome == "killed":
            killed[point] += 1
        elif outcome != "finished":
            pytest.fail(f"run {run} ({crash}): {outcome}")
    _clean(check_engine, dsn, redis_url)
    check_engine.dispose()
    assert all(n > 0 for n in killed.values()), killed
    assert sum(killed.values()) >= RUNS * 0.9, killed
