"""A seeded history of emergency access whose report numbers are computed by hand."""

from __future__ import annotations

from typing import Any

from breakglass.domain.errors import PolicyRefused
from breakglass.reviews.service import NewTask
from tests.ops_harness import Harness


def seed_history(h: Harness) -> None:
    """Four emergency sessions over three incidents, four refusals, two identity changes,
    four reviews. Seconds after the start are in the comments; EXPECTED follows from them."""
    b, who = h.broker, h.who
    h.target.delay = 2  # R1, zone A: created 0, active 2, revoked by uma at 300
    r1 = b.request_access(who("uma"), ["embeddings-read"], incident="SEV-1001",
                          reason="recovery").request.id
    h.at(100)
    _refused(lambda: b.request_access(who("xia"), ["embeddings-requeue"], incident="SEV-1001",
                                      reason="recovery"))  # identity.mfa_required
    h.at(110)
    _refused(lambda: b.request_access(who("uma"), ["embeddings-read"], incident="INC-1",
                                      reason="recovery"))  # incident.pattern
    h.at(300)
    b.revoke(who("uma"), r1)  # review RV1 opens at 300 (vera)
    h.at(600)
    h.target.delay = 4  # R2, zone A: created 600, active 604, expires 1800
    b.request_access(who("uma"), ["embeddings-read"], incident="SEV-1001", reason="recovery")
    h.at(1810)
    b.expire_due()  # revoked 10 s after expiry: on time; review RV2 opens (wim)
    h.at(2000)
    h.target.delay = 1  # R3, zone B: created 2000, approved 2060, active 2061, expires 3260
    r3 = b.request_access(who("uma"), ["embeddings-requeue"], incident="SEV-1002",
                          reason="recovery").request.id
    h.at(2030)
    _refused(lambda: b.approve(who("ugo"), r3))  # approval.same_team
    h.at(2040)
    _refused(lambda: b.request_access(who("yuri"), ["embeddings-read"], incident="SEV-1002",
                                      reason="recovery"))  # role.requesters
    h.at(2060)
    b.approve(who("vera"), r3)
    h.at(3265)
    h.target.fail_revoke = True
    b.expire_due()  # the target is down: the revocation fails, is alerted, retried later
    h.at(3400)
    h.target.fail_revoke = False
    b.expire_due()  # revoked 140 s after expiry: late; review RV3 opens (wim)
    h.at(4000)
    h.target.delay = 3  # R4, zone C: created 4000, approvals 4030 and 4090, active 4093
    r4 = b.request_access(who("uma"), ["embeddings-repair"], incident="SEV-1003",
                          reason="data_integrity").request.id
    h.at(4030)
    b.approve(who("vera"), r4)
    h.at(4090)
    b.approve(who("wim"), r4)
    h.at(4100)
    grant_ref = b.view(r4).grants[0].target_ref
    h.write_statement_log(grant_ref, "CREATE ROLE shadow LOGIN PASSWORD 'hunter2'",
                          "GRANT ALL ON vectors.items TO shadow")
    assert h.ops.watcher.poll() == 2
    h.at(4300)
    b.revoke(who("uma"), r4)  # review RV4 opens at 4300 (vera)
    reviews = {rv.request_id: rv.id for rv in h.ops.reviews.search()}
    rv2 = next(rid for req, rid in reviews.items() if req not in (r1, r3, r4))
    h.at(5410)
    h.ops.reviews.complete(who("wim"), rv2, "read access used as intended; replica password "
                           "was shown in a shared channel", [NewTask("ugo", "rotate the "
                                                                     "replica password")])
    h.at(7500)
    h.ops.reviews.complete(who("vera"), reviews[r1], "routine diagnostics", [])
    h.at(40300)
    h.ops.reviews.complete(who("vera"), reviews[r4], "manual repair of 12 rows; a role was "
                           "created and refused by the target", [])
    h.at(90000)
    assert h.ops.reviews.raise_overdue() == 1  # RV3, due at 89800, has no findings
    h.at(109810)
    task = h.ops.reviews.get(rv2).tasks[0].id
    h.ops.reviews.close_task(who("ugo"), task, "rotated")  # RV2 closes, 30 h after opening
    h.at(120000)


def _refused(call: Any) -> None:
    try:
        call()
    except PolicyRefused:
        return
    raise AssertionError("expected a refusal")


def _s(count: int, p50: float | None, p95: float | None, mean: float | None,
       top: float | None) -> dict[str, Any]:
    return {"count": count, "p50": p50, "p95": p95, "mean": mean, "max": top}


EXPECTED: dict[str, Any] = {
    "activation": {
        "unit": "seconds",
        "count": 4,
        "by_zone_environment": [
            {"zone": "A", "environment": "production", "total": _s(2, 3.0, 3.9, 3.0, 4.0),
             "overhead": _s(2, 3.0, 3.9, 3.0, 4.0)},
            {"zone": "B", "environment": "production", "total": _s(1, 61.0, 61.0, 61.0, 61.0),
             "overhead": _s(1, 1.0, 1.0, 1.0, 1.0)},
            {"zone": "C", "environment": "production", "total": _s(1, 93.0, 93.0, 93.0, 93.0),
             "overhead": _s(1, 3.0, 3.0, 3.0, 3.0)},
        ],
        "by_zone": {
            "A": {"total": _s(2, 3.0, 3.9, 3.0, 4.0), "overhead": _s(2, 3.0, 3.9, 3.0, 4.0)},
            "B": {"total": _s(1, 61.0, 61.0, 61.0, 61.0), "overhead": _s(1, 1.0, 1.0, 1.0, 1.0)},
            "C": {"total": _s(1, 93.0, 93.0, 93.0, 93.0), "overhead": _s(1, 3.0, 3.0, 3.0, 3.0)},
        },
    },
    "ttl_compliance": {
        "sessions": 4, "compliant": 3, "rate": 75.0,
        "by_zone": {"A": {"sessions": 2, "compliant": 2, "rate": 100.0},
                    "B": {"sessions": 1, "compliant": 0, "rate": 0.0},
                    "C": {"sessions": 1, "compliant": 1, "rate": 100.0}},
    },
    "auto_revocation": {"due": 2, "revoked": 2, "first_attempt": 1, "on_time": 1,
                        "success_rate": 50.0, "on_time_rate": 50.0,
                        "requests_with_failed_attempts": 1},
    "policy_violations": {
        "denied": 4, "accepted": 7, "rate": 36.36,
        "by_rule": [{"rule": "approval.same_team", "count": 1},
                    {"rule": "identity.mfa_required", "count": 1},
                    {"rule": "incident.pattern", "count": 1},
                    {"rule": "role.requesters", "count": 1}],
        "by_action": {"request:approval:refused": 1, "request:refused": 3},
    },
    "high_risk_density": {
        "actions": 2, "sessions": 4, "density": 0.5,
        "by_kind": {"identity_change": 1, "privilege_change": 1},
        "by_zone": {"A": {"actions": 0, "sessions": 2, "density": 0.0},
                    "B": {"actions": 0, "sessions": 1, "density": 0.0},
                    "C": {"actions": 2, "sessions": 1, "density": 2.0}},
    },
    "review_closure": {
        "opened": 4, "closed": 3, "open": 1, "overdue": 1, "on_time_rate": 66.67,
        "closure_seconds": _s(3, 36000.0, 100800.0, 50400.0, 108000.0),
        "tasks": {"total": 1, "open": 0},
    },
    "restoration": {
        "incidents": 3, "restored": 3, "ongoing": 0,
        "seconds": _s(3, 1400.0, 1769.0, 1170.0, 1810.0),
        "items": [{"incident": "SEV-1001", "seconds": 1810.0, "basis": "last_access_ended",
                   "requests": 2},
                  {"incident": "SEV-1002", "seconds": 1400.0, "basis": "last_access_ended",
                   "requests": 1},
                  {"incident": "SEV-1003", "seconds": 300.0, "basis": "last_access_ended",
                   "requests": 1}],
    },
}


def comparable(report: dict[str, Any]) -> dict[str, Any]:
    """The report without what depends on the calendar (window, per-day series, row lists)."""
    found = {key: dict(report[key]) for key in EXPECTED}
    found["activation"].pop("series")
    found["ttl_compliance"].pop("non_compliant")
    found["review_closure"].pop("items")
    return found
