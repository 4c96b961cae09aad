"""Notifications over real HTTP to a receiver on 127.0.0.1, from a PostgreSQL outbox."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from breakglass.notify.sinks import SIGNATURE_HEADER, Transport, signature_valid
from breakglass.notify.worker import DeliveryWorker
from tests.fakes import FakeClock
from tests.ops_harness import HOOK_SECRET, Harness, WebhookReceiver, make_harness


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    found = WebhookReceiver().start()
    yield found
    found.stop()


@pytest.fixture
def h(pg_engine: Engine, receiver: WebhookReceiver) -> Iterator[Harness]:
    harness = make_harness(pg_engine, FakeClock(), transport=Transport(2.0),
                           hook_url=receiver.url + "/hook", slack_url=receiver.url + "/slack")
    harness.ops.start()
    yield harness
    harness.ops.close()


def topic(name: str, request_id: str):
    return lambda r: r.doc.get("topic") == name and r.doc.get("request_id") == request_id


def test_zone_b_approvers_are_told_within_two_seconds_and_then_who_approved(h, receiver):
    started = time.time()
    rid = h.broker.request_access(h.who("uma"), ["embeddings-requeue"], incident="SEV-5001",
                                  reason="recovery").request.id
    asked = receiver.wait_for(topic("approval.requested", rid), timeout=5)
    latency = asked.at - started
    assert latency < 2.0, f"notification took {latency:.3f} s"
    assert asked.path == "/hook"
    assert asked.doc["recipients"] == ["vera", "wim"]
    assert signature_valid(HOOK_SECRET.encode(), asked.body, asked.headers[SIGNATURE_HEADER])
    assert asked.headers["X-Breakglass-Delivery"] == str(asked.doc["delivery_id"])

    started = time.time()
    h.broker.approve(h.who("vera"), rid)
    told = receiver.wait_for(topic("approval.added", rid), timeout=5)
    assert told.at - started < 2.0
    assert told.doc["recipients"] == ["wim"]
    assert told.doc["acted_by"] == "vera"
    print(f"\nnotification latency: request {latency * 1000:.0f} ms, "
          f"follow-up {(told.at - started) * 1000:.0f} ms")


def test_a_receiver_that_fails_gets_the_message_on_a_later_attempt(h, receiver):
    receiver.mode = "fail"
    rid = h.broker.request_access(h.who("uma"), ["embeddings-requeue"], incident="SEV-5002",
                                  reason="recovery").request.id
    deadline = time.monotonic() + 5
    while h.outbox(request_id=rid)[0].last_error is None and time.monotonic() < deadline:
        time.sleep(0.05)  # until the first attempt was answered 503 and recorded
    receiver.mode = "ok"
    h.clock.advance(seconds=5)  # past the backoff
    asked = receiver.wait_for(topic("approval.requested", rid), timeout=5)
    assert int(asked.headers["X-Breakglass-Attempt"]) >= 2


def test_two_brokers_deliver_each_message_once(h, receiver, pg_engine):
    h.ops.stop()
    for i in range(30):
        h.broker.request_access(h.who("uma"), ["embeddings-requeue"], incident=f"SEV-51{i:02d}",
                                reason="recovery")
    workers = [DeliveryWorker(pg_engine, h.ops.settings, h.clock, transport=Transport(2.0))
               for _ in range(2)]
    threads = [threading.Thread(target=lambda w=w: [w.deliver_due(limit=5) for _ in range(10)])
               for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    counts = Counter(r.doc["delivery_id"] for r in receiver.received)
    assert len(counts) == 30
    assert set(counts.values()) == {1}
    assert {r.state for r in h.outbox()} == {"delivered"}
    for worker in workers:
        worker.stop()
