"""What runs after access ends (the audit checkpoint): once per expiry batch, once per revoke."""

from __future__ import annotations

from datetime import timedelta

from breakglass.service.broker import Broker
from breakglass.service.ports import SecretBox
from breakglass.storage.uow import UnitOfWork
from tests.fakes import MemoryConnector


def test_a_mass_expiry_runs_the_end_callbacks_once_and_a_revoke_each_time(engine, loaded, clock,
                                                                          people):
    target = MemoryConnector("embeddings-db")
    broker = Broker(policy=loaded.policy, uow=lambda: UnitOfWork(engine),
                    connectors={"embeddings-db": target}, clock=clock,
                    secrets_box=SecretBox(SecretBox.new_key()))
    calls: list[int] = []
    broker.revoker.on_ended.append(lambda: calls.append(len(target.live)))
    views = [broker.request_access(people["uma"], ["embeddings-read"], incident="SEV-4400",
                                   reason="recovery", ttl=timedelta(minutes=5))
             for _ in range(6)]
    broker.revoke(people["uma"], views[0].request.id, "done")
    assert calls == [5]
    clock.advance(minutes=6)
    assert broker.expire_due() == 5
    assert calls == [5, 0], "once, after the whole batch is gone from the target"
