"""People are subjects, played against the real HTTP server with signed tokens.

The broker trusts an issuer the test controls (no ``--dev``), so the test signs
tokens whose ``sub`` and ``preferred_username`` it chooses: the attacks an
identity provider lets a user make by renaming themselves, or by taking a
username somebody else had.
"""

# ruff: noqa: RUF001 - full-width letters are the attack under test

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.e2e.oidc_fixtures import FIXTURES, Broker, JsonServer, running_broker
from tests.e2e.test_token_attacks_http import Forge
from tests.unit.test_token_attacks import Keys

CATALOG = FIXTURES / "catalog_subjects.yaml"
UNUSED_TARGET_DSN = "postgresql://nobody@127.0.0.1:9/never_contacted"  # nothing activates
ONCALL = ["team:platform", "oncall"]
APPROVER = ["team:security", "approvers"]
OTHER_APPROVER = ["team:data", "approvers"]


@dataclass
class People:
    broker: Broker
    forge: Forge
    http: httpx.Client

    def token(self, sub: str, name: str, groups: list[str]) -> str:
        return self.forge.token(payload=self.forge.claims(sub=sub, preferred_username=name,
                                                          groups=groups))

    def call(self, token: str, method: str, path: str,
             body: dict[str, Any] | None = None) -> httpx.Response:
        response = self.http.request(method, self.broker.url + path, json=body,
                                     headers={"Authorization": f"Bearer {token}"})
        assert response.status_code < 500, (response.status_code, response.text)
        return response

    def refused(self, rule: str, token: str, method: str, path: str,
                body: dict[str, Any] | None = None) -> None:
        response = self.call(token, method, path, body)
        assert response.status_code in (403, 409), (response.status_code, response.text)
        assert response.json()["rule"] == rule, response.json()

    def new_request(self, token: str, role: str, incident: str) -> str:
        response = self.call(token, "POST", "/v1/requests", {
            "roles": [role], "incident": incident, "reason": "recovery",
            "justification": "queue stuck"})
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def request(self, token: str, request_id: str) -> dict[str, Any]:
        response = self.call(token, "GET", f"/v1/requests/{request_id}")
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found

    def payloads(self, action: str) -> list[tuple[str, str]]:
        """``(actor, payload JSON)`` of the audit events with this action."""
        with closing(sqlite3.connect(f"file:{self.broker.db}?mode=ro", uri=True,
                                     timeout=10)) as conn:
            rows = conn.execute("SELECT actor, payload FROM events WHERE action = ?"
                                " ORDER BY idx", (action,)).fetchall()
        return [(str(a), str(p)) for a, p in rows]


@pytest.fixture(scope="module")
def people(tmp_path_factory: pytest.TempPathFactory) -> Iterator[People]:
    keys = Keys()
    with JsonServer() as issuer:
        issuer.routes.update({
            "/.well-known/openid-configuration": {
                "issuer": issuer.url, "jwks_uri": issuer.url + "/jwks",
                "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"]},
            "/jwks": keys.jwks(),
        })
        env = {"FORGE_ISSUER": issuer.url, "FORGE_TARGET_DSN": UNUSED_TARGET_DSN}
        state = tmp_path_factory.mktemp("subjects-broker")
        with running_broker(CATALOG, state, env) as broker, httpx.Client(timeout=30) as http:
            yield People(broker, Forge(issuer.url, keys), http)


def test_one_sub_under_a_second_username_cannot_approve_its_own_request(people):
    alice = people.token("sub-alice", "alice", ONCALL)
    rid = people.new_request(alice, "pipeline-restart", "INC-101")
    for name in ("alice-approver", "Alice", "ａｌｉｃｅ"):
        renamed = people.token("sub-alice", name, APPROVER)
        people.refused("approval.self", renamed, "POST", f"/v1/requests/{rid}/approvals", {})
    assert people.request(alice, rid)["state"] == "pending"
    assert people.request(alice, rid)["approvals"] == []


def test_a_second_approval_by_one_sub_is_a_duplicate(people):
    alice = people.token("sub-alice", "alice", ONCALL)
    rid = people.new_request(alice, "pipeline-repair", "INC-102")
    carol = people.token("sub-carol", "carol", APPROVER)
    assert people.call(carol, "POST", f"/v1/requests/{rid}/approvals", {}).status_code == 200
    carol_renamed = people.token("sub-carol", "carol.new", OTHER_APPROVER)
    people.refused("approval.duplicate", carol_renamed, "POST",
                   f"/v1/requests/{rid}/approvals", {})
    seen = people.request(alice, rid)
    assert seen["state"] == "pending"
    assert [a["approver"] for a in seen["approvals"]] == ["carol"]
    refusals = [a for a, p in people.payloads("request:approval:refused")
                if "sub-carol" in p]
    assert refusals == ["carol.new"]  # the audit log names the person by subject


def test_a_second_sub_under_the_requesters_username_gets_nothing(people):
    alice = people.token("sub-alice", "alice", ONCALL)
    rid = people.new_request(alice, "pipeline-restart", "INC-103")
    for name in ("alice", "ALICE", "alice "):
        impostor = people.token("sub-mallory", name, [*ONCALL, "approvers"])
        people.refused("credentials.requester_only", impostor, "POST",
                       f"/v1/requests/{rid}/credentials")
        people.refused("cancel.requester_only", impostor, "POST",
                       f"/v1/requests/{rid}/cancellation", {})
        mine = people.call(impostor, "GET", "/v1/requests?mine=true").json()
        assert rid not in [r["id"] for r in mine]
    # the real requester is past the requester check (nothing is active yet) and may cancel
    people.refused("lifecycle.not_active", alice, "POST", f"/v1/requests/{rid}/credentials")
    assert rid in [r["id"] for r in people.call(alice, "GET", "/v1/requests?mine=true").json()]
    response = people.call(alice, "POST", f"/v1/requests/{rid}/cancellation", {})
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "cancelled"


@pytest.mark.parametrize(("sub", "name"), [
    ("sub-x1", "admin "), ("sub-x2", "Admin"), ("sub-x3", "ａｄｍｉｎ"), ("sub-x4", "ad\u200bmin"),
    ("ADMIN", "someone-new"),
])
def test_the_shared_account_is_refused_in_any_spelling(people, sub, name):
    token = people.token(sub, name, ONCALL)
    people.refused("identity.shared_account", token, "POST", "/v1/requests", {
        "roles": ["pipeline-restart"], "incident": "INC-104", "reason": "recovery"})
