"""PostgreSQL statement logs: identity and privilege changes made by emergency roles.

The PostgreSQL connector sets ``log_statement = 'all'`` on every role it
mints. This watcher reads the server's ``csvlog`` or ``jsonlog`` files, either
through SQL (``pg_ls_logdir`` and ``pg_read_binary_file``: the target's admin
role must be superuser, or hold ``pg_monitor`` and ``pg_read_server_files``)
or from a log directory the broker can read. Every statement run by a role
with the broker's marker that creates, alters or drops roles, grants or
revokes privileges, changes ownership or row-level security becomes a
``grant:action:high_risk`` audit event naming the grant, incident and
principal; the ``identity_change`` alert rule turns it into an alert.

Progress is a byte offset per log file (``log_cursors``), advanced in the
same transaction as the events it produced, so a restart neither misses nor
repeats a statement, and brokers sharing a database do not both report it.
"""

from __future__ import annotations

import csv
import io
import json
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import psycopg
import structlog
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from breakglass.catalog.loader import LoadedCatalog
from breakglass.connectors import MARKER_PREFIX
from breakglass.domain.events import EventTag
from breakglass.service.ports import Clock
from breakglass.storage import tables as t
from breakglass.storage import tables_notify as tn
from breakglass.storage.uow import UnitOfWork

log = structlog.get_logger("breakglass.pglog")

HIGH_RISK: list[tuple[str, re.Pattern[str]]] = [
    ("identity_change", re.compile(r"^(CREATE|ALTER|DROP)\s+(ROLE|USER|GROUP)\b", re.I)),
    ("identity_change", re.compile(r"^SET\s+(SESSION\s+AUTHORIZATION|ROLE)\b", re.I)),
    ("privilege_change", re.compile(r"^(GRANT|REVOKE)\b", re.I)),
    ("privilege_change", re.compile(r"^ALTER\s+DEFAULT\s+PRIVILEGES\b", re.I)),
    ("privilege_change", re.compile(r"^ALTER\s+\w+.*\bOWNER\s+TO\b", re.I | re.S)),
    ("policy_change", re.compile(r"^(CREATE|ALTER|DROP)\s+POLICY\b", re.I)),
    ("policy_change", re.compile(
        r"^ALTER\s+TABLE\b.*\b(ENABLE|DISABLE|FORCE)\s+ROW\s+LEVEL\s+SECURITY\b", re.I | re.S)),
]
_STATEMENT = re.compile(r"^(?:duration: [\d.]+ ms\s+)?(?:statement|execute [^:]*): (.*)$", re.S)
_COMMENTS = re.compile(r"/\*.*?\*/|--[^\n]*", re.S)
_PASSWORD = re.compile(r"(PASSWORD\s+)('(?:[^']|'')*'|\S+)", re.I)
CHUNK = 4 * 1024 * 1024
RETRY_AFTER = 60.0


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    statement: str
    db_user: str
    database: str
    logged_at: str
    session: str


def redact(statement: str) -> str:
    """Statements are evidence, passwords are not: ``PASSWORD '***'``."""
    return _PASSWORD.sub(r"\1'***'", statement)


def classify(statement: str) -> str | None:
    """The kind of high-risk change a statement (or any part of it) makes, if any."""
    for part in _COMMENTS.sub(" ", statement).split(";"):
        text = part.strip()
        for kind, pattern in HIGH_RISK:
            if pattern.match(text):
                return kind
    return None


def complete_prefix(chunk: bytes, *, quoted: bool) -> int:
    """Length of the longest prefix that ends on a record boundary.

    A CSV record may span lines inside a quoted field; a line ends a record
    only when the quotes seen so far are balanced (CSV doubles inner quotes).
    """
    end = 0
    quotes = 0
    position = 0
    for line in chunk.split(b"\n")[:-1]:
        position += len(line) + 1
        quotes += line.count(b'"') if quoted else 0
        if quotes % 2 == 0:
            end = position
    return end


def records(data: bytes, *, jsonlog: bool) -> list[dict[str, str]]:
    """csvlog / jsonlog records as ``{time, user, database, session, message}``."""
    text = data.decode("utf-8", errors="replace")
    found: list[dict[str, str]] = []
    if jsonlog:
        for line in text.splitlines():
            try:
                item: dict[str, Any] = json.loads(line)
            except ValueError:
                continue
            found.append({"time": str(item.get("timestamp", "")), "user": str(item.get(
                "user", "")), "database": str(item.get("dbname", "")),
                "session": str(item.get("session_id", "")),
                "message": str(item.get("message", ""))})
        return found
    found.extend({"time": row[0], "user": row[1], "database": row[2], "session": row[5],
                  "message": row[13]} for row in csv.reader(io.StringIO(text)) if len(row) >= 14)
    return found


def findings(items: list[dict[str, str]], prefix: str = MARKER_PREFIX) -> list[Finding]:
    """Identity and privilege changes in ``items`` made by roles under the marker ``prefix``."""
    found = []
    for item in items:
        if not item["user"].startswith(prefix):
            continue
        match = _STATEMENT.match(item["message"])
        if match is None:
            continue
        statement = match.group(1).strip()
        kind = classify(statement)
        if kind is not None:
            found.append(Finding(kind=kind, statement=redact(statement)[:2000],
                                 db_user=item["user"], database=item["database"],
                                 logged_at=item["time"], session=item["session"]))
    return found


class LogSource(Protocol):
    target: str

    def files(self) -> list[tuple[str, int]]: ...

    def read(self, name: str, offset: int, length: int) -> bytes: ...

    def close(self) -> None: ...


class SqlLogSource:
    """Log files read through the target's admin connection."""

    def __init__(self, target: str, dsn: str) -> None:
        self.target = target
        self._dsn = dsn
        self._conn: psycopg.Connection[Any] | None = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=5,
                                         application_name="breakglass-statement-log")
        return self._conn

    def files(self) -> list[tuple[str, int]]:
        rows = self._connection().execute(
            "SELECT name, size FROM pg_ls_logdir() WHERE name LIKE '%.csv' OR name LIKE '%.json'"
            " ORDER BY modification, name").fetchall()
        return [(str(name), int(size)) for name, size in rows]

    def read(self, name: str, offset: int, length: int) -> bytes:
        row = self._connection().execute(
            "SELECT pg_read_binary_file(current_setting('log_directory') || '/' || %s, "
            "%s, %s, true)", (name, offset, length)).fetchone()
        return bytes(row[0]) if row and row[0] is not None else b""

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class FileLogSource:
    """Log files in a directory the broker can read (a shared volume, a log shipper)."""

    def __init__(self, target: str, directory: str) -> None:
        self.target = target
        self._dir = Path(directory)

    def files(self) -> list[tuple[str, int]]:
        found = [p for p in self._dir.iterdir() if p.suffix in (".csv", ".json")]
        return [(p.name, p.stat().st_size) for p in sorted(found, key=lambda p: (
            p.stat().st_mtime, p.name))]

    def read(self, name: str, offset: int, length: int) -> bytes:
        with (self._dir / Path(name).name).open("rb") as fh:
            fh.seek(offset)
            return fh.read(length)

    def close(self) -> None:
        return None


def sources_for(loaded: LoadedCatalog) -> list[LogSource]:
    rule = loaded.catalog.alerts.rules.identity_change
    targets = loaded.catalog.targets
    if not rule.enabled:
        return []
    chosen = rule.statement_logs
    if chosen is None:
        return [SqlLogSource(name, str(cfg.connector_config().get("dsn", "")))
                for name, cfg in targets.items() if cfg.type == "postgres"]
    found: list[LogSource] = []
    for name, where in chosen.items():
        if where.source == "file" and where.path:
            found.append(FileLogSource(name, where.path))
        elif name in targets:
            found.append(SqlLogSource(name, str(targets[name].connector_config().get("dsn", ""))))
    return found


class StatementLogWatcher:
    def __init__(self, engine: Engine, sources: list[LogSource], clock: Clock,
                 interval: float = 1.0, *, marker_prefix: str = MARKER_PREFIX) -> None:
        self._engine = engine
        self._prefix = marker_prefix
        self._sources = sources
        self._clock = clock
        self._interval = interval
        self._locking = engine.dialect.name == "postgresql"
        self._resting: dict[str, float] = {}
        self._reported: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._sources and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="breakglass-statement-log",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        for source in self._sources:
            source.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(self._interval)

    def poll(self) -> int:
        """Read what is new in every source; return how many high-risk statements were found."""
        total = 0
        for source in self._sources:
            if self._resting.get(source.target, 0.0) > time.monotonic():
                continue
            try:
                total += self._poll_source(source)
            except (psycopg.Error, OSError) as exc:
                self._pause(source, (str(exc).splitlines() or [type(exc).__name__])[0][:200])
                continue
            except SQLAlchemyError as exc:  # a race with another broker; next poll retries
                log.info("statement log cursor busy", target=source.target, error=str(exc)[:200])
                continue
            if self._reported.pop(source.target, None) is not None:
                log.info("statement log readable again", target=source.target)
        return total

    def _pause(self, source: LogSource, error: str) -> None:
        if self._reported.get(source.target) != error:  # once per distinct problem
            log.warning("statement log unreadable; identity-change detection paused",
                        target=source.target, error=error, retry_every=RETRY_AFTER)
            self._reported[source.target] = error
        self._resting[source.target] = time.monotonic() + RETRY_AFTER
        source.close()

    def _poll_source(self, source: LogSource) -> int:
        total = 0
        for name, size in source.files():
            stored = self._position(source.target, name)
            position = stored or 0
            if size < position:  # truncated on rotation: start over
                position = 0
            if size == position:
                continue
            data = source.read(name, position, min(size - position, CHUNK))
            usable = complete_prefix(data, quoted=name.endswith(".csv"))
            if usable == 0:
                continue
            found = findings(records(data[:usable], jsonlog=name.endswith(".json")),
                             self._prefix)
            total += self._record(source.target, name, stored, position + usable, found)
        return total

    def _position(self, target: str, name: str) -> int | None:
        c = tn.log_cursors.c
        with self._engine.connect() as conn:
            value = conn.execute(select(c.position).where(c.source == target, c.file == name)
                                 ).scalar()
        return None if value is None else int(value)

    def _record(self, target: str, name: str, stored: int | None, end: int,
                found: list[Finding]) -> int:
        """Advance the cursor from ``stored`` to ``end`` and write the findings, or do
        nothing when another broker moved the cursor in the meantime."""
        c = tn.log_cursors.c
        now = self._clock.now()
        with UnitOfWork(self._engine) as uow:
            query = select(c.position).where(c.source == target, c.file == name)
            if self._locking:
                query = query.with_for_update()
            current = uow.connection.execute(query).scalar()
            if current != stored:
                return 0
            if current is None:
                uow.connection.execute(insert(tn.log_cursors).values(
                    source=target, file=name, position=end, updated_at=now))
            else:
                uow.connection.execute(update(tn.log_cursors).where(
                    c.source == target, c.file == name).values(position=end, updated_at=now))
            for finding in found:
                self._event(uow, target, finding)
        return len(found)

    def _event(self, uow: UnitOfWork, target: str, finding: Finding) -> None:
        conn = uow.connection
        grant = conn.execute(
            select(t.grants.c.id, t.grants.c.request_id)
            .where(t.grants.c.target == target, t.grants.c.target_ref == finding.db_user)
            .order_by(t.grants.c.issued_at.desc()).limit(1)).first()
        req = None if grant is None else conn.execute(
            select(t.requests.c.requester, t.requests.c.incident, t.requests.c.zone)
            .where(t.requests.c.id == grant.request_id)).first()
        uow.events.append(
            ts=self._clock.now(),
            actor=req.requester if req is not None else finding.db_user,
            action=EventTag.HIGH_RISK_ACTION,
            request_id=grant.request_id if grant is not None else None,
            grant_id=grant.id if grant is not None else None,
            incident=req.incident if req is not None else None,
            zone=req.zone if req is not None else None,
            reason=f"{finding.kind}: {finding.statement[:200]}",
            payload={"kind": finding.kind, "statement": finding.statement, "target": target,
                     "db_user": finding.db_user, "database": finding.database,
                     "logged_at": finding.logged_at, "session": finding.session},
        )
