"""A real broker process and a CLI that runs as separate people."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import sql

from tests.conftest import CATALOG
from tests.services import require

BIN = Path(sys.executable).parent / "breakglass"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cli:
    server: str
    home: Path

    def run(self, user: str, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "XDG_CONFIG_HOME": str(self.home / user),
               "BREAKGLASS_SERVER": self.server, "COLUMNS": "200"}
        env.pop("BREAKGLASS_TOKEN", None)
        return subprocess.run([str(BIN), *args], capture_output=True, text=True, env=env,
                              timeout=60, check=False)


@pytest.fixture(scope="module")
def target_dsn() -> Iterator[str]:
    """A real PostgreSQL database as the target, reached with password authentication."""
    admin = require("BG_TEST_PG_ADMIN_DSN")
    name = "bg_e2e_" + uuid.uuid4().hex[:8]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = admin.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA vectors")
        conn.execute("CREATE TABLE vectors.items (id int primary key, v text)")
        conn.execute("CREATE TABLE vectors.jobs (id int primary key, status text)")
        conn.execute("INSERT INTO vectors.items VALUES (1, 'seed')")
    yield dsn
    with psycopg.connect(dsn, autocommit=True) as conn:  # only roles that reach this database
        roles = conn.execute(
            "SELECT r.rolname FROM pg_database d, aclexplode(d.datacl) a "
            "JOIN pg_roles r ON r.oid = a.grantee "
            "WHERE d.datname = current_database() AND r.rolname LIKE 'bg\\_%'").fetchall()
        for (role,) in roles:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        for (role,) in roles:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture(scope="module")
def broker_server(tmp_path_factory: pytest.TempPathFactory, target_dsn: str) -> Iterator[str]:
    state = tmp_path_factory.mktemp("broker")
    with run_broker(CATALOG, state, {"TEST_TARGET_DSN": target_dsn}) as url:
        yield url


@contextmanager
def run_broker(catalog: Path, state: Path, extra_env: dict[str, str]) -> Iterator[str]:
    """``breakglass serve --dev`` on a free port with a SQLite store in ``state``."""
    port = free_port()
    env = {**os.environ, **extra_env, "BREAKGLASS_STATE_DIR": str(state),
           "BREAKGLASS_ANCHOR_DIR": f"{state}-anchor"}
    log = (state / "server.log").open("w")
    proc = subprocess.Popen(
        [str(BIN), "serve", "--catalog", str(catalog), "--dev", "--port", str(port),
         "--db", f"sqlite:///{state / 'broker.db'}"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(150):
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    else:
        proc.kill()
    if proc.poll() is not None:
        pytest.fail("broker did not start:\n" + (state / "server.log").read_text())
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


@pytest.fixture(scope="module")
def cli(broker_server: str, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    c = Cli(broker_server, tmp_path_factory.mktemp("homes"))
    for user in ("uma", "ugo", "vera", "wim", "yuri"):
        result = c.run(user, "login", "--dev", user)
        assert result.returncode == 0, result.stderr
    return c
