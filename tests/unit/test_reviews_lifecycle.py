"""Post-incident reviews: opened when access ends, due in 24 h, tasks closed one by one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from breakglass.catalog.loader import LoadedCatalog
from breakglass.domain.errors import InvalidInput, NotFound, PolicyRefused
from breakglass.domain.events import EventTag
from breakglass.notify.operations import build_operations
from breakglass.reviews.opener import pick_reviewer
from breakglass.reviews.service import NewTask
from breakglass.storage.migrate import upgrade
from breakglass.storage.uow import make_engine
from tests.fakes import FakeClock
from tests.ops_harness import ENV, Harness, make_harness


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    engine: Engine = make_engine(f"sqlite:///{tmp_path / 'broker.db'}")
    upgrade(engine)
    harness = make_harness(engine, FakeClock())
    yield harness
    harness.ops.close()
    engine.dispose()


def ended_grant(h: Harness, incident: str = "SEV-4001") -> str:
    rid = h.broker.request_access(h.who("uma"), ["embeddings-requeue"], incident=incident,
                                  reason="recovery").request.id
    h.broker.approve(h.who("vera"), rid)
    h.clock.advance(minutes=5)
    h.broker.revoke(h.who("uma"), rid, "fixed")
    return rid


def test_an_ended_grant_opens_a_review_outside_the_requesters_team(h):
    rid = ended_grant(h)
    [review] = h.ops.reviews.search()
    assert review.request_id == rid
    assert review.reviewer == "wim"  # outside ml-serving, and not the approver (vera)
    assert (review.due_at - review.opened_at).total_seconds() == 24 * 3600
    assert review.opened_at == h.clock.now()
    actions = [e.action for e in h.broker.timeline("SEV-4001")]
    assert actions[-2:] == [EventTag.REQUEST_ENDED, EventTag.REVIEW_OPENED]
    [told] = [r.payload for r in h.outbox(topic="review.assigned")]
    assert told["recipients"] == ["wim"]
    assert told["review_id"] == review.id


def test_requests_that_never_had_access_open_no_review(h):
    rid = h.broker.request_access(h.who("uma"), ["embeddings-requeue"], incident="SEV-4002",
                                  reason="recovery").request.id
    h.broker.deny(h.who("vera"), rid, "no")
    assert h.ops.reviews.search() == []


def test_review_lifecycle_with_overdue_alert_tasks_and_closure_in_the_report(h):
    ended_grant(h, "SEV-4003")
    [review] = h.ops.reviews.search()
    h.clock.advance(hours=23)
    assert h.ops.reviews.raise_overdue() == 0
    h.clock.advance(hours=1, seconds=1)
    assert h.ops.reviews.raise_overdue() == 1
    assert h.ops.reviews.raise_overdue() == 0  # alerted once
    [alert] = [r.payload for r in h.outbox(topic="alert.review_overdue", sink="hooks")]
    assert (alert["request_id"], alert["incident"], alert["principal"]) == (
        review.request_id, "SEV-4003", "uma")
    assert alert["details"]["reviewer"] == "wim"
    assert [r.id for r in h.ops.reviews.search(state="overdue")] == [review.id]

    with pytest.raises(PolicyRefused, match="assigned to wim"):
        h.ops.reviews.complete(h.who("vera"), review.id, "looks fine", [])
    with pytest.raises(InvalidInput):
        h.ops.reviews.complete(h.who("wim"), review.id, "  ", [])
    h.clock.advance(hours=1)
    done = h.ops.reviews.complete(h.who("wim"), review.id, "requeue was needed; the runbook "
                                  "should have covered it", [
                                      NewTask("ugo", "add the requeue role to RB-7"),
                                      NewTask("vera", "alert on stuck queues earlier")])
    assert done.state == "tasks_open"
    first, second = (t.id for t in done.tasks)
    assert first == f"{review.id}-t1"
    with pytest.raises(PolicyRefused, match="owner or the reviewer"):
        h.ops.reviews.close_task(h.who("uma"), first)
    h.clock.advance(hours=2)
    assert h.ops.reviews.close_task(h.who("ugo"), first, "RB-7 updated").state == "tasks_open"
    with pytest.raises(PolicyRefused, match="already closed"):
        h.ops.reviews.close_task(h.who("ugo"), first)
    h.clock.advance(hours=3)
    closed = h.ops.reviews.close_task(h.who("wim"), second, "done by the reviewer")
    assert closed.state == "closed"
    assert closed.closure_seconds() == (24 + 1 + 2 + 3) * 3600 + 1

    report = h.ops.reports.report(since="7d")
    closure = report["review_closure"]
    assert (closure["opened"], closure["closed"], closure["overdue"]) == (1, 1, 0)
    assert closure["closure_seconds"]["p50"] == 108001.0
    assert closure["on_time_rate"] == 0.0
    actions = [e.action for e in h.broker.timeline("SEV-4003")]
    assert actions.count(EventTag.REVIEW_TASK_ADDED) == 2
    assert actions.count(EventTag.REVIEW_TASK_CLOSED) == 2
    assert actions[-1] == EventTag.REVIEW_CLOSED
    refusals = [e for e in h.broker.timeline("SEV-4003") if e.outcome == "denied"]
    assert [e.rule for e in refusals] == ["review.reviewer_only", "review.task_owner_only",
                                          "review.task_closed"]


def test_nobody_reviews_their_own_access_and_tasks_can_be_added_later(h):
    ended_grant(h, "SEV-4004")
    [review] = h.ops.reviews.search()
    with pytest.raises(PolicyRefused, match="own emergency access"):
        h.ops.reviews.complete(h.who("uma"), review.id, "all good", [])
    assert h.ops.reviews.complete(h.who("wim"), review.id, "fine", []).state == "closed"
    with pytest.raises(PolicyRefused, match="is closed"):
        h.ops.reviews.add_task(h.who("wim"), review.id, NewTask("ugo", "late idea"))
    with pytest.raises(NotFound):
        h.ops.reviews.get("rv-nope")
    with pytest.raises(NotFound):
        h.ops.reviews.close_task(h.who("wim"), "rv-nope-t1")


def test_an_incidents_reviews_roll_up(h):
    ended_grant(h, "SEV-4005")
    h.clock.advance(minutes=1)
    ended_grant(h, "SEV-4005")
    first, second = h.ops.reviews.search(incident="SEV-4005")
    h.ops.reviews.complete(h.who(first.reviewer or ""), first.id, "ok",
                           [NewTask("ugo", "document the fix")])
    rollup = h.ops.reviews.rollup("SEV-4005")
    assert {k: rollup[k] for k in ("reviews", "open", "tasks_open", "closed", "overdue",
                                   "complete")} == {
        "reviews": 2, "open": 1, "tasks_open": 1, "closed": 0, "overdue": 0, "complete": False}
    assert rollup["tasks"] == {"total": 1, "open": 1, "closed": 0}
    assert second.reviewer in ("vera", "wim")


def test_reviewers_are_spread_and_approvers_are_avoided():
    assert pick_reviewer(["vera", "wim"], {"wim"}, {"vera": 3}) == "vera"
    assert pick_reviewer(["vera", "wim"], set(), {"vera": 1}) == "wim"
    assert pick_reviewer(["vera", "wim"], {"vera", "wim"}, {}) == "vera"
    assert pick_reviewer([], set(), {}) is None


def test_without_a_directory_any_eligible_reviewer_takes_an_unassigned_review(h):
    h.ops.close()  # the same broker, with a catalog that lists nobody
    catalog = h.loaded.catalog.model_copy(update={"directory": {}})
    ops = build_operations(LoadedCatalog(h.loaded.source, catalog, h.loaded.policy), h.engine,
                           h.clock, ENV)
    try:
        rid = h.broker.request_access(h.who("uma"), ["embeddings-read"], incident="SEV-4006",
                                      reason="recovery").request.id
        h.broker.revoke(h.who("uma"), rid)
        [review] = ops.reviews.search()
        assert review.reviewer is None
        with pytest.raises(PolicyRefused, match="outside the requester's team"):
            ops.reviews.complete(h.who("ugo"), review.id, "same team", [])
        with pytest.raises(PolicyRefused, match="outside the requester's team"):
            ops.reviews.complete(h.who("yuri"), review.id, "not a reviewer", [])
        done = ops.reviews.complete(h.who("wim"), review.id, "fine", [])
        assert (done.reviewer, done.state) == ("wim", "closed")
    finally:
        ops.close()
