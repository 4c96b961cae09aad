"""Wiring of the operational controls: notifications, alerts, reviews and metrics.

:func:`build_operations` registers the event observers on the store's engine
(so every unit of work writes outbox rows, opens reviews and feeds metrics in
its own transaction) and builds the background workers that
:meth:`Operations.start` runs: outbox delivery, the statement-log watcher and
the overdue-review check.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from sqlalchemy import Engine

from breakglass.catalog.loader import LoadedCatalog
from breakglass.connectors import MARKER_PREFIX
from breakglass.metrics.prometheus import BrokerMetrics
from breakglass.metrics.service import ReportService
from breakglass.notify.config import NotifySettings, notify_settings
from breakglass.notify.observer import NotifyObserver, guarded
from breakglass.notify.pglog import StatementLogWatcher, sources_for
from breakglass.notify.sinks import Transport
from breakglass.notify.worker import DeliveryWorker
from breakglass.reviews.monitor import ReviewMonitor
from breakglass.reviews.opener import ReviewOpener
from breakglass.reviews.service import ReviewService
from breakglass.service.ports import Clock
from breakglass.storage.events import before_index, composing, observe


@dataclass
class Operations:
    settings: NotifySettings
    delivery: DeliveryWorker
    watcher: StatementLogWatcher
    reviews: ReviewService
    review_monitor: ReviewMonitor | None
    metrics: BrokerMetrics
    reports: ReportService
    _removers: list[Callable[[], None]] = field(default_factory=list)
    _started: bool = False

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        self.delivery.start()
        self.watcher.start()
        if self.review_monitor is not None:
            self.review_monitor.start()

    def stop(self) -> None:
        if self._started:
            self._started = False
            if self.review_monitor is not None:
                self.review_monitor.stop()
            self.watcher.stop()
            self.delivery.stop()

    def close(self) -> None:
        """Stop, and stop observing the store."""
        self.stop()
        for remove in self._removers:
            remove()
        self._removers.clear()


def build_operations(
    loaded: LoadedCatalog,
    engine: Engine,
    clock: Clock,
    env: Mapping[str, str] | None = None,
    *,
    transport: Transport | None = None,
    delivery_poll: float = 0.5,
    marker_prefix: str = MARKER_PREFIX,
) -> Operations:
    settings = notify_settings(loaded, os.environ if env is None else env)
    catalog = loaded.catalog
    delivery = DeliveryWorker(engine, settings, clock, transport=transport, poll=delivery_poll)
    metrics = BrokerMetrics(engine, loaded.policy, clock)
    delivery.listeners.append(metrics.delivered)
    removers = []
    if catalog.reviews.enabled:
        removers.append(observe(engine, before_index(guarded(
            "reviews", ReviewOpener(loaded, catalog.reviews.due_after)))))
    notifier = NotifyObserver(settings, loaded, delivery.wake)
    removers.append(observe(engine, composing(guarded("notify", notifier.compose))))
    removers.append(observe(engine, before_index(guarded("metrics", metrics))))
    reviews = ReviewService(engine, loaded, clock)
    monitor = (ReviewMonitor(reviews, catalog.reviews.check_interval.total_seconds())
               if catalog.reviews.enabled else None)
    watcher = StatementLogWatcher(engine, sources_for(loaded), clock,
                                  catalog.alerts.rules.identity_change.poll_interval,
                                  marker_prefix=marker_prefix)
    return Operations(settings=settings, delivery=delivery, watcher=watcher, reviews=reviews,
                      review_monitor=monitor, metrics=metrics,
                      reports=ReportService(engine, loaded, clock), _removers=removers)
