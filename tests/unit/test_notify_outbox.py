"""Approver notifications through the durable outbox: who is told what, and delivery."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine, func, select

from breakglass.catalog.loader import parse_catalog
from breakglass.domain.events import EventTag
from breakglass.notify import outbox
from breakglass.notify.operations import build_operations
from breakglass.notify.sinks import SIGNATURE_HEADER, signature_valid, slack_body
from breakglass.service.broker import Broker
from breakglass.service.ports import SecretBox
from breakglass.storage import tables_notify as tn
from breakglass.storage.uow import UnitOfWork
from tests.conftest import CATALOG
from tests.fakes import FakeClock, MemoryConnector, human
from tests.ops_harness import HOOK_SECRET, Harness, make_harness


@pytest.fixture
def h(sqlite: Engine) -> Iterator[Harness]:
    harness = make_harness(sqlite, FakeClock())
    yield harness
    harness.ops.close()


def body(sent):
    return json.loads(sent.body)


def test_zone_b_request_asks_every_eligible_approver_with_a_signed_body(h):
    rid = h.broker.request_access(h.who("uma"), ["embeddings-requeue"], incident="SEV-2001",
                                  reason="recovery").request.id
    rows = h.outbox(topic="approval.requested")
    assert [(r.sink, r.state) for r in rows] == [("hooks", "pending")]  # chat takes alerts only
    assert h.deliver() == 1
    [sent] = h.sent("approval.requested")
    doc = body(sent)
    assert doc["recipients"] == ["vera", "wim"]  # ugo shares uma's team; uma cannot approve
    assert (doc["request_id"], doc["incident"], doc["principal"], doc["zone"]) == (
        rid, "SEV-2001", "uma", "B")
    assert doc["approvals_required"] == 1
    assert f"breakglass approve {rid}" in doc["summary"]
    assert doc["delivery_id"] == rows[0].id
    assert signature_valid(HOOK_SECRET.encode(), sent.body, sent.headers[SIGNATURE_HEADER])
    assert not signature_valid(HOOK_SECRET.encode(), sent.body + b" ",
                               sent.headers[SIGNATURE_HEADER])
    assert h.outbox(topic="approval.requested")[0].state == "delivered"


def test_the_other_approvers_hear_who_approved_and_when_access_ended(h):
    rid = h.broker.request_access(h.who("uma"), ["embeddings-requeue"], incident="SEV-2002",
                                  reason="recovery").request.id
    h.clock.advance(seconds=30)
    h.broker.approve(h.who("vera"), rid, "go")
    h.clock.advance(seconds=60)
    h.broker.revoke(h.who("uma"), rid)
    h.deliver()
    [approved] = h.sent("approval.added")
    assert body(approved)["recipients"] == ["wim"]
    assert body(approved)["acted_by"] == "vera"
    assert "approved by vera (1/1): no further approval needed" in body(approved)["summary"]
    [ended] = h.sent("request.ended")
    assert body(ended)["recipients"] == ["vera", "wim"]
    assert "ended (revoked)" in body(ended)["summary"]


def test_zone_c_follow_up_says_how_many_approvals_are_missing(h):
    rid = h.broker.request_access(h.who("uma"), ["embeddings-repair"], incident="SEV-2003",
                                  reason="data_integrity").request.id
    h.broker.approve(h.who("wim"), rid)
    h.deliver()
    [asked] = h.sent("approval.requested")
    assert body(asked)["approvals_required"] == 2
    [first] = h.sent("approval.added")
    assert body(first)["recipients"] == ["vera"]
    assert "(1/2): 1 more approval(s) needed" in body(first)["summary"]


def test_a_denial_and_a_withdrawal_are_followed_up(h):
    denied = h.broker.request_access(h.who("uma"), ["embeddings-requeue"], incident="SEV-2004",
                                     reason="recovery").request.id
    h.broker.deny(h.who("wim"), denied, "use the runbook")
    withdrawn = h.broker.request_access(h.who("ugo"), ["embeddings-requeue"],
                                        incident="SEV-2004", reason="recovery").request.id
    h.broker.cancel(h.who("ugo"), withdrawn)
    h.deliver()
    [no] = h.sent("request.denied")
    assert body(no)["recipients"] == ["vera"]
    assert "denied by wim: use the runbook" in body(no)["summary"]
    [gone] = h.sent("request.withdrawn")
    assert body(gone)["request_id"] == withdrawn
    assert body(gone)["recipients"] == ["vera", "wim"]


def test_self_approved_and_runbook_requests_ask_nobody(h):
    h.broker.request_access(h.who("uma"), ["embeddings-read"], incident="SEV-2005",
                            reason="recovery")
    h.broker.request_access(h.who("uma"), ["embeddings-requeue"], incident="SEV-2005",
                            reason="recovery", runbook="RB-7")
    assert h.outbox(kind="notification") == []


def test_an_outbox_row_rolls_back_with_its_event(h):
    seen_inside: list[int] = []

    def failing_change() -> None:
        with UnitOfWork(h.engine) as uow:
            uow.events.append(ts=h.clock.now(), actor="broker", action=EventTag.REVIEW_OVERDUE,
                              payload={"review": "rv-x", "due_at": "-"})
            uow.events.flush()  # the event is written, its transaction still open
            seen_inside.append(uow.connection.execute(
                select(func.count()).select_from(tn.outbox)).scalar_one())
            raise RuntimeError("the state change failed")

    with pytest.raises(RuntimeError):
        failing_change()
    assert seen_inside == [2]  # written in the event's transaction (webhook and Slack) ...
    assert h.outbox() == []  # ... and gone with it


def test_failed_deliveries_are_retried_with_backoff_then_given_up(h):
    h.broker.request_access(h.who("uma"), ["embeddings-requeue"], incident="SEV-2006",
                            reason="recovery")
    h.transport.failures = 1
    assert h.deliver() == 1
    [row] = h.outbox()
    assert (row.state, row.attempts, row.last_error) == ("pending", 1, "hooks: HTTP 503")
    assert timedelta(seconds=0.8) <= row.next_attempt_at - h.clock.now() <= timedelta(seconds=1)
    assert h.deliver() == 0  # not due yet
    h.clock.advance(seconds=1)
    assert h.deliver() == 1
    assert h.outbox()[0].state == "delivered"

    h.broker.request_access(h.who("uma"), ["embeddings-requeue"], incident="SEV-2007",
                            reason="recovery")
    h.transport.failures = 10
    for _ in range(3):  # max_attempts: 3
        h.clock.advance(seconds=30)
        h.deliver()
    last = h.outbox()[-1]
    assert (last.state, last.attempts) == ("dead", 3)


def test_a_claimed_row_comes_back_when_its_lease_runs_out(h):
    h.broker.request_access(h.who("uma"), ["embeddings-requeue"], incident="SEV-2008",
                            reason="recovery")
    lease = timedelta(seconds=9)
    with h.engine.begin() as conn:  # a broker claims the row, then dies before sending
        assert len(outbox.claim(conn, h.clock.now(), lease, locking=False)) == 1
    assert h.deliver() == 0
    h.clock.advance(seconds=10)
    assert h.deliver() == 1
    [sent] = h.sent("approval.requested")
    assert sent.row.attempts == 2


def test_slack_bodies_are_incoming_webhook_messages(h):
    h.broker.request_access(h.who("uma"), ["embeddings-repair"], incident="SEV-2009",
                            reason="data_integrity", justification="<script>")
    rid = h.outbox(topic="approval.requested")[0].request_id
    h.broker.approve(h.who("vera"), rid)
    h.broker.approve(h.who("wim"), rid)
    h.deliver()
    [chat] = h.sent("alert.zone_c_activation", sink="chat")
    doc = json.loads(chat.body)
    assert doc["text"].startswith(":rotating_light: zone C access active: uma holds")
    assert doc["blocks"][0]["type"] == "section"
    facts = doc["blocks"][1]["text"]["text"]
    assert "*Incident:* SEV-2009" in facts
    assert "*Principal:* uma" in facts
    assert chat.headers == {}  # Slack URLs are the secret; no signature header
    tricky = dataclasses.replace(chat.row, payload={**chat.row.payload,
                                                    "summary": "<a|b> & c"})
    assert "&lt;a|b&gt; &amp; c" in slack_body(tricky).decode()


def test_without_sinks_nothing_is_queued(sqlite):
    loaded = parse_catalog(CATALOG.read_text(), "plain", {"TEST_TARGET_DSN": "postgresql://x/y"})
    ops = build_operations(loaded, sqlite, FakeClock(), {})
    clock = FakeClock()
    broker = Broker(policy=loaded.policy, uow=lambda: UnitOfWork(sqlite),
                    connectors={"embeddings-db": MemoryConnector("embeddings-db")},
                    clock=clock, secrets_box=SecretBox(SecretBox.new_key()))
    try:
        rid = broker.request_access(human("uma", "team:ml-serving", "responders", clock=clock),
                                    ["embeddings-repair"], incident="SEV-2010",
                                    reason="data_integrity").request.id
        with sqlite.connect() as conn:
            assert outbox.backlog(conn) == {}
        assert ops.delivery.deliver_due() == 0
        assert ops.reviews.search() == []
        assert rid.startswith("r-")
    finally:
        ops.close()


def test_an_extension_needing_approvals_asks_the_approvers_and_follows_up(h):
    rid = h.broker.request_access(h.who("uma"), ["embeddings-repair"], incident="SEV-2011",
                                  reason="data_integrity").request.id
    h.broker.approve(h.who("vera"), rid)
    h.broker.approve(h.who("wim"), rid)
    h.clock.advance(minutes=5)
    ext = h.broker.extensions.request_extension(h.who("uma"), rid, timedelta(minutes=5),
                                                "still repairing")
    ext_id = ext.extension.id
    h.broker.extensions.approve(h.who("vera"), rid, ext_id)
    h.deliver()
    [asked] = h.sent("extension.requested")
    assert body(asked)["recipients"] == ["vera", "wim"]
    assert body(asked)["extension_id"] == ext_id
    assert f"--extension {ext_id}" in body(asked)["summary"]
    [approved] = h.sent("extension.approval_added")
    assert body(approved)["recipients"] == ["wim"]


def test_a_self_approved_extension_asks_nobody(h):
    rid = h.broker.request_access(h.who("uma"), ["embeddings-read"], incident="SEV-2012",
                                  reason="recovery").request.id
    h.broker.extensions.request_extension(h.who("uma"), rid, timedelta(minutes=5), "more")
    assert h.outbox(topic="extension.requested") == []
    assert h.outbox(topic="extension.applied") == []
