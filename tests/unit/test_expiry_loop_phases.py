"""The background loop runs each phase on its own: one that fails holds up no other."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any, cast

from breakglass.domain.errors import TargetError
from breakglass.service.broker import Broker
from breakglass.service.expiry import ExpiryLoop
from tests.fakes import FakeClock


class BrokenRecovery:
    """A broker whose recovery always fails (a target down, or a bug): expiry must still run."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.expired = threading.Event()
        self.ticked = threading.Event()
        self.extensions = self
        self.recoveries = 0

    def recover(self, older_than: timedelta) -> int:
        self.recoveries += 1
        raise self.error

    def expire_due(self) -> int:
        self.expired.set()
        return 0

    def tick(self) -> None:
        self.ticked.set()

    def next_deadline(self) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(name)


def _run(broker: BrokenRecovery) -> None:
    loop = ExpiryLoop(cast(Broker, broker), FakeClock(), max_sleep=0.01, drift_interval=3600)
    loop.start()
    try:
        assert broker.expired.wait(10), "expiry never ran while recovery failed"
        assert broker.ticked.wait(10), "extensions never ran while recovery failed"
    finally:
        loop.stop()
    assert broker.recoveries >= 1


def test_a_recovery_that_raises_a_broker_error_holds_up_no_expiry() -> None:
    _run(BrokenRecovery(TargetError("target embeddings-db is down")))


def test_a_recovery_that_crashes_holds_up_no_expiry() -> None:
    _run(BrokenRecovery(KeyError("embeddings-repair")))  # e.g. a role the catalog dropped
