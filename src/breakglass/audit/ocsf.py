"""Audit events as OCSF 1.3.0 records, for ``breakglass audit export --format ocsf``.

Each event tag has one class and activity, chosen from the schema's own lists:

* API Activity (6003): a request, approval, denial, extension or review, as the
  API call that created (Create) or changed (Update) it; a credential pickup is
  a Read;
* User Access Management (3005): a grant issued (Assign Privileges), revoked or
  expired (Revoke Privileges), or extended (Other);
* Authentication (3002): a token issued, a session started, a token refused (a
  Logon that failed), and a count of refused tokens (one record, ``count`` set);
* Detection Finding (2004): drift, a failed revocation, a high-risk action by an
  emergency role, a rewritten log, an anchor that refused a checkpoint (Create),
  and the anchor taking them again (Close, same ``finding_info.uid``);
* Entity Management (3004): the audit signing key replaced (Update).

Every record carries the class's required attributes; ``time`` is epoch
milliseconds, with ``time_dt`` (the ``datetime`` profile) beside it. The
event's own fields that OCSF has no place for go to ``unmapped``, the tag
itself included. The schema version is pinned in ``metadata.version``.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime
from typing import Any, NamedTuple

from breakglass import __version__
from breakglass.domain.events import EventTag, refusals_in

OCSF_VERSION = "1.3.0"
PRODUCT = {"name": "breakglass", "vendor_name": "breakglass", "version": __version__}


class OcsfClass(NamedTuple):
    uid: int
    name: str
    category_uid: int
    category_name: str


API = OcsfClass(6003, "API Activity", 6, "Application Activity")
ACCESS = OcsfClass(3005, "User Access Management", 3, "Identity & Access Management")
AUTHENTICATION = OcsfClass(3002, "Authentication", 3, "Identity & Access Management")
ENTITY = OcsfClass(3004, "Entity Management", 3, "Identity & Access Management")
FINDING = OcsfClass(2004, "Detection Finding", 2, "Findings")

# activity ids and names, as each class's schema lists them
_ACTIVITIES = {
    API.uid: {1: "Create", 2: "Read", 3: "Update", 4: "Delete", 99: "Other"},
    ACCESS.uid: {1: "Assign Privileges", 2: "Revoke Privileges", 99: "Other"},
    AUTHENTICATION.uid: {1: "Logon", 2: "Logoff", 3: "Authentication Ticket", 99: "Other"},
    ENTITY.uid: {3: "Update", 99: "Other"},
    FINDING.uid: {1: "Create", 2: "Update", 3: "Close", 99: "Other"},
}

T = EventTag
_CREATED = (T.REQUEST_CREATED, T.REQUEST_REFUSED, T.EXTENSION_REQUESTED, T.EXTENSION_REFUSED,
            T.REVIEW_OPENED, T.REVIEW_TASK_ADDED)
_UPDATED = (T.REQUEST_AUTO_APPROVED, T.APPROVAL_ADDED, T.APPROVAL_REFUSED, T.REQUEST_DENIED,
            T.REQUEST_CANCELLED, T.REQUEST_EXPIRED, T.REQUEST_ACTIVATING, T.REQUEST_ACTIVE,
            T.REQUEST_ACTIVATION_FAILED, T.REQUEST_ENDING, T.REQUEST_ENDED, T.INCIDENT_CLOSED,
            T.EXTENSION_AUTO_APPROVED, T.EXTENSION_APPROVAL_ADDED, T.EXTENSION_APPROVAL_REFUSED,
            T.EXTENSION_DENIED, T.EXTENSION_APPLIED, T.EXTENSION_LAPSED, T.REVIEW_COMPLETED,
            T.REVIEW_CLOSED, T.REVIEW_OVERDUE, T.REVIEW_TASK_CLOSED)
_FOUND = (T.DRIFT_ORPHAN, T.DRIFT_MISSING, T.DRIFT_LOOKALIKE, T.GRANT_REVOCATION_FAILED,
          T.HIGH_RISK_ACTION, T.AUDIT_TAMPERED, T.ANCHOR_FAILED)
_MAPPING: dict[str, tuple[OcsfClass, int]] = {
    **dict.fromkeys(_CREATED, (API, 1)),
    **dict.fromkeys(_UPDATED, (API, 3)),
    T.CREDENTIAL_VIEWED: (API, 2),
    T.CREDENTIAL_REFUSED: (API, 2),
    T.ACTION_REFUSED: (API, 99),
    T.INPUT_REFUSED: (API, 99),
    T.GRANT_EXPIRY_WARNING: (API, 99),
    T.GRANT_ISSUED: (ACCESS, 1),
    T.GRANT_REVOKED: (ACCESS, 2),
    T.GRANT_EXPIRED: (ACCESS, 2),
    T.GRANT_EXTENDED: (ACCESS, 99),
    T.LOGIN: (AUTHENTICATION, 3),
    T.SESSION_STARTED: (AUTHENTICATION, 1),
    T.AUTH_REFUSED: (AUTHENTICATION, 1),
    T.AUTH_REFUSALS_COUNTED: (AUTHENTICATION, 1),
    T.AUDIT_KEY_ROTATED: (ENTITY, 3),
    **dict.fromkeys(_FOUND, (FINDING, 1)),
    T.ANCHOR_RECOVERED: (FINDING, 3),
}

# OCSF severity_id: 1 Informational, 2 Low, 3 Medium, 4 High, 5 Critical
_FINDING_SEVERITY: dict[str, int] = {
    T.AUDIT_TAMPERED: 5, T.GRANT_REVOCATION_FAILED: 5, T.HIGH_RISK_ACTION: 5,
    T.DRIFT_ORPHAN: 4, T.DRIFT_MISSING: 4, T.DRIFT_LOOKALIKE: 3, T.ANCHOR_FAILED: 4,
    T.ANCHOR_RECOVERED: 1,
}
_SEVERITY: dict[str, int] = {T.AUDIT_KEY_ROTATED: 4, T.AUTH_REFUSALS_COUNTED: 3}


def ocsf_class(action: str) -> tuple[OcsfClass, int]:
    """The class and activity id of an event tag; API Activity (Other) for tags it does not
    know (a connector's own, say)."""
    return _MAPPING.get(action, (API, 99))


def to_ocsf(entry: dict[str, Any]) -> dict[str, Any]:
    """One exported event (``AuditLog.entries`` form) as an OCSF 1.3.0 record."""
    action = entry["action"]
    cls, activity_id = ocsf_class(action)
    payload = entry.get("payload") or {}
    ok = entry["outcome"] == "ok"
    actor = {"user": _user(entry["actor"], payload.get("actor_subject"))}
    record: dict[str, Any] = {
        "class_uid": cls.uid,
        "class_name": cls.name,
        "category_uid": cls.category_uid,
        "category_name": cls.category_name,
        "activity_id": activity_id,
        "activity_name": _ACTIVITIES[cls.uid][activity_id],
        "type_uid": cls.uid * 100 + activity_id,
        "type_name": f"{cls.name}: {_ACTIVITIES[cls.uid][activity_id]}",
        **_when("time", entry["ts"]),
        "severity_id": _severity(action, ok),
        "status_id": 1 if ok else 2,
        "status": "Success" if ok else "Failure",
        "message": entry.get("reason") or action,
        "actor": actor,
        "metadata": {"product": PRODUCT, "version": OCSF_VERSION, "profiles": ["datetime"],
                     "uid": str(entry["index"]), "log_name": "audit",
                     **({"correlation_uid": entry["incident"]} if entry.get("incident") else {})},
        "unmapped": {"action": action, **{k: entry[k] for k in (
            "outcome", "request_id", "grant_id", "zone", "rule", "payload", "leaf_hash")}},
    }
    if entry.get("reason"):
        record["status_detail"] = entry["reason"]
    source = payload.get("source")
    endpoint = {"ip": source} if _is_ip(source) else {"type_id": 0, "type": "Unknown"}
    if cls is API:
        record["api"] = {"operation": action, "service": {"name": "breakglass"}}
        record["src_endpoint"] = endpoint
    elif cls is ACCESS:
        record["user"] = _user(payload.get("requester") or entry["actor"])
        record["privileges"] = _privileges(entry, payload)
    elif cls is AUTHENTICATION:
        record["user"] = actor["user"]
        if "ip" in endpoint:
            record["src_endpoint"] = endpoint
        if action == T.AUTH_REFUSALS_COUNTED:  # one record for many attempts
            record["count"] = refusals_in(action, payload)
            record.update(_when("start_time", payload.get("from")))
            record.update(_when("end_time", payload.get("to")))
    elif cls is ENTITY:
        record["entity"] = {"type": "audit signing key", "name": "audit checkpoint signer",
                            "uid": str(payload.get("signing") or "unknown")}
    else:  # a finding's status is its own: New when opened, Resolved when closed
        record["finding_info"] = _finding(entry, payload)
        record["status_id"], record["status"] = (4, "Resolved") if activity_id == 3 else (1, "New")
    return record


def _user(name: str, subject: object = None) -> dict[str, Any]:
    """An OCSF user: the display name, and the person's subject key as ``uid`` when known."""
    found = {"name": name, "type_id": 99 if name in ("broker", "anonymous") else 1,
             "type": "Other" if name in ("broker", "anonymous") else "User"}
    return {**found, "uid": subject} if isinstance(subject, str) and subject else found


def _privileges(entry: dict[str, Any], payload: dict[str, Any]) -> list[str]:
    """What the grant gave: its role (on its target), else its target-side name."""
    role, target = payload.get("role"), payload.get("target")
    if isinstance(role, str):
        return [f"{role}@{target}" if isinstance(target, str) else role]
    ref = payload.get("target_ref")
    return [str(ref if ref is not None else entry.get("grant_id") or "unknown")]


def _finding(entry: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    """The finding an event opens or closes: an anchor's outage is one finding, opened by
    ``audit:anchor:failed`` and closed by ``audit:anchor:recovered``."""
    action = entry["action"]
    anchor = payload.get("anchor")
    if action in (T.ANCHOR_FAILED, T.ANCHOR_RECOVERED) and isinstance(anchor, str):
        uid = f"{T.ANCHOR_FAILED}:{anchor}"
    else:
        uid = f"{action}:{entry['index']}"
    return {"uid": uid, "title": entry.get("reason") or action, "types": [action],
            **_when("created_time", entry["ts"])}


def _severity(action: str, ok: bool) -> int:
    if action in _FINDING_SEVERITY:
        return _FINDING_SEVERITY[action]
    return _SEVERITY.get(action, 1 if ok else 2)


def _when(name: str, value: Any) -> dict[str, Any]:
    """``name`` in epoch milliseconds and ``name_dt`` as the ISO 8601 text, if ``value`` is
    a timestamp."""
    if not isinstance(value, str):
        return {}
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return {}
    return {name: int(at.timestamp() * 1000), f"{name}_dt": value}


def _is_ip(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True
