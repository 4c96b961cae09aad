"""Audit events in OCSF 1.3: each class and activity as the schema defines them."""

from __future__ import annotations

import pytest

from breakglass.audit.ocsf import OCSF_VERSION, to_ocsf

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("action", "outcome", "expected"), [
    ("audit:key:rotated", "ok", (3004, 3, 300403)),       # Entity Management: Update
    ("audit:log:tampered", "failed", (2004, 1, 200401)),  # Detection Finding: Create
    ("audit:anchor:failed", "failed", (2004, 1, 200401)),
    ("audit:anchor:recovered", "ok", (2004, 3, 200403)),  # Detection Finding: Close
    ("drift:orphan:revoked", "ok", (2004, 1, 200401)),
    ("identity:session:started", "ok", (3002, 1, 300201)),
    ("grant:credential:revoked", "ok", (3005, 2, 300502)),
])
def test_audit_findings_map_to_their_ocsf_class_and_activity(action: str, outcome: str,
                                                             expected: tuple[int, int, int]):
    entry = {"index": 7, "ts": "2026-11-24T07:00:00+00:00", "actor": "broker", "action": action,
             "outcome": outcome, "reason": None, "request_id": None, "grant_id": None,
             "incident": None, "zone": None, "rule": None, "payload": {}, "leaf_hash": "00"}
    ocsf = to_ocsf(entry)
    assert (ocsf["class_uid"], ocsf["activity_id"], ocsf["type_uid"]) == expected
    assert ocsf["metadata"]["version"] == OCSF_VERSION
