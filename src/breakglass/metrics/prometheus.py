"""Prometheus metrics for ``/metrics``, labelled by zone and environment.

Counters and histograms move when the event that records the change commits
(an event observer reads what it needs inside the transaction and updates
the metrics after the commit), so a rolled-back change is never counted.
Gauges for the outbox and the review queue are read from the store at scrape
time, so every broker sharing a database reports the same values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from functools import partial

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Connection, Engine, func, select

from breakglass.domain.events import EventTag, refusals_in
from breakglass.domain.model import Policy, highest_zone
from breakglass.notify import outbox
from breakglass.notify.outbox import OutboxRow
from breakglass.reviews.model import ReviewState
from breakglass.service.ports import Clock
from breakglass.storage import tables as t
from breakglass.storage import tables_notify as tn
from breakglass.storage.events import Appended, Event

ZONE_ENV = ("zone", "environment")
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
LAG_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900)
NONE = "none"


class BrokerMetrics:
    def __init__(self, engine: Engine, policy: Policy, clock: Clock) -> None:
        self._policy = policy
        self.registry = CollectorRegistry()
        reg = self.registry
        self.requests = Counter("breakglass_requests", "Access requests accepted",
                                ZONE_ENV, registry=reg)
        self.refusals = Counter("breakglass_refusals", "Refused attempts, by rule",
                                (*ZONE_ENV, "rule"), registry=reg)
        self.decisions = Counter("breakglass_approvals", "Approval decisions (approved, denied)",
                                 (*ZONE_ENV, "decision"), registry=reg)
        self.activations = Counter("breakglass_activations", "Activations, by outcome",
                                   (*ZONE_ENV, "outcome"), registry=reg)
        self.revocations = Counter("breakglass_revocations",
                                   "Grant revocations, by mode (expiry, forced) and outcome",
                                   (*ZONE_ENV, "mode", "outcome"), registry=reg)
        self.high_risk = Counter("breakglass_high_risk_actions",
                                 "Identity, privilege and policy changes by emergency roles",
                                 (*ZONE_ENV, "kind"), registry=reg)
        self.activation_seconds = Histogram(
            "breakglass_activation_seconds", "Request to usable credential",
            ZONE_ENV, buckets=LATENCY_BUCKETS, registry=reg)
        self.overhead_seconds = Histogram(
            "breakglass_activation_overhead_seconds",
            "Activation start to active: broker and target time, no human wait",
            ZONE_ENV, buckets=LATENCY_BUCKETS, registry=reg)
        self.approval_wait_seconds = Histogram(
            "breakglass_approval_wait_seconds", "Request to its deciding approval",
            ZONE_ENV, buckets=LATENCY_BUCKETS, registry=reg)
        self.revocation_lag_seconds = Histogram(
            "breakglass_revocation_lag_seconds", "expires_at to revoked, for expired grants",
            ZONE_ENV, buckets=LAG_BUCKETS, registry=reg)
        self.audit_findings = Counter(
            "breakglass_audit_findings",
            "Audit log findings: log_tampered, anchor_failed, anchor_recovered, key_rotated",
            ("kind",), registry=reg)
        self.deliveries = Counter("breakglass_deliveries", "Outbox delivery attempts",
                                  ("kind", "sink", "outcome"), registry=reg)
        self.delivery_seconds = Histogram(
            "breakglass_delivery_latency_seconds", "Event to message delivered",
            ("kind",), buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300), registry=reg)
        reg.register(StoreCollector(engine, clock))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    # -- fed by the event observer and the delivery worker ---------------------------

    def __call__(self, a: Appended) -> None:
        update = self._update(a)
        if update is not None:
            a.after_commit(update)

    def delivered(self, row: OutboxRow, ok: bool, at: datetime) -> None:
        self.deliveries.labels(row.kind, row.sink, "delivered" if ok else "failed").inc()
        if ok:
            self.delivery_seconds.labels(row.kind).observe(
                max(0.0, (at - row.created_at).total_seconds()))

    def _update(self, a: Appended) -> Callable[[], None] | None:
        e = a.event
        if e.outcome == "denied":
            zone, env = self._where(a.connection, e)
            counter = self.refusals.labels(zone, env, e.rule or "unknown")
            return partial(counter.inc, refusals_in(e.action, e.payload))
        action = e.action
        if action == EventTag.REQUEST_CREATED:
            return self.requests.labels(e.zone or NONE,
                                        str(e.payload.get("environment", NONE))).inc
        if action in (EventTag.APPROVAL_ADDED, EventTag.REQUEST_DENIED):
            zone, env = self._where(a.connection, e)
            decision = "approved" if action == EventTag.APPROVAL_ADDED else "denied"
            return self.decisions.labels(zone, env, decision).inc
        if action == EventTag.REQUEST_ACTIVE:
            return self._activated(a.connection, e)
        if action == EventTag.REQUEST_ACTIVATION_FAILED:
            zone, env = self._where(a.connection, e)
            return self.activations.labels(zone, env, "failed").inc
        if action in (EventTag.GRANT_EXPIRED, EventTag.GRANT_REVOKED,
                      EventTag.GRANT_REVOCATION_FAILED):
            return self._revoked(a.connection, e)
        if action == EventTag.HIGH_RISK_ACTION:
            zone, env = self._where(a.connection, e)
            return self.high_risk.labels(zone, env, str(e.payload.get("kind", "unknown"))).inc
        if action.startswith("audit:"):
            return self.audit_findings.labels(action.removeprefix("audit:").replace(":", "_")).inc
        return None

    def _activated(self, conn: Connection, e: Event) -> Callable[[], None]:
        r = t.requests.c
        row = conn.execute(select(r.zone, r.environment, r.created_at).where(
            r.id == e.request_id)).first()
        zone, env = (str(row.zone), str(row.environment)) if row is not None else (NONE, NONE)
        created = row.created_at if row is not None else None
        started = conn.execute(select(t.events.c.ts).where(
            t.events.c.request_id == e.request_id,
            t.events.c.action == EventTag.REQUEST_ACTIVATING.value,
        ).order_by(t.events.c.idx.desc()).limit(1)).scalar()

        def apply() -> None:
            self.activations.labels(zone, env, "ok").inc()
            if created is not None:
                self.activation_seconds.labels(zone, env).observe(
                    (e.ts - created).total_seconds())
            if started is not None:
                self.overhead_seconds.labels(zone, env).observe((e.ts - started).total_seconds())
            if created is not None and started is not None and started > created:
                self.approval_wait_seconds.labels(zone, env).observe(
                    (started - created).total_seconds())

        return apply

    def _revoked(self, conn: Connection, e: Event) -> Callable[[], None]:
        zone, env = self._where(conn, e)
        if e.action == EventTag.GRANT_REVOCATION_FAILED:
            return self.revocations.labels(zone, env, "any", "failed").inc
        expired = e.action == EventTag.GRANT_EXPIRED
        lag_ms = e.payload.get("lag_ms")

        def apply() -> None:
            self.revocations.labels(zone, env, "expiry" if expired else "forced", "ok").inc()
            if expired and isinstance(lag_ms, int | float):
                self.revocation_lag_seconds.labels(zone, env).observe(max(0.0, lag_ms / 1000))

        return apply

    def _where(self, conn: Connection, e: Event) -> tuple[str, str]:
        """The zone and environment an event is about (from its request, or its roles)."""
        if e.request_id is not None:
            row = conn.execute(select(t.requests.c.zone, t.requests.c.environment).where(
                t.requests.c.id == e.request_id)).first()
            if row is not None:
                return str(row.zone), str(row.environment)
        roles = [self._policy.roles[r] for r in e.payload.get("roles") or ()
                 if isinstance(r, str) and r in self._policy.roles]
        if roles:
            return highest_zone([r.zone for r in roles]).value, roles[0].environment
        return e.zone or NONE, NONE


class StoreCollector(Collector):
    """Gauges read from the store at scrape time: outbox backlog, reviews, live access."""

    def __init__(self, engine: Engine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        messages = GaugeMetricFamily("breakglass_outbox_messages",
                                     "Outbox messages by state", labels=["state"])
        reviews = GaugeMetricFamily("breakglass_reviews", "Access reviews by state",
                                    labels=["state"])
        overdue = GaugeMetricFamily("breakglass_reviews_overdue",
                                    "Open access reviews past their due time")
        live = GaugeMetricFamily("breakglass_active_requests", "Requests with live access",
                                 labels=list(ZONE_ENV))
        r, rv = t.requests.c, tn.reviews.c
        with self._engine.connect() as conn:
            for state, count in sorted(outbox.backlog(conn).items()):
                messages.add_metric([state], count)
            for state, count in conn.execute(select(rv.state, func.count()).group_by(rv.state)):
                reviews.add_metric([str(state)], int(count))
            overdue.add_metric([], int(conn.execute(
                select(func.count()).select_from(tn.reviews).where(
                    rv.state == ReviewState.OPEN.value, rv.due_at < self._clock.now())
            ).scalar() or 0))
            for zone, env, count in conn.execute(
                    select(r.zone, r.environment, func.count())
                    .where(r.state.in_(["active", "revoking"]))
                    .group_by(r.zone, r.environment)):
                live.add_metric([str(zone), str(env)], int(count))
        yield from (messages, reviews, overdue, live)
