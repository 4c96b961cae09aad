"""Reading PostgreSQL statement logs: parsing, classification, and a cursor that survives."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from breakglass.notify.pglog import (
    StatementLogWatcher,
    classify,
    complete_prefix,
    findings,
    records,
    redact,
)
from breakglass.storage import tables as t
from breakglass.storage import tables_notify as tn
from breakglass.storage.migrate import upgrade
from breakglass.storage.uow import make_engine
from tests.fakes import FakeClock
from tests.ops_harness import Harness, make_harness


@pytest.mark.parametrize(("statement", "kind"), [
    ("CREATE ROLE x", "identity_change"),
    ("  create user bob with password 'x'", "identity_change"),
    ("ALTER ROLE bg_r1 SUPERUSER", "identity_change"),
    ("DROP ROLE IF EXISTS x", "identity_change"),
    ("SET ROLE postgres", "identity_change"),
    ("SET SESSION AUTHORIZATION postgres", "identity_change"),
    ("GRANT SELECT ON vectors.items TO public", "privilege_change"),
    ("revoke all on schema vectors from app", "privilege_change"),
    ("ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO x", "privilege_change"),
    ("ALTER TABLE vectors.items OWNER TO x", "privilege_change"),
    ("CREATE POLICY p ON vectors.items USING (true)", "policy_change"),
    ("ALTER TABLE vectors.items DISABLE ROW LEVEL SECURITY", "policy_change"),
    ("/* hidden */ CREATE ROLE x", "identity_change"),
    ("SELECT 1; CREATE ROLE x", "identity_change"),
    ("SELECT * FROM grants", None),
    ("UPDATE vectors.jobs SET status = 'queued'", None),
    ("-- CREATE ROLE x\nSELECT 1", None),
])
def test_statements_are_classified(statement, kind):
    assert classify(statement) == kind


def test_passwords_never_leave_the_log():
    assert redact("CREATE ROLE x PASSWORD 'it''s secret' LOGIN") == \
        "CREATE ROLE x PASSWORD '***' LOGIN"
    assert redact("ALTER USER x ENCRYPTED PASSWORD 'md5abc'") == \
        "ALTER USER x ENCRYPTED PASSWORD '***'"


def test_a_csv_record_with_a_newline_inside_a_quoted_field_is_read_whole():
    line1 = b'2026-11-23 02:30:00 UTC,bg_r1,db,1,h,s1,1,idle,,,0,LOG,00000,"statement: SELECT\n'
    line2 = b'1; CREATE ROLE x",,,,,,,,,psql,client backend,,0\n'
    partial = b'2026-11-23 02:31:00 UTC,bg_r1,db,1,h,s1,2,idle,,,0,LOG,00000,"statement: GR'
    chunk = line1 + line2 + partial
    assert complete_prefix(chunk, quoted=True) == len(line1 + line2)
    assert complete_prefix(line1, quoted=True) == 0
    [record] = records(line1 + line2, jsonlog=False)
    assert record["message"] == "statement: SELECT\n1; CREATE ROLE x"
    [found] = findings([record])
    assert (found.kind, found.db_user, found.session) == ("identity_change", "bg_r1", "s1")


def test_jsonlog_and_extended_protocol_statements():
    lines = [
        {"timestamp": "2026-11-23 02:30:00 UTC", "user": "bg_r2", "dbname": "db",
         "session_id": "s2", "error_severity": "LOG",
         "message": "execute <unnamed>: GRANT pg_read_server_files TO bg_r2"},
        {"timestamp": "2026-11-23 02:30:01 UTC", "user": "bg_r2", "dbname": "db",
         "session_id": "s2", "error_severity": "ERROR",
         "message": "permission denied to grant role"},
        {"timestamp": "2026-11-23 02:30:02 UTC", "user": "app", "dbname": "db",
         "session_id": "s3", "message": "statement: CREATE ROLE y"},
    ]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    [found] = findings(records(data, jsonlog=True))
    assert (found.kind, found.statement) == ("privilege_change",
                                             "GRANT pg_read_server_files TO bg_r2")


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    engine: Engine = make_engine(f"sqlite:///{tmp_path / 'broker.db'}")
    upgrade(engine)
    logs = tmp_path / "pglog"
    logs.mkdir()
    harness = make_harness(engine, FakeClock(), logs)
    yield harness
    harness.ops.close()
    engine.dispose()


def cursors(h: Harness) -> list[tuple[str, int]]:
    with h.engine.connect() as conn:
        return [(r.file, r.position) for r in conn.execute(select(tn.log_cursors))]


def high_risk_events(h: Harness) -> int:
    with h.engine.connect() as conn:
        return len(conn.execute(select(t.events.c.idx).where(
            t.events.c.action == "grant:action:high_risk")).all())


def test_the_watcher_reads_each_statement_once_across_restarts(h):
    assert h.log_dir is not None
    h.write_statement_log("bg_unknown", "CREATE ROLE a")
    assert h.ops.watcher.poll() == 1
    assert h.ops.watcher.poll() == 0
    size = (h.log_dir / "pg.csv").stat().st_size
    assert cursors(h) == [("pg.csv", size)]
    with (h.log_dir / "pg.csv").open("a") as fh:  # a record still being written
        fh.write('2026-11-23 02:31:00 UTC,bg_unknown,db,1,h,s,9,idle,,,0,LOG,00000,"statement: ')
    assert h.ops.watcher.poll() == 0
    with (h.log_dir / "pg.csv").open("a") as fh:
        fh.write('DROP ROLE a",,,,,,,,,psql,client backend,,0\n')
    h.ops.close()  # the broker stops; a new one starts on the same store
    again = make_harness(h.engine, h.clock, h.log_dir)
    try:
        assert again.ops.watcher.poll() == 1
        assert again.ops.watcher.poll() == 0
        assert high_risk_events(again) == 2
        (h.log_dir / "pg.csv").write_text("")  # rotated with truncation
        again.write_statement_log("bg_unknown", "ALTER ROLE a LOGIN")
        assert again.ops.watcher.poll() == 1
    finally:
        again.ops.close()
    alert = [r.payload for r in h.outbox(topic="alert.identity_change", sink="hooks")][-1]
    assert alert["grant_id"] is None  # no grant owns this role: drift, alerted all the same
    assert alert["details"]["db_user"] == "bg_unknown"
    assert alert["details"]["statement"] == "ALTER ROLE a LOGIN"


class Unreachable:
    target = "embeddings-db"

    def __init__(self) -> None:
        self.calls = 0
        self.closed = 0

    def files(self) -> list[tuple[str, int]]:
        self.calls += 1
        raise OSError("could not open directory \"log\": No such file or directory")

    def read(self, name: str, offset: int, length: int) -> bytes:
        raise AssertionError("never reached")

    def close(self) -> None:
        self.closed += 1


def test_an_unreadable_log_pauses_detection_instead_of_failing(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'broker.db'}")
    upgrade(engine)
    source = Unreachable()
    watcher = StatementLogWatcher(engine, [source], FakeClock())
    assert watcher.poll() == 0
    assert watcher.poll() == 0  # resting: not asked again until the retry time
    assert (source.calls, source.closed) == (1, 1)
    engine.dispose()


def test_a_configured_marker_prefix_is_the_one_watched():
    """With BREAKGLASS_MARKER_PREFIX=acme_bg_, statements of acme_bg_ roles are findings and
    those of a bg_ role (not the deployment's prefix) are not."""
    lines = [
        {"timestamp": "2026-11-23 02:30:00 UTC", "user": user, "dbname": "db",
         "session_id": "s", "error_severity": "LOG", "message": f"statement: CREATE ROLE {user}x"}
        for user in ("acme_bg_r1", "bg_r2")]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    [found] = findings(records(data, jsonlog=True), "acme_bg_")
    assert found.statement == "CREATE ROLE acme_bg_r1x"
