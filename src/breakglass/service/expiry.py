"""The background loop: expiry, retries, recovery and drift, in one thread.

It sleeps until the nearest deadline (woken early when an activation adds a
nearer one), so a grant is revoked within moments of ``expires_at`` without
polling the store in a tight loop. After a restart it catches up on
everything that came due while the broker was down.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

import structlog

from breakglass.domain.errors import BreakglassError
from breakglass.service import drift
from breakglass.service.broker import Broker
from breakglass.service.ports import Clock

log = structlog.get_logger("breakglass.expiry")
T = TypeVar("T")


class ExpiryLoop:
    def __init__(self, broker: Broker, clock: Clock, *, max_sleep: float = 1.0,
                 drift_interval: float = 60.0, recover_interval: float = 10.0,
                 recover_grace: float = 30.0) -> None:
        self._recover_grace = timedelta(seconds=recover_grace)
        self._broker = broker
        self._clock = clock
        self._max_sleep = max_sleep
        self._drift_interval = drift_interval
        self._drift_memory = drift.DriftMemory()  # each finding alerted once per start
        self._recover_interval = recover_interval
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="breakglass-expiry", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)

    def wake(self) -> None:
        """A nearer deadline may exist now (called after each activation)."""
        self._wake.set()

    def _run(self) -> None:
        next_drift = time.monotonic() + self._drift_interval
        next_recover = time.monotonic()
        while not self._stop.is_set():
            self._wake.clear()
            # Each phase on its own: a failure in one (a target down while an interrupted
            # activation is rolled back) never holds up the expiry of everything else.
            if time.monotonic() >= next_recover:
                self._phase("recovery", lambda: self._broker.recover(self._recover_grace))
                next_recover = time.monotonic() + self._recover_interval
            self._phase("expiry", self._broker.expire_due)
            self._phase("extensions", self._broker.extensions.tick)  # approved ones, warnings
            if time.monotonic() >= next_drift:
                self._phase("drift", self._sweep_drift)
                next_drift = time.monotonic() + self._drift_interval
            deadline = self._phase("deadline", self._broker.next_deadline)
            wait = self._max_sleep
            if deadline is not None:
                wait = max(0.0, min(wait, (deadline - self._clock.now()).total_seconds()))
            if wait > 0:
                self._wake.wait(wait)

    def _sweep_drift(self) -> None:
        report = drift.sweep(self._broker.uow_factory, self._broker.connectors,
                             self._clock, self._drift_memory)
        if report.orphans_revoked or report.missing or report.findings:
            log.warning("drift", orphans=report.orphans_revoked,
                        missing=report.missing, findings=report.findings)

    @staticmethod
    def _phase(name: str, step: Callable[[], T]) -> T | None:
        try:
            return step()
        except BreakglassError as exc:
            log.warning("pass failed", phase=name, error=str(exc), rule=exc.rule)
        except Exception:
            log.exception("pass crashed", phase=name)
        return None
