"""``breakglass demo``: the whole product on one machine, in one command.

SQLite for the broker, the demo catalog, the dev identity issuer and, when
PostgreSQL binaries are installed, a throwaway PostgreSQL cluster with a
small feature store as the target.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg import sql
from rich.console import Console

from breakglass.server import run_server

CATALOG = Path(__file__).resolve().parent / "examples" / "catalog.yaml"
_PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)

DEMO_SCHEMA = """
CREATE SCHEMA IF NOT EXISTS features;
CREATE TABLE IF NOT EXISTS features.online (entity_id int PRIMARY KEY, embedding_norm real,
                                            updated_at timestamptz DEFAULT now());
CREATE TABLE IF NOT EXISTS features.offline (entity_id int, day date, clicks int);
CREATE TABLE IF NOT EXISTS features.pipeline_state (job text PRIMARY KEY, status text);
INSERT INTO features.online (entity_id, embedding_norm)
  SELECT g, random() FROM generate_series(1, 20) g ON CONFLICT DO NOTHING;
INSERT INTO features.pipeline_state VALUES ('daily-embeddings', 'stuck')
  ON CONFLICT DO NOTHING;
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _pg_bin() -> Path | None:
    for candidate in _PG_BIN_DIRS:
        if (candidate / "initdb").exists():
            return candidate
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _as_pg_user(argv: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: use the postgres account then."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


@contextlib.contextmanager
def local_postgres(workdir: Path, *, csvlog: bool = False) -> Iterator[str | None]:
    """Start a private PostgreSQL cluster; yield its admin DSN (None without binaries).

    ``csvlog``: the server's log goes to csvlog files through the logging collector
    (what the identity-change detector reads); otherwise to ``pg.log`` as plain text."""
    bindir = _pg_bin()
    if bindir is None:
        yield None
        return
    data, port, password = workdir / "pgdata", free_port(), secrets.token_urlsafe(16)
    workdir.mkdir(parents=True, exist_ok=True)
    pwfile = workdir / "pw"
    pwfile.write_text(password)
    if os.geteuid() == 0:
        shutil.chown(workdir, "postgres")
        shutil.chown(pwfile, "postgres")
    subprocess.run(_as_pg_user([str(bindir / "initdb"), "-D", str(data), "-U", "postgres",
                                "-A", "scram-sha-256", f"--pwfile={pwfile}"]),
                   check=True, capture_output=True)
    pwfile.unlink()
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {workdir}"
    if csvlog:  # the statement log notify/pglog.py reads over SQL, as on a real target
        options += " -c logging_collector=on -c log_destination=csvlog -c log_directory=log"
    subprocess.run(_as_pg_user([str(bindir / "pg_ctl"), "-D", str(data), "-l",
                                str(workdir / "pg.log"), "-w", "-o", options, "start"]),
                   check=True, capture_output=True)
    dsn = f"postgresql://postgres:{password}@127.0.0.1:{port}/postgres"
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL(DEMO_SCHEMA))  # a constant script, no user input
        yield dsn
    finally:
        subprocess.run(_as_pg_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast",
                                    "stop"]), check=False, capture_output=True)


class _Stopped(Exception):
    """SIGTERM or SIGHUP ended the demo: unwind so the cluster and its files go too."""


def _raise_stopped(signum: int, frame: object) -> None:
    del frame
    raise _Stopped(signum)


@contextlib.contextmanager
def _signals_end_the_demo() -> Iterator[None]:
    """SIGTERM and SIGHUP end the demo as Ctrl-C does, cleaning up on the way out.

    Without this, SIGHUP kills the process at once, and SIGTERM, which uvicorn
    handles by shutting the server down gracefully, is raised again afterwards with
    its default action, ending the process before the cluster is stopped and its
    directory removed. SIGHUP is turned into SIGTERM so the server shuts down the
    same graceful way; the SIGTERM uvicorn raises again then unwinds through the
    ``finally`` blocks that stop the cluster and remove the directory."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}
    signal.signal(signal.SIGTERM, _raise_stopped)
    signal.signal(signal.SIGHUP, lambda *_: signal.raise_signal(signal.SIGTERM))
    try:
        yield
    except _Stopped:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_demo(port: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="breakglass-demo-"))
    os.chmod(workdir, 0o755)  # noqa: S103 - the postgres account must reach its data dir
    try:
        with _signals_end_the_demo():
            _serve_demo(port, workdir)
    finally:  # once the cluster has stopped: its data directory is in here
        shutil.rmtree(workdir, ignore_errors=True)


def _serve_demo(port: int, workdir: Path) -> None:
    server = f"http://127.0.0.1:{port}"
    with local_postgres(workdir / "pg", csvlog=True) as dsn:
        if dsn is not None:
            os.environ["FEATURE_STORE_DSN"] = dsn
            target = "a private PostgreSQL cluster (feature store with features.* tables)"
        else:
            target = "no PostgreSQL binaries found: set FEATURE_STORE_DSN to a real server"
        Console(highlight=False, soft_wrap=True).print(f"""[bold]breakglass demo[/] on {server}
  database: SQLite in {workdir}
  target:   {target}
  identity: dev issuer for the catalog's directory (alice, bob: platform on-call; carol,
            dave: approvers in other teams; erin: no MFA)
  audit:    checkpoints anchored in {workdir / 'checkpoints'}, inside the demo's own state
            directory (BREAKGLASS_ANCHOR_IN_STATE_DIR, allowed for the demo only: whoever
            can write there can cut the log's tail unnoticed; a real broker anchors outside
            it, or in S3 Object Lock)

Try, in another terminal:
  export BREAKGLASS_SERVER={server}
  breakglass login --dev alice
  breakglass request feature-store-read --incident INC-123 --reason recovery --ttl 2m
  eval "$(breakglass creds <REQUEST_ID> --format env)"
  psql -c 'SELECT * FROM features.online LIMIT 3'
  breakglass list ; breakglass timeline INC-123
Zone C needs two approvers outside alice's team:
  breakglass request feature-store-write --incident INC-123 --reason data_integrity
  breakglass login --dev carol && breakglass approve <REQUEST_ID>
  breakglass login --dev dave && breakglass approve <REQUEST_ID>
Press Ctrl-C to stop; the private PostgreSQL cluster is removed with it.
""")
        run_server(CATALOG, db_url=f"sqlite:///{workdir / 'breakglass.db'}", host="127.0.0.1",
                   port=port, dev=True, state_dir=workdir,
                   anchor_in_state_dir=True)  # a throwaway directory, removed on exit
