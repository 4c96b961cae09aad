"""A broker that trusts an OpenID provider (no ``--dev``), and tiny HTTP servers for tests.

* :func:`running_broker` starts ``breakglass serve`` on a catalog with an
  ``identity.issuer``, with a Fernet key for credentials at rest, and stops it.
* :class:`OidcCli` runs the CLI as separate people and logs them in with the
  device flow, playing their browser with :func:`sign_in`.
* :func:`target_database` creates a PostgreSQL database to grant access on
  and, when done, drops it and the broker's roles that can reach it (only
  those: other suites may share the server).
* :class:`JsonServer` answers fixed JSON documents on 127.0.0.1 and records
  every request it receives (an issuer the test controls, or an attacker's
  host that must never be contacted).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from cryptography.fernet import Fernet
from psycopg import sql

from tests.e2e.conftest import BIN, Cli, free_port
from tests.integration.test_oidc_provider import sign_in
from tests.services import require

FIXTURES = Path(__file__).parent.parent / "fixtures"
STARTUP_SECONDS = 15


@contextmanager
def target_database() -> Iterator[str]:
    """A fresh database with ``vectors.items`` and ``vectors.jobs``, reached by password."""
    admin = require("BG_TEST_PG_ADMIN_DSN")
    name = "bg_oidc_" + uuid.uuid4().hex[:8]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = admin.rsplit("/", 1)[0] + "/" + name
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE SCHEMA vectors")
            conn.execute("CREATE TABLE vectors.items (id int primary key, v text)")
            conn.execute("CREATE TABLE vectors.jobs (id int primary key, status text)")
            conn.execute("INSERT INTO vectors.items VALUES (1, 'seed')")
        yield dsn
    finally:
        _drop_database(admin, dsn, name)


def _drop_database(admin: str, dsn: str, name: str) -> None:
    with psycopg.connect(admin, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT r.rolname FROM pg_database d, aclexplode(d.datacl) a"
            " JOIN pg_roles r ON r.oid = a.grantee"
            " WHERE d.datname = %s AND r.rolname LIKE 'bg\\_%%'",
            (name,),
        ).fetchall()
    roles = sorted({role for (role,) in rows})
    if roles:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for role in roles:
                conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        for role in roles:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@dataclass(frozen=True)
class Broker:
    url: str
    db: Path
    log: Path

    def events(self, action: str) -> list[tuple[int, str, str, str | None]]:
        """``(idx, actor, outcome, rule)`` of the audit events with this action, in order."""
        with closing(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)) as conn:
            rows = conn.execute(
                "SELECT idx, actor, outcome, rule FROM events WHERE action = ? ORDER BY idx",
                (action,),
            ).fetchall()
        return [(int(i), str(a), str(o), r) for i, a, o, r in rows]


@contextmanager
def running_broker(catalog: Path, state: Path, env: Mapping[str, str]) -> Iterator[Broker]:
    """``breakglass serve`` without ``--dev`` on a SQLite file, until the block ends."""
    port = free_port()
    db = state / "broker.db"
    log_path = state / "server.log"
    full_env = {
        **os.environ,
        **env,
        "BREAKGLASS_STATE_DIR": str(state),
        "BREAKGLASS_ANCHOR_DIR": f"{state}-anchor",
        "BREAKGLASS_SECRET_KEY": Fernet.generate_key().decode("ascii"),
    }
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [
                str(BIN),
                "serve",
                "--catalog",
                str(catalog),
                "--port",
                str(port),
                "--db",
                f"sqlite:///{db}",
            ],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(proc, url, log_path)
            yield Broker(url=url, db=db, log=log_path)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    with httpx.Client(timeout=1) as http:
        for _ in range(STARTUP_SECONDS * 10):
            if proc.poll() is not None:
                break
            try:
                if http.get(url + "/readyz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
    pytest.fail("broker did not start:\n" + log_path.read_text())


class OidcCli(Cli):
    """The CLI as separate people, each with their own config dir (and token file)."""

    def env(self, user: str) -> dict[str, str]:
        env = {
            **os.environ,
            "XDG_CONFIG_HOME": str(self.home / user),
            "BREAKGLASS_SERVER": self.server,
            "COLUMNS": "200",
        }
        env.pop("BREAKGLASS_TOKEN", None)
        return env

    def token_file(self, user: str) -> Path:
        return self.home / user / "breakglass" / "token.json"

    def login(self, *users: str) -> None:
        """``breakglass login`` for each user at once; each confirms in their own browser."""
        started = [(user, self._start_login(user)) for user in users]
        try:
            for user, (_, url) in started:
                response = sign_in(url, user)
                assert response.status_code == 200, (user, response.status_code, response.text)
            for user, (proc, _) in started:
                out, err = proc.communicate(timeout=60)
                assert proc.returncode == 0, (user, out, err)
                assert "logged in to " + self.server in out, (user, out)
        finally:
            for _, (proc, _) in started:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate(timeout=10)

    def _start_login(self, user: str) -> tuple[subprocess.Popen[str], str]:
        proc = subprocess.Popen(
            [str(BIN), "login"],
            env=self.env(user),
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stderr is not None
        seen: list[str] = []
        url = code = None
        for line in proc.stderr:
            seen.append(line)
            if line.startswith("Open "):
                url = line.removeprefix("Open ").strip()
            elif line.startswith("and confirm the code "):
                code = line.removeprefix("and confirm the code ").strip()
                break
        if url is None or code is None:
            proc.kill()
            out, err = proc.communicate(timeout=10)
            pytest.fail(
                f"`breakglass login` for {user} printed no device code:\n{''.join(seen)}{err}{out}"
            )
        assert code in url, (url, code)
        return proc, url


class JsonServer:
    """Fixed JSON documents by path on 127.0.0.1; every request is recorded."""

    def __init__(self, routes: Mapping[str, Any] | None = None) -> None:
        self.routes: dict[str, Any] = dict(routes or {})
        self.requests: list[str] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with server._lock:
                    server.requests.append(self.path)
                    document = server.routes.get(self.path)
                if document is None:
                    self.send_error(404)
                    return
                body = json.dumps(document).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                self.do_GET()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> JsonServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)
