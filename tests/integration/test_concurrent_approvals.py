"""Concurrent approvals activate exactly once (PostgreSQL, real threads)."""

from __future__ import annotations

import threading

from sqlalchemy import func, select

from breakglass.domain.errors import PolicyRefused
from breakglass.domain.model import RequestState
from breakglass.service.broker import Broker
from breakglass.service.ports import SecretBox
from breakglass.storage import tables as t
from breakglass.storage.uow import UnitOfWork
from tests.fakes import MemoryConnector


def test_racing_approvers_activate_exactly_once(pg_engine, loaded, clock, people):
    target = MemoryConnector("embeddings-db")
    broker = Broker(policy=loaded.policy, uow=lambda: UnitOfWork(pg_engine),
                    connectors={"embeddings-db": target}, clock=clock,
                    secrets_box=SecretBox(SecretBox.new_key()))
    for _round in range(5):
        rid = broker.request_access(people["uma"], ["embeddings-requeue"], incident="SEV-1234",
                                    reason="recovery").request.id
        start = threading.Barrier(8)
        outcomes: list[str] = []

        def approve(who: str, rid: str = rid, start: threading.Barrier = start,
                    outcomes: list[str] = outcomes) -> None:
            start.wait()
            try:
                broker.approve(people[who], rid)
                outcomes.append("ok")
            except PolicyRefused as exc:
                outcomes.append(exc.rule)

        threads = [threading.Thread(target=approve, args=(w,)) for w in ["vera", "wim"] * 4]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert outcomes.count("ok") == 1, outcomes
        assert set(outcomes) - {"ok"} <= {"lifecycle.not_pending", "approval.duplicate"}
        view = broker.view(rid)
        assert view.request.state is RequestState.ACTIVE
        assert len(view.grants) == 1
        assert len(view.request.approvals) == 1
    assert len(target.live) == 5
    with pg_engine.connect() as conn:
        activations = conn.execute(select(func.count()).select_from(t.events).where(
            t.events.c.action == "request:activated")).scalar_one()
    assert activations == 5
