"""The seven metrics of the program, computed from stored data for one window.

Every number is defined here and repeated in the report's ``definitions``:

1. ``activation``: requests created in the window that became active.
   ``total`` = activated_at - created_at (request to usable credential);
   ``overhead`` = activated_at - activation start (the deciding approval, or
   the request itself when auto-approved): broker and target time without the
   human wait. P50/P95 by zone and environment, and by zone per day.
2. ``ttl_compliance``: of those sessions, the ended ones are compliant when
   their last grant was gone by expires_at + grace; one still live past
   expires_at + grace is not; one still inside its TTL is not counted yet.
3. ``auto_revocation``: grants whose access ran out (expiry): ``success`` =
   revoked with no failed attempt; ``on_time`` = revoked by expires_at + grace.
4. ``policy_violations``: refused attempts in the window by rule and action;
   rate = refused / (refused + accepted), accepted being new requests,
   approvals, denials and withdrawals.
5. ``high_risk_density``: identity, privilege and policy changes made by
   emergency roles (``grant:action:high_risk``) per emergency session.
6. ``review_closure``: reviews opened in the window: closed_at - opened_at,
   on time when closed by due_at; open and overdue ones counted.
7. ``restoration``: incidents whose emergency access began in the window:
   first emergency request to the incident's closure (``incident:access:closed``)
   or, without one, to the end of its last emergency access (its last grant
   revoked, or its last request closed).

Percentiles interpolate linearly between ranks (:func:`.stats.percentile`).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, func, select

from breakglass.domain.durations import format_duration
from breakglass.domain.events import EventTag, refusals_in
from breakglass.metrics.stats import ratio, summary
from breakglass.reviews.model import ReviewState
from breakglass.reviews.store import ReviewStore
from breakglass.storage import tables as t

ACCEPTED = (EventTag.REQUEST_CREATED.value, EventTag.APPROVAL_ADDED.value,
            EventTag.REQUEST_DENIED.value, EventTag.REQUEST_CANCELLED.value)
LIVE = frozenset({"pending", "activating", "active", "revoking"})
ENDED = frozenset({"revoked", "expired"})
_CHUNK = 500


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    zone: str
    environment: str
    incident: str
    state: str
    end_state: str | None
    created_at: datetime
    activated_at: datetime | None
    expires_at: datetime | None
    ended_at: datetime | None


@dataclass(frozen=True, slots=True)
class GrantRow:
    id: str
    request_id: str
    state: str
    expires_at: datetime
    revoked_at: datetime | None


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start:start + _CHUNK]


def _seconds(later: datetime, earlier: datetime) -> float:
    return round((later - earlier).total_seconds(), 3)


def build_report(engine: Engine, *, since: datetime, until: datetime, grace: timedelta,
                 organization: str = "") -> dict[str, Any]:
    with engine.connect() as conn:
        r = t.requests.c
        sessions = [Session(row.id, row.zone, row.environment, row.incident, row.state,
                            row.end_state, row.created_at, row.activated_at, row.expires_at,
                            row.ended_at)
                    for row in conn.execute(select(t.requests).where(
                        r.created_at >= since, r.created_at < until).order_by(r.created_at))]
        active = [s for s in sessions if s.activated_at is not None]
        ids = [s.id for s in active]
        starts = _activation_starts(conn, ids)
        grants = _grants(conn, ids)
        failed = _with_event(conn, ids, EventTag.GRANT_REVOCATION_FAILED.value)
        report = {
            "organization": organization,
            "window": {"since": since.isoformat(), "until": until.isoformat(),
                       "grace": format_duration(grace)},
            "activation": activation(active, starts),
            "ttl_compliance": ttl_compliance(active, grants, until, grace),
            "auto_revocation": auto_revocation(active, grants, failed, until, grace),
            "policy_violations": policy_violations(conn, since, until),
            "high_risk_density": high_risk_density(conn, active, since, until),
            "review_closure": review_closure(conn, since, until),
            "restoration": restoration(conn, active, until),
        }
    report["definitions"] = DEFINITIONS
    return report


def _activation_starts(conn: Connection, ids: list[str]) -> dict[str, datetime]:
    e = t.events.c
    found: dict[str, datetime] = {}
    for chunk in _chunks(ids):
        rows = conn.execute(select(e.request_id, e.ts).where(
            e.request_id.in_(chunk), e.action == EventTag.REQUEST_ACTIVATING.value
        ).order_by(e.idx))
        for row in rows:
            found[row.request_id] = row.ts
    return found


def _grants(conn: Connection, ids: list[str]) -> dict[str, list[GrantRow]]:
    g = t.grants.c
    found: dict[str, list[GrantRow]] = defaultdict(list)
    for chunk in _chunks(ids):
        for row in conn.execute(select(g.id, g.request_id, g.state, g.expires_at, g.revoked_at)
                                .where(g.request_id.in_(chunk)).order_by(g.id)):
            found[row.request_id].append(GrantRow(row.id, row.request_id, row.state,
                                                  row.expires_at, row.revoked_at))
    return found


def _with_event(conn: Connection, ids: list[str], action: str) -> set[str]:
    e = t.events.c
    found: set[str] = set()
    for chunk in _chunks(ids):
        found.update(str(row.request_id) for row in conn.execute(
            select(e.request_id).where(e.request_id.in_(chunk), e.action == action).distinct()))
    return found


def activation(active: list[Session], starts: dict[str, datetime]) -> dict[str, Any]:
    totals: dict[tuple[str, str], list[float]] = defaultdict(list)
    overheads: dict[tuple[str, str], list[float]] = defaultdict(list)
    daily: dict[tuple[str, str], list[float]] = defaultdict(list)
    for s in active:
        if s.activated_at is None:
            continue
        key = (s.zone, s.environment)
        totals[key].append(_seconds(s.activated_at, s.created_at))
        overheads[key].append(_seconds(s.activated_at, starts.get(s.id, s.created_at)))
        daily[(s.activated_at.date().isoformat(), s.zone)].append(totals[key][-1])
    by_zone_total: dict[str, list[float]] = defaultdict(list)
    by_zone_overhead: dict[str, list[float]] = defaultdict(list)
    for (zone, _env), values in totals.items():
        by_zone_total[zone] += values
        by_zone_overhead[zone] += overheads[(zone, _env)]
    return {
        "unit": "seconds",
        "count": len(active),
        "by_zone_environment": [
            {"zone": zone, "environment": env, "total": summary(values),
             "overhead": summary(overheads[(zone, env)])}
            for (zone, env), values in sorted(totals.items())],
        "by_zone": {zone: {"total": summary(values),
                           "overhead": summary(by_zone_overhead[zone])}
                    for zone, values in sorted(by_zone_total.items())},
        "series": [{"day": day, "zone": zone, **summary(values)}
                   for (day, zone), values in sorted(daily.items())],
    }


def ttl_compliance(active: list[Session], grants: dict[str, list[GrantRow]], until: datetime,
                   grace: timedelta) -> dict[str, Any]:
    counted: dict[str, list[bool]] = defaultdict(list)
    late: list[dict[str, Any]] = []
    for s in active:
        if s.expires_at is None:
            continue
        limit = s.expires_at + grace
        if s.state in ENDED:
            revoked = [g.revoked_at for g in grants.get(s.id, []) if g.revoked_at is not None]
            ended = max(revoked, default=s.ended_at or s.expires_at)
            ok = ended <= limit
        elif until > limit:
            ended, ok = until, False  # still live past its approved end
        else:
            continue
        counted[s.zone].append(ok)
        if not ok:
            late.append({"request_id": s.id, "zone": s.zone, "incident": s.incident,
                         "overrun_seconds": _seconds(ended, s.expires_at),
                         "still_live": s.state not in ENDED})
    flat = [ok for values in counted.values() for ok in values]
    return {
        "sessions": len(flat), "compliant": sum(flat), "rate": ratio(sum(flat), len(flat)),
        "by_zone": {zone: {"sessions": len(v), "compliant": sum(v), "rate": ratio(sum(v), len(v))}
                    for zone, v in sorted(counted.items())},
        "non_compliant": late[:50],
    }


def auto_revocation(active: list[Session], grants: dict[str, list[GrantRow]], failed: set[str],
                    until: datetime, grace: timedelta) -> dict[str, Any]:
    due = revoked = first = on_time = 0
    for s in active:
        expiring = s.end_state == "expired" or (s.state == "active" and s.expires_at is not None
                                                 and s.expires_at + grace < until)
        if not expiring:
            continue
        for g in grants.get(s.id, []):
            due += 1
            if g.state == "expired" and g.revoked_at is not None:
                revoked += 1
                first += s.id not in failed
                on_time += g.revoked_at <= g.expires_at + grace
    return {"due": due, "revoked": revoked, "first_attempt": first, "on_time": on_time,
            "success_rate": ratio(first, due), "on_time_rate": ratio(on_time, due),
            "requests_with_failed_attempts": len(failed)}


def policy_violations(conn: Connection, since: datetime, until: datetime) -> dict[str, Any]:
    e = t.events.c
    window = (e.ts >= since, e.ts < until)
    denied = conn.execute(select(e.rule, e.action, func.count()).where(
        e.outcome == "denied", *window).group_by(e.rule, e.action)).all()
    accepted = int(conn.execute(select(func.count()).select_from(t.events).where(
        e.action.in_(ACCEPTED), e.outcome == "ok", *window)).scalar() or 0)
    by_rule: Counter[str] = Counter()
    by_action: Counter[str] = Counter()
    for rule, action, count in denied:
        by_rule[str(rule or "unknown")] += int(count)
        by_action[str(action)] += int(count)
    # a summary of refusals counted over budget stands for its count, not for one
    for rule, action, payload in conn.execute(select(e.rule, e.action, e.payload).where(
            e.action == EventTag.AUTH_REFUSALS_COUNTED, *window)):
        more = refusals_in(action, payload or {}) - 1
        by_rule[str(rule or "unknown")] += more
        by_action[str(action)] += more
    total = sum(by_rule.values())
    return {"denied": total, "accepted": accepted, "rate": ratio(total, total + accepted),
            "by_rule": [{"rule": k, "count": v}
                        for k, v in sorted(by_rule.items(), key=lambda kv: (-kv[1], kv[0]))],
            "by_action": dict(sorted(by_action.items()))}


def high_risk_density(conn: Connection, active: list[Session], since: datetime,
                      until: datetime) -> dict[str, Any]:
    e = t.events.c
    rows = conn.execute(select(e.zone, e.payload).where(
        e.action == EventTag.HIGH_RISK_ACTION.value, e.ts >= since, e.ts < until)).all()
    by_kind: Counter[str] = Counter(str((row.payload or {}).get("kind", "unknown"))
                                    for row in rows)
    actions_by_zone: Counter[str] = Counter(str(row.zone or "-") for row in rows)
    sessions_by_zone: Counter[str] = Counter(s.zone for s in active)

    def density(actions: int, sessions: int) -> float | None:
        return round(actions / sessions, 3) if sessions else None

    return {"actions": len(rows), "sessions": len(active),
            "density": density(len(rows), len(active)),
            "by_kind": dict(sorted(by_kind.items())),
            "by_zone": {zone: {"actions": actions_by_zone[zone], "sessions": sessions_by_zone[zone],
                               "density": density(actions_by_zone[zone], sessions_by_zone[zone])}
                        for zone in sorted(set(actions_by_zone) | set(sessions_by_zone))}}


def review_closure(conn: Connection, since: datetime, until: datetime) -> dict[str, Any]:
    reviews = [rv for rv in ReviewStore(conn).search(opened_since=since, limit=100_000)
               if rv.opened_at < until]
    closed = [rv for rv in reviews if rv.closed_at is not None]
    closure = [c for c in (rv.closure_seconds() for rv in closed) if c is not None]
    on_time = sum(1 for rv in closed if rv.closed_at is not None and rv.closed_at <= rv.due_at)
    tasks = [task for rv in reviews for task in rv.tasks]
    return {"opened": len(reviews), "closed": len(closed),
            "open": sum(rv.state is not ReviewState.CLOSED for rv in reviews),
            "overdue": sum(rv.overdue(until) for rv in reviews),
            "on_time_rate": ratio(on_time, len(closed)),
            "closure_seconds": summary(closure),
            "tasks": {"total": len(tasks), "open": sum(tk.closed_at is None for tk in tasks)},
            "items": [{"review_id": rv.id, "incident": rv.incident, "state": rv.state.value,
                       "closure_seconds": rv.closure_seconds()} for rv in reviews[:100]]}


def restoration(conn: Connection, active: list[Session], until: datetime) -> dict[str, Any]:
    incidents = sorted({s.incident for s in active})
    r, e, g = t.requests.c, t.events.c, t.grants.c
    members: dict[str, list[Any]] = defaultdict(list)
    closed_at: dict[str, datetime] = {}
    revoked: dict[str, datetime] = {}
    for chunk in _chunks(incidents):
        for row in conn.execute(select(r.incident, r.created_at, r.ended_at, r.state)
                                .where(r.incident.in_(chunk))):
            members[row.incident].append(row)
        for last in conn.execute(select(r.incident, func.max(g.revoked_at).label("at"))
                                 .join(t.grants, g.request_id == r.id)
                                 .where(r.incident.in_(chunk)).group_by(r.incident)):
            if last.at is not None:
                revoked[last.incident] = t.UTCDateTime().process_result_value(
                    last.at, conn.dialect) or last.at
        for closed in conn.execute(select(e.incident, e.ts).where(
                e.incident.in_(chunk), e.action == EventTag.INCIDENT_CLOSED.value,
                e.ts < until).order_by(e.idx)):
            closed_at.setdefault(closed.incident, closed.ts)
    items: list[dict[str, Any]] = []
    values: list[float] = []
    ongoing = 0
    for incident in incidents:
        rows = members[incident]
        start = min(row.created_at for row in rows)
        if incident in closed_at and closed_at[incident] >= start:
            end, basis = closed_at[incident], "incident_closed"
        elif any(row.state in LIVE for row in rows):
            ongoing += 1
            items.append({"incident": incident, "seconds": None, "basis": "ongoing",
                          "requests": len(rows)})
            continue
        else:
            ends = [row.ended_at for row in rows if row.ended_at is not None]
            end = max([*ends, *([revoked[incident]] if incident in revoked else [])],
                      default=start)
            basis = "last_access_ended"
        values.append(_seconds(end, start))
        items.append({"incident": incident, "seconds": values[-1], "basis": basis,
                      "requests": len(rows)})
    return {"incidents": len(incidents), "restored": len(values), "ongoing": ongoing,
            "seconds": summary(values), "items": items[:100]}


DEFINITIONS = {
    "activation": "request to usable credential (total) and activation start to active "
                  "(overhead: broker and target, no human wait), seconds, P50/P95",
    "ttl_compliance": "% of ended sessions whose last grant was gone by expires_at + grace; "
                      "sessions still live past that count as non-compliant",
    "auto_revocation": "% of grants due to expire that were revoked with no failed attempt "
                       "(success_rate) and by expires_at + grace (on_time_rate)",
    "policy_violations": "refused attempts by rule; rate = refused / (refused + accepted "
                         "requests, approvals, denials, withdrawals)",
    "high_risk_density": "identity, privilege and policy changes by emergency roles per "
                         "emergency session",
    "review_closure": "seconds from a review's opening (access ended) to its closure",
    "restoration": "seconds from an incident's first emergency request to its closure, or "
                   "to the end of its last emergency access",
}
