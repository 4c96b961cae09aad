"""The expiry loop: revokes every grant at ``expires_at`` and times out pending requests.

It sleeps until the nearest deadline (at most ``interval`` seconds, so a new
nearer deadline is seen quickly) and, after a restart, catches up on
everything that came due while the broker was down.
"""

from __future__ import annotations

import threading

import structlog

from breakglass.domain.errors import BreakglassError
from breakglass.service.broker import Broker
from breakglass.service.ports import Clock

log = structlog.get_logger("breakglass.expiry")


class ExpiryLoop:
    def __init__(self, broker: Broker, clock: Clock, interval: float = 0.5) -> None:
        self._broker = broker
        self._clock = clock
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="breakglass-expiry", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._broker.expire_due()
                deadline = self._broker.next_deadline()
            except BreakglassError as exc:
                log.warning("expiry pass failed", error=str(exc), rule=exc.rule)
                deadline = None
            except Exception:
                log.exception("expiry pass crashed")
                deadline = None
            wait = self._interval
            if deadline is not None:
                wait = max(0.05, min(wait, (deadline - self._clock.now()).total_seconds()))
            self._stop.wait(wait)
