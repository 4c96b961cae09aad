"""Tampering with the stored audit log is detected at its exact position (both backends)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine, delete, select, text, update

from breakglass.audit.canonical import event_leaf_hash
from breakglass.bootstrap import build_audit
from breakglass.cli.audit import verify_export
from breakglass.domain.errors import AuditError
from breakglass.service.auditlog import AuditLog
from breakglass.service.broker import Broker
from breakglass.service.ports import SecretBox
from breakglass.settings import Settings
from breakglass.storage import tables as t
from breakglass.storage.events import row_to_event
from breakglass.storage.migrate import upgrade
from breakglass.storage.uow import UnitOfWork, make_engine
from tests.conftest import CATALOG
from tests.fakes import MemoryConnector


def build(engine: Engine, tmp_path: Path, loaded, clock) -> tuple[Broker, AuditLog]:
    settings = Settings(catalog=CATALOG, db_url="unused", dev=True, state_dir=tmp_path,
                        secret_key=SecretBox.new_key(), audit_key_file=tmp_path / "audit.key",
                        anchor_dir=tmp_path / "anchors")
    audit = build_audit(settings, engine, loaded.catalog.organization, clock)
    broker = Broker(policy=loaded.policy, uow=lambda: UnitOfWork(engine),
                    connectors={"embeddings-db": MemoryConnector("embeddings-db")}, clock=clock,
                    secrets_box=SecretBox(SecretBox.new_key()))
    return broker, audit


def history(broker: Broker, people, audit: AuditLog, n: int = 4) -> int:
    for i in range(n):
        view = broker.request_access(people["uma"], ["embeddings-read"],
                                     incident=f"SEV-{1000 + i}", reason="recovery")
        broker.revoke(people["uma"], view.request.id)
    audit.checkpoint()
    return audit.head()[0]


def rewrite(engine: Engine, index: int, **values) -> None:
    with engine.begin() as conn:
        conn.execute(update(t.events).where(t.events.c.idx == index).values(**values))


def flip_byte(engine: Engine, k: int) -> None:
    with engine.connect() as conn:
        reason = conn.execute(select(t.events.c.actor).where(t.events.c.idx == k)).scalar_one()
    rewrite(engine, k, actor=reason[:-1] + chr(ord(reason[-1]) ^ 1))


def delete_row(engine: Engine, k: int) -> None:
    with engine.begin() as conn:
        conn.execute(delete(t.events).where(t.events.c.idx == k))


def swap(engine: Engine, k: int) -> None:
    with engine.connect() as conn:
        a = conn.execute(select(t.events).where(t.events.c.idx == k)).one()._asdict()
        b = conn.execute(select(t.events).where(t.events.c.idx == k + 1)).one()._asdict()
    rewrite(engine, k, **{c: v for c, v in b.items() if c != "idx"})
    rewrite(engine, k + 1, **{c: v for c, v in a.items() if c != "idx"})


def insert_forged(engine: Engine, k: int) -> None:
    """Shift rows k.. up by one and put a forged, self-consistent row at k."""
    with engine.begin() as conn:
        rows = conn.execute(select(t.events).where(t.events.c.idx >= k)
                            .order_by(t.events.c.idx.desc())).all()
        for row in rows:
            conn.execute(update(t.events).where(t.events.c.idx == row.idx)
                         .values(idx=row.idx + 1))
        template = rows[-1]._asdict()
        template.update(idx=k, actor="mallory", reason="forged approval")
        conn.execute(t.events.insert().values(**template))


def truncate_tail(engine: Engine, k: int) -> None:
    with engine.begin() as conn:
        conn.execute(delete(t.events).where(t.events.c.idx >= k))


def rewrite_everything(engine: Engine, k: int) -> None:
    """Change row k and recompute every stored hash so the rows agree with themselves."""
    rewrite(engine, k, actor="mallory")
    with engine.connect() as conn:
        rows = conn.execute(select(t.events).order_by(t.events.c.idx)).all()
    with engine.begin() as conn:
        for row in rows:
            digest = event_leaf_hash(row_to_event(row).record())
            conn.execute(update(t.events).where(t.events.c.idx == row.idx)
                         .values(leaf_hash=digest))


TAMPERS: list[tuple[str, Callable[[Engine, int], None], set[str]]] = [
    ("flip one byte", flip_byte, {"leaf_hash"}),
    ("delete a row", delete_row, {"gap"}),
    ("swap two rows", swap, {"leaf_hash"}),
    ("insert a forged row", insert_forged, {"leaf_hash"}),
    ("truncate the tail", truncate_tail, {"truncated"}),
    ("rewrite all rows and hashes", rewrite_everything, {"checkpoint"}),
]


@pytest.mark.parametrize(("name", "tamper", "kinds"), TAMPERS, ids=[x[0] for x in TAMPERS])
def test_tampering_is_detected_at_its_index(engine, tmp_path, loaded, clock, people, name,
                                            tamper, kinds):
    broker, audit = build(engine, tmp_path, loaded, clock)
    size = history(broker, people, audit)
    assert audit.verify().ok
    k = size // 2
    tamper(engine, k)
    report = audit.verify()
    assert not report.ok, name
    first = report.problems[0]
    assert first.kind in kinds, (name, report.problems[:3])
    if first.kind == "checkpoint":
        assert first.index is not None
        assert first.index <= k  # the first index the signed root no longer covers
    else:
        assert first.index == k, (name, report.problems[:3])


def test_an_older_copy_of_the_database_is_refused(tmp_path, loaded, clock, people):
    db = tmp_path / "broker.db"
    engine = make_engine(f"sqlite:///{db}")
    upgrade(engine)
    broker, audit = build(engine, tmp_path, loaded, clock)
    history(broker, people, audit, n=2)
    engine.dispose()
    shutil.copy(db, tmp_path / "backup.db")
    engine = make_engine(f"sqlite:///{db}")
    broker, audit = build(engine, tmp_path, loaded, clock)
    history(broker, people, audit, n=2)  # more history, anchored
    engine.dispose()
    shutil.copy(tmp_path / "backup.db", db)  # the operator restores last night's backup
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    engine = make_engine(f"sqlite:///{db}")
    _, audit = build(engine, tmp_path, loaded, clock)
    with pytest.raises(AuditError, match="restored or rolled back"):
        audit.check_against_anchors()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM events")).scalar_one() > 0
    engine.dispose()


def test_a_rewritten_prefix_is_refused_at_startup(engine, tmp_path, loaded, clock, people):
    broker, audit = build(engine, tmp_path, loaded, clock)
    history(broker, people, audit, n=2)
    rewrite_everything(engine, 1)
    _, fresh = build(engine, tmp_path, loaded, clock)
    with pytest.raises(AuditError, match="history was rewritten"):
        fresh.check_against_anchors()


def test_a_checkpoint_is_never_signed_for_a_shrunken_tree(engine, tmp_path, loaded, clock,
                                                          people):
    broker, audit = build(engine, tmp_path, loaded, clock)
    size = history(broker, people, audit, n=2)
    truncate_tail(engine, size - 3)
    with engine.begin() as conn:  # and make the head row agree with the truncated log
        conn.execute(update(t.log_head).values(size=size - 3))
    broker.request_access(people["uma"], ["embeddings-read"], incident="SEV-2000",
                          reason="recovery")
    broker.request_access(people["uma"], ["embeddings-read"], incident="SEV-2001",
                          reason="recovery")
    with pytest.raises(AuditError, match="refusing to sign"):
        audit.checkpoint()


def test_export_verifies_offline_and_ocsf_is_pinned(engine, tmp_path, loaded, clock, people):
    broker, audit = build(engine, tmp_path, loaded, clock)
    view = broker.request_access(people["uma"], ["embeddings-read"], incident="SEV-3000",
                                 reason="recovery")
    secret = broker.credentials(people["uma"], view.request.id)[0]["token"]
    broker.revoke(people["uma"], view.request.id)
    audit.checkpoint()
    out = tmp_path / "export"
    audit.export(out, "jsonl")
    report = verify_export(out, audit.verifier_keys)
    assert report.ok, report.problems
    assert report.size == audit.head()[0]
    audit.export(out, "ocsf")
    lines = [json.loads(x) for x in (out / "events.ocsf.jsonl").read_text().splitlines()]
    assert {x["metadata"]["version"] for x in lines} == {"1.3.0"}
    classes = {x["unmapped"]["action"]: x["class_uid"] for x in lines}
    assert classes["request:created"] == 6003
    assert classes["grant:credential:issued"] == 3005
    everything = (out / "events.jsonl").read_text() + (out / "events.ocsf.jsonl").read_text()
    assert secret not in everything
    # a modified export fails offline, at the modified row
    rows = (out / "events.jsonl").read_text().splitlines()
    assert '"actor": "uma"' in rows[1]
    rows[1] = rows[1].replace('"actor": "uma"', '"actor": "eve"')
    (out / "events.jsonl").write_text("\n".join(rows) + "\n")
    bad = verify_export(out, audit.verifier_keys)
    assert not bad.ok
    assert bad.problems[0].index == 1
