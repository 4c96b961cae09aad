"""The event log on both backends: indices taken at commit, exact leaves, nothing partial."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import DBAPIError

from breakglass.audit.canonical import event_leaf_hash
from breakglass.audit.merkle import TreeState
from breakglass.domain.events import serving
from breakglass.storage import tables as t
from breakglass.storage.events import (
    Appended,
    EventLog,
    Step,
    before_index,
    composing,
    observe,
    row_to_event,
)
from breakglass.storage.migrate import alembic_config, upgrade
from breakglass.storage.uow import UnitOfWork

NOW = datetime(2026, 11, 23, 2, 0, 0, 123456, tzinfo=UTC)
UNUSUAL = {"note": "ünïcödé ✓ \U0001f6a8 \"quoted\" \\ back\nline", "n": 2**53 - 1,
           "nested": {"b": [1, None, True], "a": "\u2028"}, "empty": {}}


def stored(engine: Engine) -> list[tuple[int, bytes, dict[str, object]]]:
    with engine.connect() as conn:
        rows = conn.execute(select(t.events).order_by(t.events.c.idx)).all()
    return [(int(r.idx), bytes(r.leaf_hash), row_to_event(r).record()) for r in rows]


def head_size(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(t.log_head.c.size)).scalar_one())


def append(uow: UnitOfWork, i: int, **extra: object) -> None:
    uow.events.append(ts=NOW, actor=f"actor-{i}", action="test:event:appended",
                      incident="SEV-1", request_id=f"req-{i}", payload={"i": i, **UNUSUAL},
                      **extra)  # type: ignore[arg-type]


def test_each_stored_leaf_hash_is_the_hash_of_its_canonical_record(engine: Engine) -> None:
    with UnitOfWork(engine) as uow:
        append(uow, 0, reason="first, alone")
    with UnitOfWork(engine) as uow:  # several events in one transaction, after a read
        uow.connection.execute(select(func.count()).select_from(t.requests))
        for i in (1, 2, 3):
            append(uow, i, zone="B", rule=None)
    rows = stored(engine)
    assert [idx for idx, _, _ in rows] == [0, 1, 2, 3]
    for idx, leaf, record in rows:
        assert record["index"] == idx
        assert leaf == event_leaf_hash(record)
    assert rows[2][2]["payload"] == {"i": 2, **UNUSUAL}
    assert head_size(engine) == 4


def test_concurrent_writers_get_gapless_indices_each_event_once(engine: Engine) -> None:
    writers, each = 6, 25

    def work(w: int) -> None:
        for j in range(each):
            with UnitOfWork(engine) as uow:
                append(uow, w * each + j)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(writers)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    rows = stored(engine)
    assert [idx for idx, _, _ in rows] == list(range(writers * each))
    assert sorted(r[2]["payload"]["i"] for r in rows) == list(range(writers * each))  # type: ignore[index]
    assert all(leaf == event_leaf_hash(record) for _, leaf, record in rows)
    assert head_size(engine) == writers * each


def test_a_failed_transaction_leaves_no_event_and_no_gap(engine: Engine) -> None:
    with UnitOfWork(engine) as uow:
        append(uow, 0)

    def failing_change() -> None:
        with UnitOfWork(engine) as uow:
            append(uow, 1)
            uow.events.flush()  # written inside the transaction, then the change fails
            raise RuntimeError("the state change failed")

    with pytest.raises(RuntimeError):
        failing_change()
    with UnitOfWork(engine) as uow:
        append(uow, 2)
    assert [(idx, r["request_id"]) for idx, _, r in stored(engine)] == [(0, "req-0"),
                                                                        (1, "req-2")]
    assert head_size(engine) == 2


def test_a_refused_write_on_postgresql_changes_nothing_and_frees_the_connection(
        pg_engine: Engine) -> None:
    with UnitOfWork(pg_engine) as uow:
        append(uow, 0)

    def too_long(started: bool) -> None:
        with UnitOfWork(pg_engine) as uow:
            if started:  # a transaction that already ran a statement, or one that did not
                uow.connection.execute(select(1))
            uow.events.append(ts=NOW, actor="x" * 201, action="test:event:appended")

    for started in (False, True):
        with pytest.raises(DBAPIError):
            too_long(started)
    for i in (1, 2):  # the pooled connections are clean and the next index is the next
        with UnitOfWork(pg_engine) as uow:
            append(uow, i)
    assert [idx for idx, _, _ in stored(pg_engine)] == [0, 1, 2]
    assert head_size(pg_engine) == 3


def test_observers_see_the_index_inside_the_transaction_and_their_events_follow(
        engine: Engine) -> None:
    seen: list[tuple[int, str]] = []

    def observer(a: Appended) -> None:
        seen.append((a.event.index, a.event.action))
        if a.event.action == "test:event:appended":
            a.log.append(ts=NOW, actor="observer", action="test:event:noticed",
                         payload={"of": a.event.index})

    remove = observe(engine, observer)
    try:
        with UnitOfWork(engine) as uow:
            append(uow, 0)
            append(uow, 1)
    finally:
        remove()
    assert seen == [(0, "test:event:appended"), (1, "test:event:appended"),
                    (2, "test:event:noticed"), (3, "test:event:noticed")]
    rows = stored(engine)
    assert [r["payload"] for _, _, r in rows[2:]] == [{"of": 0}, {"of": 1}]
    assert all(leaf == event_leaf_hash(record) for _, leaf, record in rows)


def test_event_only_writers_commit_together_and_a_bad_event_fails_only_its_writer(
        engine: Engine) -> None:
    writers, each = 8, 20
    errors: list[tuple[int, BaseException]] = []
    start = threading.Barrier(writers)

    def work(w: int) -> None:
        start.wait()
        for j in range(each):
            try:
                with UnitOfWork(engine) as uow:
                    if w == 3 and j % 5 == 0:  # refused by the database: actor is NOT NULL
                        uow.events.append(ts=NOW, actor=None,  # type: ignore[arg-type]
                                          action="test:event:appended")
                    else:
                        append(uow, w * each + j)
            except DBAPIError as exc:
                errors.append((w * each + j, exc))

    threads = [threading.Thread(target=work, args=(w,)) for w in range(writers)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    bad = {3 * each + j for j in range(0, each, 5)}
    assert sorted(i for i, _ in errors) == sorted(bad)
    rows = stored(engine)
    assert [idx for idx, _, _ in rows] == list(range(writers * each - len(bad)))
    assert sorted(r[2]["payload"]["i"] for r in rows) == sorted(  # type: ignore[index]
        set(range(writers * each)) - bad)
    assert all(leaf == event_leaf_hash(record) for _, leaf, record in rows)
    assert head_size(engine) == len(rows)


def test_a_composing_observer_reads_before_the_index_and_holds_the_head_only_to_write(
        engine: Engine) -> None:
    composed: list[tuple[int, str]] = []
    stamped: list[tuple[int, str]] = []

    def compose(a: Appended) -> Step | None:
        composed.append((a.event.index, a.event.action))
        if a.event.action != "test:event:wanted":
            return None

        def step(indexed: Appended) -> None:
            stamped.append((indexed.event.index, indexed.event.action))
            indexed.connection.execute(text("SELECT 1"))

        return step

    remove = observe(engine, composing(compose))
    try:
        with UnitOfWork(engine) as uow:
            append(uow, 0)
            uow.events.append(ts=NOW, actor="a", action="test:event:wanted")
            append(uow, 2)
    finally:
        remove()
    assert composed == [(-1, "test:event:appended"), (-1, "test:event:wanted"),
                        (-1, "test:event:appended")]
    assert stamped == [(1, "test:event:wanted")]
    assert [idx for idx, _, _ in stored(engine)] == [0, 1, 2]

    # a transaction with nothing to write: on PostgreSQL the leaves and the commit go together
    with engine.connect() as conn:
        conn.begin()
        log = EventLog(lambda: conn, locking=engine.dialect.name == "postgresql",
                       observers=(composing(compose),))
        log.append(ts=NOW, actor="a", action="test:event:ignored")
        assert log.flush(commit=True) is True
        if engine.dialect.name == "postgresql":
            raw = conn.connection.driver_connection
            assert raw.info.transaction_status == raw.info.transaction_status.IDLE  # type: ignore[union-attr]
        conn.commit()
        conn.begin()
        log.append(ts=NOW, actor="a", action="test:event:wanted")
        assert log.flush(commit=True) is False  # held for the step, committed after it
        conn.commit()
    assert stamped == [(1, "test:event:wanted"), (4, "test:event:wanted")]
    assert head_size(engine) == 5


def test_events_written_while_serving_a_caller_carry_its_address(engine: Engine) -> None:
    with serving("198.51.100.23"):
        with UnitOfWork(engine) as uow:  # a state change
            uow.connection.execute(select(func.count()).select_from(t.requests))
            append(uow, 0)
        with UnitOfWork(engine) as uow:  # an event alone, written by the group commit
            append(uow, 1)
        with UnitOfWork(engine) as uow:  # a payload that names its own source keeps it
            uow.events.append(ts=NOW, actor="anonymous", action="identity:token:refused",
                              payload={"source": "203.0.113.9"})
        with serving(None), UnitOfWork(engine) as uow:  # the broker's own, inside a call
            append(uow, 3)
    with UnitOfWork(engine) as uow:  # background work serves no caller
        append(uow, 4)
    rows = stored(engine)
    sources = [record["payload"].get("source") for _, _, record in rows]  # type: ignore[union-attr]
    assert sources == ["198.51.100.23", "198.51.100.23", "203.0.113.9", None, None]
    assert all(leaf == event_leaf_hash(record) for _, leaf, record in rows)


def test_observers_that_need_no_index_run_before_the_head_is_taken(engine: Engine) -> None:
    seen: list[tuple[int, str, int]] = []

    def early(a: Appended) -> None:  # sees the head as it was: nothing written yet
        size = a.connection.execute(select(t.log_head.c.size)).scalar_one()
        seen.append((a.event.index, a.event.action, size))
        if a.event.action == "test:event:appended":
            a.log.append(ts=NOW, actor="observer", action="test:event:noticed")

    remove = observe(engine, before_index(early))
    try:
        with UnitOfWork(engine) as uow:
            append(uow, 0)
    finally:
        remove()
    assert seen == [(-1, "test:event:appended", 0), (-1, "test:event:noticed", 0)]
    assert [(idx, r["action"]) for idx, _, r in stored(engine)] == [
        (0, "test:event:appended"), (1, "test:event:noticed")]


def test_downgrading_past_the_counter_rebuilds_the_stored_merkle_edge(engine: Engine) -> None:
    from alembic import command  # noqa: PLC0415 - only this test migrates down

    for i in range(5):
        with UnitOfWork(engine) as uow:
            append(uow, i)
    expected = TreeState()
    for _, leaf, _ in stored(engine):
        expected.append(leaf)
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0004")
    with engine.connect() as conn:
        state = conn.execute(text("SELECT size, state FROM log_head")).one()
    loaded = json.loads(state.state) if isinstance(state.state, str) else state.state
    assert (state.size, TreeState.from_json(loaded)) == (5, expected)
    upgrade(engine)
    with UnitOfWork(engine) as uow:
        append(uow, 5)
    assert [idx for idx, _, _ in stored(engine)] == list(range(6))
