"""Refusals of unauthenticated callers: recorded one by one up to a budget, counted beyond it.

An anonymous caller must not be able to grow the audit log as fast as it can
send bad tokens, and no refusal may go unaccounted for: every refusal is
either its own ``identity:token:refused`` event or part of the count in an
``identity:refusals:counted`` event written when its window ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from breakglass.audit.ocsf import to_ocsf
from breakglass.domain.errors import InvalidInput
from breakglass.domain.events import EventTag, serving
from breakglass.metrics.report import policy_violations
from breakglass.service.refusals import OTHER_SOURCES, RefusalBudget, RefusalRecorder
from breakglass.settings import Settings
from breakglass.storage import tables as t
from breakglass.storage.events import row_to_event
from breakglass.storage.uow import UnitOfWork
from tests.fakes import FakeClock
from tests.ops_harness import Harness, make_harness

pytestmark = pytest.mark.unit

BAD = "identity.bad_signature"
EXPIRED = "identity.expired"


@pytest.fixture
def engine(sqlite: Engine) -> Engine:
    return sqlite


def recorder(engine: Engine, clock: FakeClock, **budget: Any) -> RefusalRecorder:
    return RefusalRecorder(lambda: UnitOfWork(engine), clock, RefusalBudget(**budget))


def events(engine: Engine, action: str) -> list[Any]:
    with engine.connect() as conn:
        rows = conn.execute(select(t.events).where(t.events.c.action == action)
                            .order_by(t.events.c.idx)).all()
    return [row_to_event(r) for r in rows]


def accounted(engine: Engine) -> int:
    """Refusals in the log: one per recorded event plus every summary's count."""
    single = len(events(engine, EventTag.AUTH_REFUSED))
    summaries = events(engine, EventTag.AUTH_REFUSALS_COUNTED)
    return single + sum(e.payload["counted"] for e in summaries)


def test_refusals_within_budget_are_each_an_event_with_rule_reason_and_address(engine, clock):
    rec = recorder(engine, clock)
    assert rec.refused(BAD, "signature does not verify", "203.0.113.7")
    assert rec.refused(EXPIRED, "token expired", None)
    [first, second] = events(engine, EventTag.AUTH_REFUSED)
    assert (first.actor, first.outcome, first.rule, first.reason, first.payload) == (
        "anonymous", "denied", BAD, "signature does not verify", {"source": "203.0.113.7"})
    assert (second.rule, second.payload) == (EXPIRED, {"source": "unknown"})
    assert rec.flush(force=True) == 0  # nothing was counted: no summary
    assert events(engine, EventTag.AUTH_REFUSALS_COUNTED) == []


def test_one_address_over_its_budget_is_counted_and_summarised_when_the_window_ends(
        engine, clock):
    rec = recorder(engine, clock, per_source=3, overall=100)
    start = clock.now()
    outcomes = []
    for i in range(10):
        outcomes.append(rec.refused(BAD if i % 2 else EXPIRED, "no", "198.51.100.9"))
        clock.advance(seconds=1)
    assert outcomes == [True] * 3 + [False] * 7
    assert rec.refused(BAD, "no", "192.0.2.1"), "another address still has its own budget"
    assert len(events(engine, EventTag.AUTH_REFUSED)) == 4
    assert rec.flush() == 0, "the window has not ended"
    assert events(engine, EventTag.AUTH_REFUSALS_COUNTED) == []

    clock.advance(minutes=1)
    assert rec.flush() == 2  # one summary per refusing rule
    summaries = {e.rule: e for e in events(engine, EventTag.AUTH_REFUSALS_COUNTED)}
    assert set(summaries) == {BAD, EXPIRED}
    bad = summaries[BAD]
    # refusals 3..9 were counted: odd ones (3, 5, 7, 9) under BAD, even ones under EXPIRED
    assert (bad.payload["counted"], summaries[EXPIRED].payload["counted"]) == (4, 3)
    assert bad.payload["sources"] == {"198.51.100.9": 4}
    assert (bad.payload["distinct_sources"], bad.payload["other_sources"]) == (1, 0)
    assert bad.payload["from"] == (start + timedelta(seconds=3)).isoformat()
    assert bad.payload["to"] == (start + timedelta(seconds=9)).isoformat()
    assert (bad.actor, bad.outcome) == ("anonymous", "denied")
    assert "counted, not recorded one by one" in (bad.reason or "")
    assert accounted(engine) == 11

    # a new window: the address is recorded again
    assert rec.refused(BAD, "no", "198.51.100.9")


def test_a_summary_written_while_serving_a_call_names_no_single_caller(engine, clock):
    rec = recorder(engine, clock, per_source=0, overall=0)
    for _ in range(3):
        rec.refused(BAD, "no", "192.0.2.77")
    clock.advance(minutes=1, seconds=1)
    with serving("192.0.2.88"):  # the next call's refusal ends the window and writes it
        rec.refused(BAD, "no", "192.0.2.88")
    [summary] = events(engine, EventTag.AUTH_REFUSALS_COUNTED)
    assert "source" not in summary.payload
    assert summary.payload["sources"] == {"192.0.2.77": 3}


def test_the_overall_budget_caps_the_log_whatever_the_number_of_addresses(engine, clock):
    rec = recorder(engine, clock, per_source=5, overall=20)
    for i in range(200):
        rec.refused(BAD, "no", f"10.0.{i // 250}.{i % 250}")
    assert len(events(engine, EventTag.AUTH_REFUSED)) == 20
    rec.flush(force=True)
    [summary] = events(engine, EventTag.AUTH_REFUSALS_COUNTED)
    assert summary.payload["counted"] == 180
    assert summary.payload["distinct_sources"] == 180
    assert len(summary.payload["sources"]) == 20  # the busiest addresses, by name
    assert summary.payload["other_sources"] == 160
    assert accounted(engine) == 200


def test_addresses_beyond_the_memory_bound_are_counted_together(engine, clock):
    rec = recorder(engine, clock, per_source=0, overall=0, max_sources=3)
    for i in range(10):
        assert not rec.refused(BAD, "no", f"10.1.0.{i}")
    rec.flush(force=True)
    [summary] = events(engine, EventTag.AUTH_REFUSALS_COUNTED)
    assert summary.payload["counted"] == 10
    assert summary.payload["sources"][OTHER_SOURCES] == 7
    assert summary.payload["distinct_sources"] == 4


def test_counts_survive_a_summary_that_cannot_be_written(engine, clock):
    failing = {"on": True}

    def uow() -> UnitOfWork:
        if failing["on"]:
            raise RuntimeError("database unavailable")
        return UnitOfWork(engine)

    rec = RefusalRecorder(uow, clock, RefusalBudget(per_source=0, overall=0))
    for _ in range(4):
        rec.refused(BAD, "no", "192.0.2.5")
    clock.advance(minutes=2)
    with pytest.raises(RuntimeError):
        rec.flush()
    rec.refused(BAD, "no", "192.0.2.5")
    failing["on"] = False
    clock.advance(minutes=2)
    assert rec.flush() == 1
    [summary] = events(engine, EventTag.AUTH_REFUSALS_COUNTED)
    assert summary.payload["counted"] == 5


@pytest.fixture
def h(engine: Engine, clock: FakeClock, tmp_path: Path) -> Iterator[Harness]:
    logs = tmp_path / "pglog"
    logs.mkdir()
    harness = make_harness(engine, clock, logs)
    yield harness
    harness.ops.close()


def flood(rec: RefusalRecorder, clock: FakeClock, n: int) -> None:
    for _ in range(n):
        rec.refused(BAD, "no", "203.0.113.50")
    clock.advance(minutes=1, seconds=1)
    rec.flush()


def test_a_flood_alerts_once_until_a_quiet_window_ends_it(h, engine, clock):
    rec = recorder(engine, clock, per_source=2, overall=50)
    flood(rec, clock, 10)
    flood(rec, clock, 10)  # the same flood, still going: no second alert
    [alert] = [row.payload for row in h.outbox(topic="alert.refusal_flood", sink="hooks")]
    assert alert["severity"] == "medium"
    assert alert["summary"].startswith("refusal flood: 8 more refusals under identity.bad_")
    assert alert["details"]["action"] == EventTag.AUTH_REFUSALS_COUNTED
    flood(rec, clock, 1)  # within budget: a quiet window
    flood(rec, clock, 10)  # a new flood
    assert len(h.outbox(topic="alert.refusal_flood", sink="hooks")) == 2


def test_the_report_counts_every_refusal_a_summary_stands_for(engine, clock):
    start = clock.now()
    rec = recorder(engine, clock, per_source=2, overall=50)
    for _ in range(9):
        rec.refused(BAD, "no", "203.0.113.60")
    rec.flush(force=True)
    with engine.connect() as conn:
        found = policy_violations(conn, start, clock.now() + timedelta(seconds=1))
    assert found["denied"] == 9
    assert found["by_rule"] == [{"rule": BAD, "count": 9}]
    assert found["by_action"] == {EventTag.AUTH_REFUSED: 2, EventTag.AUTH_REFUSALS_COUNTED: 7}


def _entry(action: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {"index": 4, "ts": "2026-11-24T02:00:00+00:00", "actor": "anonymous",
            "action": action, "outcome": "denied", "request_id": None, "grant_id": None,
            "incident": None, "zone": None, "rule": BAD, "reason": "no", "payload": payload,
            "leaf_hash": "00" * 32}


def test_ocsf_records_carry_the_address_and_a_summary_its_count_and_period():
    single = to_ocsf(_entry(EventTag.AUTH_REFUSED, {"source": "2001:db8::1"}))
    assert (single["class_uid"], single["src_endpoint"]) == (3002, {"ip": "2001:db8::1"})
    assert "count" not in single
    assert "src_endpoint" not in to_ocsf(_entry(EventTag.AUTH_REFUSED, {"source": "unknown"}))
    summary = to_ocsf(_entry(EventTag.AUTH_REFUSALS_COUNTED, {
        "counted": 41, "from": "2026-11-24T01:59:00+00:00", "to": "2026-11-24T01:59:58+00:00"}))
    assert (summary["class_uid"], summary["status"]) == (3002, "Failure")
    assert (summary["count"], summary["start_time_dt"], summary["end_time_dt"]) == (
        41, "2026-11-24T01:59:00+00:00", "2026-11-24T01:59:58+00:00")
    assert summary["end_time"] - summary["start_time"] == 58_000  # epoch milliseconds


@pytest.mark.parametrize("value", ["-1", "ten", "1e3", "²", "1234567890"])
def test_a_budget_setting_that_is_not_a_whole_number_stops_the_broker(tmp_path, value):
    env = {"BREAKGLASS_SECRET_KEY": "k" * 44, "BREAKGLASS_ANON_REFUSALS_PER_ADDRESS": value}
    with pytest.raises(InvalidInput) as refused:
        Settings.from_env(tmp_path / "catalog.yaml", env=env, state_dir=tmp_path)
    assert refused.value.rule == "settings.refusal_budget"
    assert "BREAKGLASS_ANON_REFUSALS_PER_ADDRESS" in refused.value.message


def test_budget_settings_are_read_from_the_environment(tmp_path):
    env = {"BREAKGLASS_SECRET_KEY": "k" * 44, "BREAKGLASS_ANON_REFUSALS_PER_ADDRESS": "5",
           "BREAKGLASS_ANON_REFUSALS_PER_MINUTE": "0"}
    found = Settings.from_env(tmp_path / "catalog.yaml", env=env, state_dir=tmp_path)
    assert (found.refusals_per_address, found.refusals_per_minute) == (5, 0)
