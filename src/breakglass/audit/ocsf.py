"""Audit events as OCSF records, for ``breakglass audit export --format ocsf``.

The schema version is pinned in every record's ``metadata.version``.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from breakglass.domain.events import EventTag, refusals_in

OCSF_VERSION = "1.3.0"

# activity_id by the action's last word, for classes whose activities follow it
_VERB_ACTIVITY = {"created": 1, "added": 1, "issued": 1, "activated": 1, "auto": 1,
                  "revoked": 2, "expired": 2, "ended": 2, "denied": 2, "cancelled": 2}
# activity_id by class where it does not follow the verb: Authentication is a Logon; a
# Detection Finding is created (1), or closed (3) when its condition ended; Entity
# Management's key rotation is an Update (3)
_CLASS_ACTIVITY = {3002: {"": 1}, 2004: {"": 1, "recovered": 3}, 3004: {"": 3}}


def _ocsf_class(action: str) -> tuple[int, int, str]:
    """(class_uid, category_uid, class_name) of an event, per the OCSF 1.3 schema."""
    if action == EventTag.AUDIT_KEY_ROTATED:  # a managed entity (the signing key) updated
        return 3004, 3, "Entity Management"
    if action.startswith(("drift:", "audit:")) or action == EventTag.GRANT_REVOCATION_FAILED:
        return 2004, 2, "Detection Finding"
    if action.startswith("identity:"):
        return 3002, 3, "Authentication"
    if action.startswith("grant:"):
        return 3005, 3, "User Access Management"
    return 6003, 6, "API Activity"


def _is_ip(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def to_ocsf(entry: dict[str, Any]) -> dict[str, Any]:
    """One exported event (``AuditLog.entries`` form) as an OCSF record."""
    class_uid, category_uid, class_name = _ocsf_class(entry["action"])
    verb = entry["action"].rsplit(":", 1)[-1]
    fixed = _CLASS_ACTIVITY.get(class_uid)
    activity_id = (fixed.get(verb, fixed[""]) if fixed is not None
                   else _VERB_ACTIVITY.get(verb, 99))
    ok = entry["outcome"] == "ok"
    record = {
        "class_uid": class_uid,
        "class_name": class_name,
        "category_uid": category_uid,
        "activity_id": activity_id,
        "activity_name": entry["action"],
        "type_uid": class_uid * 100 + activity_id,
        "time": entry["ts"],
        "severity_id": 1 if ok else 4,
        "status_id": 1 if ok else 2,
        "status": "Success" if ok else "Failure",
        "status_detail": entry.get("reason"),
        "actor": {"user": {"name": entry["actor"]}},
        "metadata": {"product": {"name": "breakglass", "vendor_name": "breakglass"},
                     "version": OCSF_VERSION, "uid": str(entry["index"]), "log_name": "audit",
                     "correlation_uid": entry.get("incident")},
        "unmapped": {k: entry[k] for k in ("request_id", "grant_id", "zone", "rule",
                                           "payload", "leaf_hash")},
    }
    payload = entry.get("payload") or {}
    if class_uid == 3002 and _is_ip(payload.get("source")):
        record["src_endpoint"] = {"ip": payload["source"]}
    if entry["action"] == EventTag.AUTH_REFUSALS_COUNTED:  # one record for many attempts
        record["count"] = refusals_in(entry["action"], payload)
        record["start_time"] = payload.get("from")
        record["end_time"] = payload.get("to")
    return record
