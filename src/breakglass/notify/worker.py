"""The delivery worker: a thread that empties the outbox, with retries and backoff.

It wakes when a transaction that wrote outbox rows commits (and at least
every ``poll`` seconds, for retries and rows written by other brokers), so a
message is usually on its way within milliseconds of its event, while the
request that caused it has already returned.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

import structlog
from sqlalchemy import Engine

from breakglass.notify import outbox
from breakglass.notify.config import NotifySettings
from breakglass.notify.sinks import DeliveryError, Transport
from breakglass.service.ports import Clock

log = structlog.get_logger("breakglass.notify")

RETENTION = timedelta(days=30)
DeliveryListener = Callable[[outbox.OutboxRow, bool, datetime], None]
"""Told about each delivery attempt: the row, whether it arrived, when (the metrics count them)."""
_jitter = secrets.SystemRandom()


def backoff(attempts: int, cap: timedelta) -> timedelta:
    """1 s, 2 s, 4 s ... up to ``cap``, with up to 20% jitter so retries spread out."""
    base = min(cap.total_seconds(), float(2 ** min(attempts - 1, 20)))
    return timedelta(seconds=base * _jitter.uniform(0.8, 1.0))


class DeliveryWorker:
    def __init__(
        self,
        engine: Engine,
        settings: NotifySettings,
        clock: Clock,
        *,
        transport: Transport | None = None,
        poll: float = 0.5,
    ) -> None:
        self._engine = engine
        self._settings = settings
        self._clock = clock
        self._timeout = settings.delivery.timeout
        self._transport = transport
        self._poll = poll
        self._locking = engine.dialect.name == "postgresql"
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.listeners: list[DeliveryListener] = []

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="breakglass-delivery",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self._timeout.total_seconds() * 2 + 5)
            self._thread = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def _sender(self) -> Transport:
        if self._transport is None:  # made on first use: a broker that never sends holds none
            self._transport = Transport(self._timeout.total_seconds())
        return self._transport

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                busy = self.deliver_due() > 0
            except Exception:
                log.exception("delivery pass crashed")
                busy = False
            if not busy:
                self._wake.wait(self._poll)

    def deliver_due(self, limit: int = 50) -> int:
        """Claim due rows, send each, record the outcome; return how many were tried."""
        if not self._settings.sinks:
            return 0
        now = self._clock.now()
        lease = self._timeout * 2 + timedelta(seconds=5)
        with self._engine.begin() as conn:
            rows = outbox.claim(conn, now, lease, locking=self._locking, limit=limit)
        for row in rows:
            self._deliver(row)
        return len(rows)

    def _deliver(self, row: outbox.OutboxRow) -> None:
        sink = self._settings.sink(row.sink)
        error: str | None = None
        if sink is None:
            error = f"sink {row.sink} is no longer configured"
        else:
            try:
                self._sender().send(sink, row)
            except DeliveryError as exc:
                error = str(exc)
        now = self._clock.now()
        with self._engine.begin() as conn:
            if error is None:
                outbox.mark_delivered(conn, row.id, now)
            else:
                last = row.attempts >= self._settings.delivery.max_attempts or sink is None
                retry_at = None if last else now + backoff(row.attempts,
                                                           self._settings.delivery.max_backoff)
                outbox.mark_failed(conn, row.id, error, retry_at)
                log_fn = log.error if retry_at is None else log.warning
                log_fn("delivery failed", sink=row.sink, topic=row.topic, attempt=row.attempts,
                       error=error, gives_up=retry_at is None)
        for listener in self.listeners:
            listener(row, error is None, now)

    def prune(self) -> int:
        with self._engine.begin() as conn:
            return outbox.prune_delivered(conn, self._clock.now() - RETENTION)
