"""The drift sweep against brokers that keep working while it looks: no false alarms.

A sweep lists the target, then reads the store. A grant that is revoked, or
activated, in between must not come out as an orphan (revoked a second time
and alerted) or as a vanished credential.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from breakglass.domain.model import RequestState
from breakglass.service import drift
from breakglass.service.broker import Broker
from breakglass.service.ports import SecretBox
from breakglass.storage.uow import UnitOfWork
from tests.fakes import MemoryConnector


class BusyTarget(MemoryConnector):
    """Runs ``meanwhile`` once, right after the next listing was taken."""

    meanwhile: Callable[[], object] | None = None

    def list_managed(self) -> list[str]:
        found = super().list_managed()
        action, self.meanwhile = self.meanwhile, None
        if action is not None:
            action()
        return found


@pytest.fixture
def target() -> BusyTarget:
    return BusyTarget("embeddings-db")


@pytest.fixture
def broker(engine, loaded, clock, target) -> Broker:
    return Broker(policy=loaded.policy, uow=lambda: UnitOfWork(engine),
                  connectors={"embeddings-db": target}, clock=clock,
                  secrets_box=SecretBox(SecretBox.new_key()))


def _alerts(engine) -> list[str]:
    with UnitOfWork(engine) as uow:
        return [e.action for e in uow.events_since(0) if e.action.startswith("drift:")]


def test_a_grant_that_expires_during_the_sweep_is_no_orphan(broker, target, engine, clock,
                                                            people):
    view = broker.request_access(people["uma"], ["embeddings-read"], incident="SEV-4300",
                                 reason="recovery", ttl=timedelta(minutes=5))
    ref = view.grants[0].target_ref
    clock.advance(minutes=6)
    target.meanwhile = broker.expire_due  # revoked and recorded between listing and store read
    report = drift.sweep(lambda: UnitOfWork(engine), {"embeddings-db": target}, clock)
    assert report.orphans_revoked == []
    assert target.revocations == [ref], "revoked once, by the expiry"
    assert _alerts(engine) == []
    assert broker.view(view.request.id).request.state is RequestState.EXPIRED


def test_a_grant_activated_during_the_sweep_is_not_missing(broker, target, engine, clock,
                                                         people):
    made: list[str] = []

    def activate() -> None:
        view = broker.request_access(people["uma"], ["embeddings-read"], incident="SEV-4301",
                                     reason="recovery")
        made.append(view.grants[0].target_ref)

    target.meanwhile = activate
    report = drift.sweep(lambda: UnitOfWork(engine), {"embeddings-db": target}, clock)
    assert made
    assert report.missing == []
    assert report.orphans_revoked == []
    assert _alerts(engine) == []


def test_real_drift_is_still_found(broker, target, engine, clock, people):
    kept = broker.request_access(people["uma"], ["embeddings-read"], incident="SEV-4302",
                                 reason="recovery")
    gone = broker.request_access(people["uma"], ["embeddings-read"], incident="SEV-4302",
                                 reason="recovery")
    ended = broker.request_access(people["uma"], ["embeddings-read"], incident="SEV-4302",
                                  reason="recovery")
    broker.revoke(people["uma"], ended.request.id, "done")
    sneaky = ended.grants[0].target_ref  # the deployment's marker, its grant over
    target.live[sneaky] = target.live[kept.grants[0].target_ref]  # out of band
    target.live.pop(gone.grants[0].target_ref)  # dropped behind the broker's back
    report = drift.sweep(lambda: UnitOfWork(engine), {"embeddings-db": target}, clock)
    assert report.orphans_revoked == [sneaky]
    assert report.missing == [gone.grants[0].target_ref]
    assert sorted(_alerts(engine)) == ["drift:credential:missing", "drift:orphan:revoked"]



def test_a_grant_on_another_target_of_the_same_server_is_no_orphan(engine, loaded, clock,
                                                                    people):
    """Roles are server-wide in PostgreSQL: two databases of one server list each other's."""
    first = MemoryConnector("embeddings-db")
    second = MemoryConnector("embeddings-db-replica")
    second.live = first.live  # one server, one namespace of roles
    broker = Broker(policy=loaded.policy, uow=lambda: UnitOfWork(engine),
                    connectors={"embeddings-db": first}, clock=clock,
                    secrets_box=SecretBox(SecretBox.new_key()))
    view = broker.request_access(people["uma"], ["embeddings-read"], incident="SEV-4303",
                                 reason="recovery")
    ref = view.grants[0].target_ref
    report = drift.sweep(lambda: UnitOfWork(engine),
                         {"embeddings-db": first, "embeddings-db-replica": second}, clock)
    assert report.orphans_revoked == []
    assert ref in first.live
    assert _alerts(engine) == []
