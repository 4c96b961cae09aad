"""Workload overrides as pure decisions, and the catalog rules that keep them narrow."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from breakglass.catalog.loader import LoadedCatalog, load_catalog, parse_catalog
from breakglass.connectors.base import Connector
from breakglass.connectors.postgres_override import Privilege
from breakglass.domain import policy as rules
from breakglass.domain.errors import CatalogError
from breakglass.domain.model import Principal, PrincipalKind, Zone
from tests.fakes import FakeClock

CATALOG = Path(__file__).parent.parent / "fixtures" / "catalog_workloads.yaml"
ENV = {"TEST_TARGET_DSN": "postgresql://x@127.0.0.1:1/db", "TEST_SERVICE_ACCOUNT": "emb_svc"}


@pytest.fixture
def wl() -> LoadedCatalog:
    return load_catalog(CATALOG, env=ENV)


def robot(name: str = "embeddings-pipeline",
          subject: str = "system:serviceaccount:ml:embeddings") -> Principal:
    return Principal(name, PrincipalKind.WORKLOAD, frozenset(), False, None,
                     issuer="https://k8s.test", subject=subject)


def plan(loaded: LoadedCatalog, who: Principal, roles: list[str], clock: FakeClock,
         workload: str | None) -> rules.RequestPlan | rules.Denied:
    target = rules.workload_for(loaded.policy, who, workload)
    assert not isinstance(target, rules.Denied)
    return rules.plan_request(loaded.policy, who, roles, "SEV-1234", "recovery", None,
                              clock.now(), workload=target)


def rule_of(result: object) -> str:
    assert isinstance(result, rules.Denied), f"expected a refusal, got {result!r}"
    return result.rule


def test_a_workload_token_implies_its_own_workload(wl):
    found = rules.workload_for(wl.policy, robot(), None)
    assert not isinstance(found, rules.Denied)
    assert found is not None
    assert (found.name, found.account, found.target) == (
        "embeddings-pipeline", "emb_svc", "embeddings-db")


def test_a_human_names_the_workload_and_unknown_ones_are_refused(wl, people):
    assert rules.workload_for(wl.policy, people["uma"], None) is None
    assert rule_of(rules.workload_for(wl.policy, people["uma"], "nope")) == "workload.unknown"


def test_the_workload_itself_gets_an_override_with_the_usual_zone_and_ttl(wl, clock):
    result = plan(wl, robot(), ["embeddings-append"], clock, None)
    assert isinstance(result, rules.RequestPlan)
    assert result.zone is Zone.B
    assert result.ttl.total_seconds() == 20 * 60


def test_a_responder_may_request_for_the_workload(wl, people, clock):
    assert isinstance(plan(wl, people["uma"], ["embeddings-append"], clock,
                           "embeddings-pipeline"), rules.RequestPlan)


def test_a_human_not_listed_by_the_workload_is_refused(wl, people, clock):
    # vera may request none of the roles; ugo may, but the workload must list him too
    result = plan(wl, people["vera"], ["embeddings-read"], clock, "embeddings-pipeline")
    assert rule_of(result) == "role.requesters"
    narrow = replace(wl.policy.workloads["embeddings-pipeline"], requesters=("user:uma",))
    result = rules.plan_request(wl.policy, people["ugo"], ["embeddings-read"], "SEV-1234",
                                "recovery", None, clock.now(), workload=narrow)
    assert rule_of(result) == "workload.requesters"


def test_a_role_outside_the_workloads_list_is_refused(wl, people, clock):
    result = plan(wl, people["uma"], ["embeddings-repair"], clock, "embeddings-pipeline")
    assert rule_of(result) == "workload.roles"


def test_a_workload_cannot_request_for_another(wl):
    other = robot("someone-else")
    target = wl.policy.workloads["embeddings-pipeline"]
    role = wl.policy.roles["embeddings-read"]
    assert rule_of(rules.check_requester(other, (role,), target)) == "role.requesters"
    open_role = replace(role, requesters=("user:someone-else",))
    assert rule_of(rules.check_requester(other, (open_role,), target)) == "workload.not_self"


def test_a_workload_never_gets_a_login_of_its_own(wl, clock):
    result = rules.plan_request(wl.policy, robot(), ["embeddings-read"], "SEV-1234",
                                "recovery", None, clock.now(), workload=None)
    assert rule_of(result) == "workload.required"


def _catalog_with(extra_roles: str = "", workloads: str = "", targets: str = "",
                  incident: str = "", runbooks: str = "") -> str:
    return f"""
version: 1
organization: t
incident: {{id_pattern: '^INC-[0-9]+$'{incident}}}
zones:
  A: {{default_ttl: 5m, max_ttl: 10m, approvals: 0, self_approval: true}}
  B: {{default_ttl: 5m, max_ttl: 10m, approvals: 1}}
  C: {{default_ttl: 5m, max_ttl: 10m, approvals: 2}}
targets:
  db: {{type: postgres, dsn: "postgresql://x@h/db"}}
  cache: {{type: redis, url: "redis://h:6379/0"}}
{targets}
roles:
  db-read: {{zone: A, target: db, requesters: [group:oncall],
            grant: {{privileges: [SELECT], tables: [app.t]}}}}
  cache-read: {{zone: A, target: cache, requesters: [group:oncall],
               grant: {{keys: ["a:*"], commands: ["+get"]}}}}
{extra_roles}
workloads: {"" if workloads.strip() else "{}"}
{workloads}
runbooks: {"" if runbooks.strip() else "{}"}
{runbooks}
"""


def errors_of(text: str) -> list[str]:
    with pytest.raises(CatalogError) as err:
        parse_catalog(text, "catalog.yaml", {})
    return err.value.errors


def test_a_workload_on_a_target_that_cannot_override_is_refused():
    errors = errors_of(_catalog_with(workloads="""
  cacher: {subject: s, target: cache, account: cache_svc}"""))
    assert errors == ["workloads.cacher.target: target type 'redis' cannot do workload overrides"]


def test_an_override_that_would_make_the_account_superuser_is_refused():
    errors = errors_of(_catalog_with(
        extra_roles="""  db-owner: {zone: C, target: db, requesters: [group:oncall],
              grant: {privileges: [SELECT], tables: [app.t], superuser: true,
                      createrole: true}}""",
        workloads="""  pipeline: {subject: s, target: db, account: pipeline_svc}"""))
    assert ("workloads.pipeline: role 'db-owner' would give the account CREATEROLE, "
            "SUPERUSER; an override only adds privileges, never identity attributes") in errors


def test_workload_roles_must_exist_and_be_on_its_target():
    errors = errors_of(_catalog_with(workloads="""
  pipeline: {subject: s, target: db, account: pipeline_svc, roles: [nope, cache-read]}"""))
    assert "workloads.pipeline.roles: unknown role 'nope'" in errors
    assert ("workloads.pipeline.roles: 'cache-read' is on target 'cache', not 'db'") in errors


def test_a_workload_account_cannot_be_a_broker_role():
    errors = errors_of(_catalog_with(workloads="""
  pipeline: {subject: s, target: db, account: bg_sneaky}"""))
    assert errors == ["workloads.pipeline.account: 'bg_' names are the broker's own roles"]


def test_a_runbook_with_severities_needs_the_incident_system():
    errors = errors_of(_catalog_with(runbooks="""
  RB-1: {title: t, roles: [db-read], severity: [SEV1]}"""))
    assert errors == ["runbooks.RB-1.severity: needs incident.verify_url (the severity comes "
                      "from the incident system)"]
    ok = parse_catalog(_catalog_with(runbooks="""
  RB-1: {title: t, roles: [db-read], severity: [SEV1]}""",
                                     incident=", verify_url: 'http://incidents.test/api'"),
                       "catalog.yaml", {})
    assert ok.policy.runbooks["RB-1"].severities == ("SEV1",)


@pytest.mark.parametrize("grant", [
    {"privileges": ["SELECT"], "tables": ["a.b"], "attributes": ["SUPERUSER"]},
    {"privileges": ["SELECT"], "member_of": ["pg_write_all_data"]},
    {"privileges": ["SELECT", "with grant option"]},
])
def test_identity_attributes_are_refused_whatever_the_connector(grant):
    assert Connector.validate_override(grant)


def test_plain_privileges_are_a_valid_override():
    assert Connector.validate_override({"privileges": ["SELECT", "INSERT"],
                                        "tables": ["app.users"]}) == []


def test_recorded_privileges_read_back_only_as_known_words():
    good = Privilege("svc", "vectors", "items", "INSERT")
    assert Privilege.decode(good.encode()) == good
    assert str(good) == "INSERT ON vectors.items"
    forged = good.encode().replace('"INSERT"', '"INSERT ON x TO y; DROP ROLE z; --"')
    assert Privilege.decode(forged) is None
    assert Privilege.decode("not json") is None
