"""Reviews on both storage backends, and overdue alerts raised once by a fleet of brokers."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, func, select

from breakglass.domain.events import EventTag
from breakglass.reviews.service import NewTask
from breakglass.storage import tables as t
from tests.fakes import FakeClock
from tests.ops_harness import Harness, make_harness


@pytest.fixture
def h(engine: Engine) -> Iterator[Harness]:
    harness = make_harness(engine, FakeClock())
    yield harness
    harness.ops.close()


def end_access(h: Harness, incident: str) -> str:
    rid = h.broker.request_access(h.who("uma"), ["embeddings-read"], incident=incident,
                                  reason="recovery").request.id
    h.clock.advance(minutes=3)
    h.broker.revoke(h.who("uma"), rid)
    return rid


def test_review_lifecycle_on_both_backends(h):
    rid = end_access(h, "SEV-8001")
    [review] = h.ops.reviews.search(incident="SEV-8001")
    assert (review.request_id, review.reviewer, review.state) == (rid, "vera", "open")
    h.clock.advance(hours=25)
    assert h.ops.reviews.raise_overdue() == 1
    done = h.ops.reviews.complete(h.who("vera"), review.id, "fine",
                                  [NewTask("uma", "write the postmortem")])
    h.ops.reviews.close_task(h.who("uma"), done.tasks[0].id, "written")
    closed = h.ops.reviews.get(review.id)
    assert closed.state == "closed"
    assert closed.closure_seconds() == 25 * 3600
    rollup = h.ops.reviews.rollup("SEV-8001")
    assert (rollup["complete"], rollup["tasks"]) == (True, {"total": 1, "open": 0, "closed": 1})


def test_brokers_sharing_a_database_raise_each_overdue_alert_once(h, engine):
    for i in range(12):
        end_access(h, f"SEV-81{i:02d}")
    h.clock.advance(hours=30)
    raised: list[int] = []
    barrier = threading.Barrier(4)

    def check() -> None:
        barrier.wait()
        raised.append(h.ops.reviews.raise_overdue())

    threads = [threading.Thread(target=check) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(raised) == 12
    with engine.connect() as conn:
        events = conn.execute(select(func.count()).select_from(t.events).where(
            t.events.c.action == EventTag.REVIEW_OVERDUE.value)).scalar_one()
    assert events == 12
    assert len(h.outbox(topic="alert.review_overdue", sink="hooks")) == 12
