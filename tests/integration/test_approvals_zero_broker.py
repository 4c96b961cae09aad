"""The broker on a real store: a zone with ``approvals: 0`` and no self-approval waits.

Catalog load refuses such a zone (``zone.approvals_zero``); this is the layer behind
it, for a policy that reaches the broker anyway: the request stays pending with
nothing minted until a person other than the requester approves.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from breakglass.domain.errors import PolicyRefused
from breakglass.domain.model import RequestState, Zone
from breakglass.service.broker import Broker
from breakglass.service.ports import SecretBox
from breakglass.storage.uow import UnitOfWork
from tests.fakes import MemoryConnector


@pytest.fixture
def target():
    return MemoryConnector("embeddings-db")


@pytest.fixture
def broker(engine, loaded, clock, target):
    zone_a = replace(loaded.policy.zones[Zone.A], approvals=0, self_approval=False)
    policy = replace(loaded.policy, zones={**loaded.policy.zones, Zone.A: zone_a})
    return Broker(policy=policy, uow=lambda: UnitOfWork(engine),
                  connectors={"embeddings-db": target}, clock=clock,
                  secrets_box=SecretBox(SecretBox.new_key()))


def test_the_request_waits_and_the_requester_cannot_release_it(broker, people, target):
    view = broker.request_access(people["uma"], ["embeddings-read"], incident="SEV-1234",
                                 reason="recovery")
    assert view.request.state is RequestState.PENDING
    assert view.required_approvals == 1
    assert view.grants == [] or not view.grants
    assert target.live == {}
    with pytest.raises(PolicyRefused) as refused:
        broker.approve(people["uma"], view.request.id)
    assert refused.value.rule == "approval.self"
    assert broker.view(view.request.id).request.state is RequestState.PENDING
    assert target.live == {}
    actions = [e.action for e in broker.timeline("SEV-1234")]
    assert "request:approval:auto" not in actions

    approved = broker.approve(people["vera"], view.request.id)
    assert approved.request.state is RequestState.ACTIVE
    assert len(target.live) == 1
