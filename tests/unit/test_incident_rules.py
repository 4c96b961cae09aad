"""Incident-bound access: the rule, and the HTTP adapter's reading of answers (no sockets)."""

from __future__ import annotations

from dataclasses import replace

import httpx
import pytest

from breakglass.domain import policy as rules
from breakglass.domain.incidents import (
    IncidentLookup,
    IncidentStatus,
    check_incident,
    check_runbook_severity,
)
from breakglass.domain.model import Runbook, Zone
from breakglass.service.incidents import HttpIncidentDirectory, lookup_payload


def rule_of(result: object) -> str:
    assert isinstance(result, rules.Denied), f"expected a refusal, got {result!r}"
    return result.rule


@pytest.mark.parametrize(("status", "rule"), [
    (IncidentStatus.UNKNOWN, "incident.unknown"),
    (IncidentStatus.CLOSED, "incident.closed"),
    (IncidentStatus.UNAVAILABLE, "incident.unavailable"),
])
def test_only_open_incidents_pass(loaded, status, rule):
    lookup = IncidentLookup("SEV-1234", status, "resolved")
    for zone in Zone:
        assert rule_of(check_incident(loaded.policy, lookup, zone)) == rule
    assert check_incident(loaded.policy, IncidentLookup("SEV-1234", IncidentStatus.OPEN),
                          Zone.C).ok


def test_fail_open_lets_only_zone_a_through_when_the_system_is_down(loaded):
    policy = replace(loaded.policy, incident_fail_open_zone_a=True)
    down = IncidentLookup("SEV-1234", IncidentStatus.UNAVAILABLE, "ConnectTimeout")
    assert check_incident(policy, down, Zone.A).ok
    denied = check_incident(policy, down, Zone.B)
    assert rule_of(denied) == "incident.unavailable"
    assert "ConnectTimeout" in denied.reason
    closed = IncidentLookup("SEV-1234", IncidentStatus.CLOSED)
    assert rule_of(check_incident(policy, closed, Zone.A)) == "incident.closed"
    assert lookup_payload(down)["incident_check"].startswith("fail-open")


def test_runbook_severities_need_a_matching_incident():
    runbook = Runbook("RB-1", "t", ("r",), (), (), severities=("SEV1", "SEV2"))
    sev1 = IncidentLookup("INC-1", IncidentStatus.OPEN, "open", "SEV1")
    sev3 = replace(sev1, severity="SEV3")
    assert check_runbook_severity(runbook, sev1).ok
    assert rule_of(check_runbook_severity(runbook, sev3)) == "runbook.severity"
    assert rule_of(check_runbook_severity(runbook, None)) == "runbook.severity"
    assert check_runbook_severity(replace(runbook, severities=()), None).ok


def directory(handler) -> HttpIncidentDirectory:
    client = httpx.Client(transport=httpx.MockTransport(handler))
    return HttpIncidentDirectory("http://incidents.test/api/", open_statuses=["open", "Active"],
                                 client=client)


@pytest.mark.parametrize(("code", "body", "status", "detail"), [
    (200, {"status": "open", "severity": "SEV2"}, IncidentStatus.OPEN, "open"),
    (200, {"status": "ACTIVE"}, IncidentStatus.OPEN, "ACTIVE"),
    (200, {"status": "resolved"}, IncidentStatus.CLOSED, "resolved"),
    (404, {"error": "no such incident"}, IncidentStatus.UNKNOWN, ""),
    (503, {"status": "open"}, IncidentStatus.UNAVAILABLE, "HTTP 503 from http://incidents.test/api"),
    (200, {"state": "open"}, IncidentStatus.UNAVAILABLE, 'the answer has no "status" field'),
    (200, ["open"], IncidentStatus.UNAVAILABLE, 'the answer has no "status" field'),
])
def test_the_http_directory_reads_the_documented_shape(code, body, status, detail):
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(code, json=body)

    found = directory(handler).lookup("SEV-1234/../x")
    assert (found.status, found.detail) == (status, detail)
    assert seen == ["http://incidents.test/api/SEV-1234%2F..%2Fx"]
    if code == 200 and status is IncidentStatus.OPEN and "severity" in body:
        assert found.severity == "SEV2"


def test_a_silent_or_garbled_incident_system_is_unavailable():
    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("too slow", request=request)

    assert directory(timeout).lookup("SEV-1").status is IncidentStatus.UNAVAILABLE

    def garbled(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"<html>maintenance</html>")

    found = directory(garbled).lookup("SEV-1")
    assert found.status is IncidentStatus.UNAVAILABLE
