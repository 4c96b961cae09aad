"""An emergency PostgreSQL session that runs CREATE ROLE is alerted, naming the grant.

The test runs its own PostgreSQL cluster with the logging collector writing
``csvlog``, as a production server would, and the broker reads the log
through SQL (``pg_ls_logdir`` / ``pg_read_binary_file``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine

from breakglass.bootstrap import build_connectors
from breakglass.notify.operations import build_operations
from breakglass.notify.sinks import Transport
from breakglass.service.broker import Broker
from breakglass.service.ports import SecretBox, SystemClock
from breakglass.storage.uow import UnitOfWork
from tests.fakes import fresh_ownership, human
from tests.ops_harness import ENV, WebhookReceiver, load
from tests.services import require


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@pytest.fixture(scope="module")
def logging_cluster() -> Iterator[str]:
    """A private cluster whose statement log is csvlog, collected into files."""
    bindir = Path(require("BG_TEST_PG_BIN"))
    work = Path(tempfile.mkdtemp(prefix="bg-pglog-"))
    os.chmod(work, 0o755)  # noqa: S103 - the postgres account must reach its data dir
    if os.geteuid() == 0:
        shutil.chown(work, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = work / "data"
    subprocess.run(_as_postgres([str(bindir / "initdb"), "-D", str(data), "-U", "postgres",
                                 "-A", "trust"]), check=True, capture_output=True)
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(f"listen_addresses = '127.0.0.1'\nport = {port}\n"
                   f"unix_socket_directories = '{work}'\nlogging_collector = on\n"
                   "log_destination = 'csvlog'\nlog_directory = 'log'\nfsync = off\n")
    subprocess.run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-l",
                                 str(work / "server.log"), "-w", "start"]),
                   check=True, capture_output=True)
    dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE SCHEMA vectors")
            conn.execute("CREATE TABLE vectors.items (id int primary key, v text)")
        yield dsn
    finally:
        subprocess.run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m",
                                     "immediate", "stop"]), check=False, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    found = WebhookReceiver().start()
    yield found
    found.stop()


def test_create_role_by_an_emergency_role_is_alerted_within_five_seconds(
        logging_cluster: str, receiver: WebhookReceiver, pg_engine: Engine):
    loaded = load(None, hook_url=receiver.url + "/hook", slack_url=receiver.url + "/slack",
                  statement_logs="null")  # every postgres target, read through SQL
    loaded = type(loaded)(loaded.source, loaded.catalog.model_copy(update={"targets": {
        name: target.model_copy(update={"dsn": logging_cluster})
        for name, target in loaded.catalog.targets.items()}}), loaded.policy)
    clock = SystemClock()
    connectors = build_connectors(loaded, fresh_ownership())
    broker = Broker(policy=loaded.policy, uow=lambda: UnitOfWork(pg_engine),
                    connectors=connectors, clock=clock,
                    secrets_box=SecretBox(SecretBox.new_key()))
    ops = build_operations(loaded, pg_engine, clock, ENV, transport=Transport(2.0))
    ops.start()
    uma = human("uma", "team:ml-serving", "responders")
    rid = broker.request_access(uma, ["embeddings-read"], incident="SEV-7001",
                                reason="recovery").request.id
    try:
        [cred] = broker.credentials(uma, rid)
        grant_id = cred["grant"]
        with psycopg.connect(cred["dsn"], autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM vectors.items").fetchone() == (0,)
            started = time.time()
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("CREATE ROLE x")

        def identity_alert(r):
            return r.doc.get("topic") == "alert.identity_change" and r.path == "/hook"

        alert = receiver.wait_for(identity_alert, timeout=10)
        latency = alert.at - started
        assert latency < 5.0, f"alert took {latency:.2f} s"
        doc = alert.doc
        assert (doc["grant_id"], doc["request_id"], doc["incident"], doc["principal"]) == (
            grant_id, rid, "SEV-7001", "uma")
        assert doc["details"]["statement"] == "CREATE ROLE x"
        assert doc["details"]["kind"] == "identity_change"
        assert "CREATE ROLE x" in doc["summary"]
        assert grant_id in doc["summary"]
        chat = receiver.wait_for(lambda r: r.path == "/slack" and "CREATE ROLE x" in r.doc[
            "text"], timeout=5)
        assert chat.doc["blocks"]
        print(f"\nidentity-change alert latency: {latency:.3f} s (statement to webhook)")
    finally:
        broker.revoke(uma, rid)
        ops.close()
        for connector in connectors.values():
            connector.close()
