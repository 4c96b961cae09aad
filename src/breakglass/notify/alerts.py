"""High-risk alert rules over audit events (catalog ``alerts.rules``).

Each alert names the grant, the incident and the principal wherever the
event can be tied to them:

* ``zone_c_activation``: zone-C access became active;
* ``identity_change``: an emergency role ran an identity or privilege change
  (``grant:action:high_risk``, written by the statement-log watcher);
* events the broker flags as alerts (``payload.alert``): a failed
  revocation, drift found, a rotated audit signing key, a log that no longer
  extends its signed checkpoint, an anchor that refused one, the first window
  of a flood of unauthenticated refusals (``refusal_flood``); plus ``rules.events``
  (name: action patterns), e.g. access-key creation attempts or audit tamper findings;
* ``late_revocation``: a grant ended more than ``late_revocation_after``
  after its expiry;
* ``violation_burst``: N refusals of one principal within M minutes;
* ``review_overdue``: an access review passed its due time.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select

from breakglass.catalog.schema import AlertRulesConfig
from breakglass.domain.durations import format_duration
from breakglass.domain.events import EventTag
from breakglass.notify.outbox import Message
from breakglass.storage import tables as t
from breakglass.storage import tables_notify as tn
from breakglass.storage.events import Appended, Event

FLAGGED_NAMES = {
    EventTag.GRANT_REVOCATION_FAILED.value: "revocation_failed",
    EventTag.DRIFT_ORPHAN.value: "drift_orphan",
    EventTag.DRIFT_MISSING.value: "drift_missing",
    EventTag.DRIFT_LOOKALIKE.value: "drift_lookalike",
    EventTag.AUDIT_KEY_ROTATED.value: "audit_key_rotated",
    EventTag.AUDIT_TAMPERED.value: "audit_tampered",
    EventTag.ANCHOR_FAILED.value: "anchor_failed",
    EventTag.AUTH_REFUSALS_COUNTED.value: "refusal_flood",
}
SEVERITY = {
    "identity_change": "critical",
    "revocation_failed": "critical",
    "zone_c_activation": "high",
    "late_revocation": "high",
    "drift_orphan": "high",
    "drift_missing": "high",
    "drift_lookalike": "medium",
    "audit_key_rotated": "high",
    "audit_tampered": "critical",
    "anchor_failed": "high",
    "refusal_flood": "medium",
    "violation_burst": "medium",
    "review_overdue": "medium",
}
_NOT_PRINCIPALS = frozenset({"anonymous", "broker"})


def _expiry_in(payload: dict[str, Any]) -> datetime | None:
    """The grant's expiry a revocation event carries, if it does."""
    text = payload.get("expires_at")
    if not isinstance(text, str):
        return None
    try:
        found = datetime.fromisoformat(text)
    except ValueError:
        return None
    return found if found.tzinfo is not None else None


def context(conn: Connection, event: Event) -> dict[str, Any]:
    """Request, grant, incident and principal an event belongs to, as far as known."""
    found: dict[str, Any] = {"request_id": event.request_id, "grant_id": event.grant_id,
                             "incident": event.incident, "zone": event.zone,
                             "principal": None, "environment": None, "grants": []}
    request_id = event.request_id
    if request_id is None and event.payload.get("target_ref"):
        row = conn.execute(
            select(t.grants.c.id, t.grants.c.request_id)
            .where(t.grants.c.target_ref == str(event.payload["target_ref"]),
                   t.grants.c.target == str(event.payload.get("target", "")))
            .order_by(t.grants.c.issued_at.desc()).limit(1)
        ).first()
        if row is not None:
            request_id, found["grant_id"] = row.request_id, row.id
            found["request_id"] = request_id
    if request_id is None:
        return found
    req = conn.execute(
        select(t.requests.c.requester, t.requests.c.incident, t.requests.c.zone,
               t.requests.c.environment).where(t.requests.c.id == request_id)
    ).first()
    if req is not None:
        found.update(principal=req.requester, incident=req.incident, zone=req.zone,
                     environment=req.environment)
    found["grants"] = [
        {"id": g.id, "role": g.role, "target": g.target, "target_ref": g.target_ref}
        for g in conn.execute(select(t.grants.c.id, t.grants.c.role, t.grants.c.target,
                                     t.grants.c.target_ref)
                              .where(t.grants.c.request_id == request_id)
                              .order_by(t.grants.c.id))
    ]
    if found["grant_id"] is None and len(found["grants"]) == 1:
        found["grant_id"] = found["grants"][0]["id"]
    return found


class AlertRules:
    def __init__(self, rules: AlertRulesConfig) -> None:
        self._rules = rules

    def evaluate(self, a: Appended) -> list[Message]:
        event, rules = a.event, self._rules
        found: list[Message] = []
        if rules.zone_c_activation and event.action == EventTag.REQUEST_ACTIVE \
                and event.zone == "C":
            found.append(self._zone_c(a))
        if rules.identity_change.enabled and event.action == EventTag.HIGH_RISK_ACTION:
            found.append(self._identity_change(a))
        named = self._named(event)
        if named is not None:
            found.append(self._flagged(a, named))
        lag_limit = rules.late_revocation_after
        if lag_limit is not None and event.grant_id and event.action in (
                EventTag.GRANT_EXPIRED, EventTag.GRANT_REVOKED):
            late = self._late(a, lag_limit)
            if late is not None:
                found.append(late)
        if rules.violation_burst is not None and event.outcome == "denied" \
                and event.actor not in _NOT_PRINCIPALS:
            burst = self._burst(a, rules.violation_burst.refusals, rules.violation_burst.within)
            if burst is not None:
                found.append(burst)
        if rules.review_overdue and event.action == EventTag.REVIEW_OVERDUE:
            found.append(self._review_overdue(a))
        return found

    # -- rules ------------------------------------------------------------------------

    def _named(self, event: Event) -> str | None:
        if self._rules.flagged_events and event.payload.get("alert") is True:
            return FLAGGED_NAMES.get(event.action, event.action.replace(":", "_"))
        for name, patterns in self._rules.events.items():
            if any(fnmatchcase(event.action, p) for p in patterns):
                return name
        return None

    def _zone_c(self, a: Appended) -> Message:
        ctx = context(a.connection, a.event)
        grants = ", ".join(g["id"] for g in ctx["grants"]) or "no grant"
        until = a.event.payload.get("expires_at", "?")
        summary = (f"zone C access active: {ctx['principal']} holds {grants} for "
                   f"{ctx['incident']} ({ctx['environment']}) until {until}")
        return _alert(a, "zone_c_activation", summary, ctx, {"expires_at": until})

    def _identity_change(self, a: Appended) -> Message:
        ctx = context(a.connection, a.event)
        p = a.event.payload
        summary = (f"identity change by emergency role {p.get('db_user')} on {p.get('target')} "
                   f"(grant {ctx['grant_id'] or 'unknown'}, {ctx['principal'] or 'unknown'}, "
                   f"{ctx['incident'] or 'no incident'}): {p.get('statement', '')[:200]}")
        details = {k: p.get(k) for k in ("kind", "statement", "target", "db_user", "database",
                                         "logged_at", "session")}
        return _alert(a, "identity_change", summary, ctx, details)

    def _flagged(self, a: Appended, name: str) -> Message:
        ctx = context(a.connection, a.event)
        who = f"{ctx['principal']}, {ctx['incident']}" if ctx["principal"] else "no owner"
        subject = ctx["grant_id"] or ctx["request_id"] or a.event.payload.get("target_ref", "")
        # a finding about the broker itself (the log, an anchor, a flood) has no subject
        head = f"{subject} ({who})" if subject else (f"({who})" if ctx["principal"] else "")
        summary = ": ".join(part for part in (name.replace("_", " "), head, a.event.reason) if part)
        return _alert(a, name, summary, ctx,
                      {"action": a.event.action, "reason": a.event.reason,
                       **{k: v for k, v in a.event.payload.items() if k != "alert"}})

    def _late(self, a: Appended, limit: timedelta) -> Message | None:
        expires = _expiry_in(a.event.payload)
        if expires is None:  # an event written before revocations carried the expiry
            expires = a.connection.execute(
                select(t.grants.c.expires_at).where(t.grants.c.id == a.event.grant_id)
            ).scalar()
        if expires is None:
            return None
        lag = a.event.ts - expires
        if lag <= limit:
            return None
        ctx = context(a.connection, a.event)
        summary = (f"late revocation: grant {a.event.grant_id} of {ctx['principal']} "
                   f"({ctx['incident']}) ended {format_duration(lag)} after its expiry")
        return _alert(a, "late_revocation", summary, ctx,
                      {"lag_seconds": round(lag.total_seconds(), 3),
                       "expires_at": expires.isoformat()})

    def _burst(self, a: Appended, refusals: int, within: timedelta) -> Message | None:
        conn, event = a.connection, a.event
        marks = tn.refusal_marks.c
        conn.execute(insert(tn.refusal_marks).values(actor=event.actor, ts=event.ts,
                                                     rule=event.rule))
        conn.execute(delete(tn.refusal_marks).where(marks.actor == event.actor,
                                                    marks.ts < event.ts - within))
        count = conn.execute(select(func.count()).select_from(tn.refusal_marks)
                             .where(marks.actor == event.actor)).scalar()
        if int(count or 0) < refusals:
            return None
        rules = sorted({str(r) for (r,) in conn.execute(
            select(marks.rule).where(marks.actor == event.actor, marks.rule.is_not(None)))})
        conn.execute(delete(tn.refusal_marks).where(marks.actor == event.actor))
        ctx = context(conn, event)
        ctx["principal"] = event.actor
        summary = (f"policy violation burst: {count} refusals for {event.actor} within "
                   f"{format_duration(within)} ({', '.join(rules)})")
        return _alert(a, "violation_burst", summary, ctx,
                      {"refusals": int(count or 0), "within": format_duration(within),
                       "rules": rules})

    def _review_overdue(self, a: Appended) -> Message:
        ctx = context(a.connection, a.event)
        p = a.event.payload
        summary = (f"access review {p.get('review')} for {ctx['request_id']} "
                   f"({ctx['incident']}, {ctx['principal']}) is overdue since {p.get('due_at')}; "
                   f"reviewer {p.get('reviewer') or 'unassigned'}")
        return _alert(a, "review_overdue", summary, ctx,
                      {"review_id": p.get("review"), "reviewer": p.get("reviewer"),
                       "due_at": p.get("due_at")})


def _alert(a: Appended, rule: str, summary: str, ctx: dict[str, Any],
           details: dict[str, Any]) -> Message:
    event = a.event
    data = {**ctx, "alert": rule, "severity": SEVERITY.get(rule, "high"), "details": details,
            "event": {"index": event.index, "action": event.action, "actor": event.actor,
                      "ts": event.ts.isoformat()}}  # the index is stamped in by Message.at
    return Message(kind="alert", topic=f"alert.{rule}", dedupe_key=f"alert.{rule}",
                   per_event=True, summary=summary, data=data, request_id=ctx["request_id"],
                   grant_id=ctx["grant_id"], incident=ctx["incident"])
