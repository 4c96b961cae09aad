"""Audit events in OCSF 1.3.0: each record valid against the schema of its class.

The records are checked with the models ``pydantic-ocsf`` builds from the
published OCSF 1.3.0 schema (required attributes, enumerations, the sibling
``*_name``/``*_id`` pairs, ``type_uid``), for every event tag the broker writes
and every outcome; the attributes those models leave out (``time``, the class
and category ids) are checked here against the schema's definitions.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from ocsf.v1_3_0 import events as schema
from pydantic import BaseModel

from breakglass.audit.ocsf import OCSF_VERSION, to_ocsf
from breakglass.domain.events import EventTag

pytestmark = pytest.mark.unit

MODELS: dict[int, type[BaseModel]] = {
    6003: schema.ApiActivity, 3005: schema.UserAccess, 3002: schema.Authentication,
    2004: schema.DetectionFinding, 3004: schema.EntityManagement,
}
CATEGORIES = {6003: 6, 3005: 3, 3002: 3, 2004: 2, 3004: 3}
TS = "2026-11-24T07:00:00.250000+00:00"


def entry(action: str, outcome: str = "ok", **fields: Any) -> dict[str, Any]:
    return {"index": 7, "ts": TS, "actor": "uma", "action": action, "outcome": outcome,
            "reason": None, "request_id": "r-1", "grant_id": None, "incident": "SEV-1",
            "zone": "B", "rule": None, "payload": {}, "leaf_hash": "00" * 32, **fields}


def valid(record: dict[str, Any]) -> dict[str, Any]:
    """The record, once its class's OCSF 1.3.0 model accepts it."""
    MODELS[record["class_uid"]].model_validate(record)
    assert record["category_uid"] == CATEGORIES[record["class_uid"]]
    assert record["type_uid"] == record["class_uid"] * 100 + record["activity_id"]
    assert record["metadata"]["version"] == OCSF_VERSION
    assert record["time"] == int(datetime.fromisoformat(TS).timestamp() * 1000)
    assert record["time_dt"] == TS
    return record


@pytest.mark.parametrize("outcome", ["ok", "denied", "failed"])
@pytest.mark.parametrize("tag", list(EventTag), ids=[t.value for t in EventTag])
def test_every_event_the_broker_writes_is_a_valid_ocsf_record(tag: EventTag, outcome: str):
    record = valid(to_ocsf(entry(tag.value, outcome, reason="why")))
    assert record["unmapped"]["action"] == tag.value
    assert record["message"] == "why"


@pytest.mark.parametrize(("action", "expected"), [
    ("request:created", (6003, 1, "Create")),
    ("request:denied", (6003, 3, "Update")),           # a change to the request, not a Read
    ("request:approval:added", (6003, 3, "Update")),
    ("grant:credential:viewed", (6003, 2, "Read")),
    ("grant:credential:issued", (3005, 1, "Assign Privileges")),
    ("grant:credential:revoked", (3005, 2, "Revoke Privileges")),
    ("grant:credential:expired", (3005, 2, "Revoke Privileges")),
    ("identity:session:started", (3002, 1, "Logon")),
    ("identity:login:issued", (3002, 3, "Authentication Ticket")),
    ("audit:key:rotated", (3004, 3, "Update")),
    ("audit:log:tampered", (2004, 1, "Create")),
    ("grant:revocation:failed", (2004, 1, "Create")),
    ("audit:anchor:recovered", (2004, 3, "Close")),
    ("connector:own:thing", (6003, 99, "Other")),       # a tag the mapping does not know
])
def test_each_tag_has_its_class_and_activity(action: str, expected: tuple[int, int, str]):
    record = valid(to_ocsf(entry(action)))
    assert (record["class_uid"], record["activity_id"], record["activity_name"]) == expected


def test_a_grant_names_the_person_it_was_for_and_the_privilege():
    issued = valid(to_ocsf(entry("grant:credential:issued", actor="broker", payload={
        "role": "embeddings-read", "target": "embeddings-db", "target_ref": "bg_r1_g0",
        "requester": "uma"})))
    assert issued["user"]["name"] == "uma"
    assert issued["actor"]["user"]["name"] == "broker"
    assert issued["privileges"] == ["embeddings-read@embeddings-db"]
    older = valid(to_ocsf(entry("grant:credential:revoked", actor="vera",
                                payload={"target_ref": "bg_r1_g0"})))
    assert (older["user"]["name"], older["privileges"]) == ("vera", ["bg_r1_g0"])


def test_refusals_are_failures_and_an_anchor_outage_is_one_finding_opened_and_closed():
    refused = valid(to_ocsf(entry("request:refused", "denied", rule="policy.zone")))
    assert (refused["status_id"], refused["status"]) == (2, "Failure")
    assert refused["unmapped"]["rule"] == "policy.zone"
    anchor = {"anchor": "s3://audit/breakglass", "size": 40}
    failed = valid(to_ocsf(entry("audit:anchor:failed", "failed", payload=anchor)))
    recovered = valid(to_ocsf(entry("audit:anchor:recovered", payload=anchor, index=9)))
    assert failed["finding_info"]["uid"] == recovered["finding_info"]["uid"]
    assert (failed["status"], recovered["status"]) == ("New", "Resolved")
    assert failed["severity_id"] == 4


def test_the_caller_address_is_the_source_endpoint_when_it_is_an_address():
    refused = valid(to_ocsf(entry("identity:token:refused", "denied",
                                  payload={"source": "2001:db8::1"})))
    assert refused["src_endpoint"] == {"ip": "2001:db8::1"}
    unknown = valid(to_ocsf(entry("identity:token:refused", "denied",
                                  payload={"source": "unknown"})))
    assert "src_endpoint" not in unknown
    created = valid(to_ocsf(entry("request:created")))
    assert created["src_endpoint"]["type_id"] == 0  # required by API Activity; not recorded
