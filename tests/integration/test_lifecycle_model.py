"""The lifecycle model (tests/integration/lifecycle_model.py) on both stores.

Bounded in CI: ``BG_FSM_EXAMPLES`` examples (default 25) of ``BG_FSM_STEPS`` steps
(default 30), derandomized so every run tries the same interleavings; ``make fuzz``
runs it longer.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from breakglass.catalog.loader import LoadedCatalog
from breakglass.domain.model import RequestState
from breakglass.service.broker import Broker
from breakglass.service.ports import SecretBox
from breakglass.storage.uow import UnitOfWork
from tests.integration.lifecycle_model import (
    EXPLORED,
    TARGET,
    Crash,
    LifecycleModel,
    ModelConnector,
)
from tests.integration.lifecycle_stores import stores

EXAMPLES = int(os.environ.get("BG_FSM_EXAMPLES", "25"))
STEPS = int(os.environ.get("BG_FSM_STEPS", "30"))


@pytest.mark.timeout(max(300, EXAMPLES * STEPS))
@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_the_lifecycle_keeps_its_invariants_under_any_interleaving(
        store: str, tmp_path: Path, loaded: LoadedCatalog) -> None:
    with stores(store, tmp_path) as factory:
        machine = type("Lifecycle", (LifecycleModel,), {"stores": factory, "loaded": loaded})
        run_state_machine_as_test(machine, settings=settings(
            max_examples=EXAMPLES, stateful_step_count=STEPS, derandomize=True,
            database=None, deadline=None, print_blob=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
    print("\n".join(f"{n:6} {what}" for what, n in sorted(EXPLORED.items())))


# -- sequences the model found, kept as plain tests -------------------------------------


def test_a_target_down_during_recovery_holds_up_no_expiry(engine, loaded, clock, people):
    """Found by the model: an activation interrupted by a crash, rolled back at restart
    while its target was down, made recovery raise; the expiry loop's pass stopped there,
    so no access of any target expired and no pending request timed out until the
    target came back."""
    target = ModelConnector()

    def start() -> Broker:
        return Broker(policy=loaded.policy, uow=lambda: UnitOfWork(engine),
                      connectors={TARGET: target}, clock=clock,
                      secrets_box=SecretBox(SecretBox.new_key()), instance_id="b-1")

    broker = start()
    due = broker.request_access(people["uma"], ["embeddings-read"], incident="SEV-4242",
                                reason="recovery", ttl=timedelta(seconds=30)).request.id
    target.crash_at = "activation.minted"
    with pytest.raises(Crash):
        broker.request_access(people["uma"], ["embeddings-read"], incident="SEV-4242",
                              reason="recovery")
    (stuck,) = [v.request.id for v in broker.search(state="activating")]
    target.fail_grant = target.fail_revoke = True
    clock.advance(seconds=31)
    restarted = start()
    assert restarted.recover(timedelta(seconds=30)) == 0  # the target is down: later
    restarted.expire_due()
    assert restarted.view(due).request.state is RequestState.REVOKING  # ending, retried
    assert restarted.view(stuck).request.state is RequestState.ACTIVATING
    target.fail_grant = target.fail_revoke = False
    clock.advance(seconds=31)
    assert restarted.recover(timedelta(seconds=30)) == 1
    restarted.expire_due()
    assert restarted.view(due).request.state is RequestState.EXPIRED
    assert restarted.view(stuck).request.state is RequestState.FAILED
    assert target.live == {}
