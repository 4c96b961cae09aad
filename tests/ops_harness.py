"""A broker with notifications, alerts, reviews and metrics wired in, over fakes.

Used by the notify, reviews and report tests: the test catalog plus an
``alerts`` block, a clock that moves only when told, a target in memory whose
grants take a set time, and a transport that records instead of sending.
"""

from __future__ import annotations

import csv
import io
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, select

from breakglass.catalog.loader import LoadedCatalog, parse_catalog
from breakglass.connectors import GrantSpec, IssuedCredential
from breakglass.domain.model import Principal
from breakglass.notify.config import Sink
from breakglass.notify.operations import Operations, build_operations
from breakglass.notify.outbox import OutboxRow
from breakglass.notify.sinks import (
    SIGNATURE_HEADER,
    DeliveryError,
    Transport,
    sign,
    slack_body,
    webhook_body,
)
from breakglass.service.broker import Broker
from breakglass.service.ports import SecretBox
from breakglass.storage import tables_notify as tn
from breakglass.storage.uow import UnitOfWork
from tests.conftest import CATALOG
from tests.fakes import FakeClock, MemoryConnector, human

HOOK_SECRET = "hook-secret-for-tests"
ENV = {"TEST_TARGET_DSN": "postgresql://x@127.0.0.1:1/db", "BG_HOOK_SECRET": HOOK_SECRET}


def alerts_block(log_dir: Path | None, *, hook_url: str = "http://127.0.0.1:9/hook",
                 slack_url: str = "http://127.0.0.1:9/slack", extra: str = "",
                 statement_logs: str | None = None) -> str:
    logs = statement_logs or ("{embeddings-db: {source: file, path: '" + str(log_dir) + "'}}"
                              if log_dir is not None else "{}")
    return f"""
alerts:
  sinks:
    - {{type: webhook, name: hooks, url: "{hook_url}", secret_env: BG_HOOK_SECRET}}
    - {{type: slack, name: chat, url: "{slack_url}", kinds: [alert]}}
  rules:
    violation_burst: {{refusals: 3, within: 5m}}
    identity_change: {{statement_logs: {logs}, poll_interval: 0.2}}
    events: {{audit_tamper: ["audit:*:tampered"]}}
  delivery: {{max_attempts: 3, max_backoff: 10s, timeout: 2s}}
reviews: {{due_after: 24h, check_interval: 1s}}
{extra}"""


def catalog_text(log_dir: Path | None, **kwargs: Any) -> str:
    return CATALOG.read_text() + alerts_block(log_dir, **kwargs)


def load(log_dir: Path | None = None, **kwargs: Any) -> LoadedCatalog:
    return parse_catalog(catalog_text(log_dir, **kwargs), "ops-test-catalog", ENV)


class TimedConnector(MemoryConnector):
    """Grants take ``delay`` seconds of the fake clock, as a real target's round trips would."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__("embeddings-db")
        self.clock = clock
        self.delay = 0.0

    def grant(self, spec: GrantSpec) -> IssuedCredential:
        self.clock.advance(seconds=self.delay)
        return super().grant(spec)


@dataclass
class Sent:
    sink: Sink
    row: OutboxRow
    body: bytes
    headers: dict[str, str]


class RecordingTransport(Transport):
    """Keeps what would have been sent; ``failures`` makes the next sends fail."""

    def __init__(self) -> None:  # no HTTP client: nothing leaves the process
        self.sent: list[Sent] = []
        self.failures = 0

    def send(self, sink: Sink, row: OutboxRow) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise DeliveryError(f"{sink.name}: HTTP 503")
        body = slack_body(row) if sink.type == "slack" else webhook_body(row)
        headers = {SIGNATURE_HEADER: sign(sink.secret, body)} if sink.secret else {}
        self.sent.append(Sent(sink, row, body, headers))

    def close(self) -> None:
        return None


@dataclass
class Harness:
    engine: Engine
    clock: FakeClock
    loaded: LoadedCatalog
    target: TimedConnector
    broker: Broker
    ops: Operations
    transport: RecordingTransport
    start: datetime
    log_dir: Path | None

    def who(self, name: str) -> Principal:
        entry = self.loaded.catalog.directory[name]
        return human(name, *entry.groups, mfa=entry.mfa, clock=self.clock)

    def at(self, seconds: float) -> None:
        moment = self.start + timedelta(seconds=seconds)
        assert moment >= self.clock.current, "the clock only moves forward"
        self.clock.current = moment

    def outbox(self, **where: str) -> list[Any]:
        query = select(tn.outbox).order_by(tn.outbox.c.id)
        for key, value in where.items():
            query = query.where(tn.outbox.c[key] == value)
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    def deliver(self) -> int:
        return self.ops.delivery.deliver_due()

    def sent(self, topic: str, sink: str = "hooks") -> list[Sent]:
        return [s for s in self.transport.sent if s.row.topic == topic and s.sink.name == sink]

    def write_statement_log(self, user: str, *statements: str, name: str = "pg.csv") -> None:
        """Append csvlog lines, as PostgreSQL writes them with log_statement = 'all'."""
        assert self.log_dir is not None
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        for i, statement in enumerate(statements):
            writer.writerow(["2026-11-23 02:30:00.000 UTC", user, "embeddings", "4242",
                             "127.0.0.1:5000", "674a.1092", str(i + 1), "idle",
                             "2026-11-23 02:29:00 UTC", "3/7", "0", "LOG", "00000",
                             f"statement: {statement}", "", "", "", "", "", "", "", "",
                             "psql", "client backend", "", "0"])
        with (self.log_dir / name).open("a") as fh:
            fh.write(buf.getvalue())


def make_harness(engine: Engine, clock: FakeClock, log_dir: Path | None = None,
                 transport: Transport | None = None, **catalog: Any) -> Harness:
    loaded = load(log_dir, **catalog)
    target = TimedConnector(clock)
    broker = Broker(policy=loaded.policy, uow=lambda: UnitOfWork(engine),
                    connectors={"embeddings-db": target}, clock=clock,
                    secrets_box=SecretBox(SecretBox.new_key()))
    recording = RecordingTransport()
    ops = build_operations(loaded, engine, clock, ENV, transport=transport or recording)
    return Harness(engine=engine, clock=clock, loaded=loaded, target=target, broker=broker,
                   ops=ops, transport=recording, start=clock.now(), log_dir=log_dir)


# -- a webhook receiver on 127.0.0.1 ------------------------------------------------------

@dataclass
class Received:
    at: float
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def doc(self) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(self.body)
        return found


class WebhookReceiver:
    """Records every POST; ``mode`` "ok" answers 200, "fail" 503, "hang" never answers."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.hung = 0
        self.mode = "ok"
        self._release = threading.Event()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if receiver.mode == "hang":
                    receiver.hung += 1
                    receiver._release.wait(60)
                    return
                if receiver.mode == "fail":
                    self.send_response(503)
                    self.end_headers()
                    return
                with receiver._lock:
                    receiver.received.append(Received(time.time(), self.path,
                                                      dict(self.headers.items()), body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()

    def wait_for(self, match: Any, timeout: float = 10.0) -> Received:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                found = [r for r in self.received if match(r)]
            if found:
                return found[0]
            time.sleep(0.02)
        raise AssertionError(f"nothing matching arrived within {timeout} s; got "
                             f"{[r.doc.get('topic') for r in self.received]}")


# -- a real broker process ----------------------------------------------------------------

BIN = Path(sys.executable).parent / "breakglass"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_broker(catalog: Path, db: Path, env: dict[str, str],
                   log_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``breakglass serve --dev`` on a free port, until the block ends."""
    port = free_port()
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [str(BIN), "serve", "--catalog", str(catalog), "--dev", "--port", str(port),
             "--db", f"sqlite:///{db}"], env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                if proc.poll() is not None:
                    raise AssertionError("broker exited:\n" + log_path.read_text())
                try:
                    if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
            yield url, proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=15)
