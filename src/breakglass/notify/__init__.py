"""Approver notifications and high-risk alerts, delivered from a durable outbox.

Event observers (:mod:`.observer`) turn audit events into outbox rows inside
the transaction that wrote the event, so a crash can lose neither; the
delivery worker (:mod:`.worker`) sends them to the catalog's sinks
(:mod:`.sinks`) with retries and backoff, off the request path. The statement
log watcher (:mod:`.pglog`) turns identity changes made by emergency
PostgreSQL roles into audit events that the alert rules (:mod:`.alerts`) pick up.
"""
