"""Policy invariants: one bad catalog per rule, refused by ``lint`` and by ``serve`` alike.

Each case edits one spot of a clean catalog (``tests/fixtures/lint/clean.yaml``) the way
someone loosening the policy would, and asserts the exact rule ID, the YAML line of
the offending node and the exit code of ``breakglass lint``; then that bootstrapping
a broker on the same file (what ``serve`` does first) refuses with the same rule ID.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from breakglass.bootstrap import bootstrap
from breakglass.catalog import structure
from breakglass.catalog.loader import analyse_catalog, parse_catalog
from breakglass.catalog.rules import RULES
from breakglass.cli.lint import lint_catalog
from breakglass.domain.errors import CatalogError
from breakglass.settings import Settings
from tests.fakes import MemoryConnector

CLEAN = Path(__file__).parent.parent / "fixtures" / "lint" / "clean.yaml"
C_BLOCK = "    approvals: 2\n    approvers_outside_team: true\n    extension_approvals: 2"
B_BLOCK = "    approvals: 1\n    approvers_outside_team: true"


@dataclass(frozen=True)
class Case:
    rule: str
    old: str
    new: str
    at: str  # the offending node's line: first line holding this text, from the edit on
    exit: int = 1
    from_top: bool = False  # search ``at`` from the file's start instead


# fmt: off
CASES = {
    "zone C one approval": Case("zone.c.approvals", C_BLOCK,
                                C_BLOCK.replace("approvals: 2\n", "approvals: 1\n", 1),
                                "approvals: 1"),
    "zone C approvers in the team": Case(
        "zone.c.outside_team", C_BLOCK, C_BLOCK.replace("team: true", "team: false"),
        "approvers_outside_team"),
    "zone C without MFA": Case("zone.c.mfa", C_BLOCK, C_BLOCK + "\n    require_mfa: false",
                               "require_mfa"),
    "zone C self-approval": Case(
        "zone.c.self_approval", C_BLOCK,
        "    approvals: 0\n    self_approval: true\n    extension_approvals: 2", "self_approval"),
    "zone C two hours": Case("zone.c.max_ttl", "    default_ttl: 10m\n    max_ttl: 15m",
                             "    default_ttl: 10m\n    max_ttl: 2h", "max_ttl"),
    "zone C 30 minutes (warning)": Case(
        "zone.c.max_ttl_long", "    default_ttl: 10m\n    max_ttl: 15m",
        "    default_ttl: 10m\n    max_ttl: 30m", "max_ttl", exit=0),
    "zone C single-approval extensions": Case(
        "zone.c.extension_approvals", C_BLOCK, C_BLOCK.replace("extension_approvals: 2",
                                                               "extension_approvals: 1"),
        "extension_approvals"),
    "zone B approvers in the team": Case(
        "zone.b.outside_team", B_BLOCK, B_BLOCK.replace("true", "false"),
        "approvers_outside_team"),
    "zone B without MFA": Case("zone.b.mfa", B_BLOCK, B_BLOCK + "\n    require_mfa: false",
                               "require_mfa"),
    "zone B self-approval (warning)": Case(
        "zone.b.self_approval", B_BLOCK, "    approvals: 0\n    self_approval: true",
        "self_approval", exit=0),
    "approvals 0 without self-approval": Case("zone.approvals_zero", B_BLOCK,
                                              B_BLOCK.replace("1", "0"), "approvals: 0"),
    "zone A a day long": Case("zone.ttl_ceiling", "    default_ttl: 30m\n    max_ttl: 60m",
                              "    default_ttl: 30m\n    max_ttl: 24h", "max_ttl"),
    "zone B missing": Case("zone.missing", "  B:\n" + "    default_ttl: 20m\n    max_ttl: 30m\n"
                           + B_BLOCK + "\n", "", "zones:", from_top=True),
    "zone C without approver list (warning)": Case(
        "zone.approvers_missing", "  C: [group:approvers]\n", "", "  C:\n    default_ttl",
        exit=0, from_top=True),
    "role loosens its zone's TTL": Case(
        "role.max_ttl", "    grant: {privileges: [SELECT], tables: [\"app.*\"]}",
        "    max_ttl: 2h\n    grant: {privileges: [SELECT], tables: [\"app.*\"]}", "max_ttl"),
    "zone A postgres DELETE": Case("role.zone_ceiling", "privileges: [SELECT], tables: [\"app",
                                   "privileges: [SELECT, DELETE], tables: [\"app", "privileges"),
    "zone A redis writes": Case("role.zone_ceiling", "commands: [\"+@read\"]",
                                "commands: [\"+@read\", \"+set\"]", "commands"),
    "zone A aws s3:*": Case("role.zone_ceiling", "actions: [s3:GetObject, s3:ListBucket]",
                            "actions: [\"s3:*\"]", "actions"),
    "zone A aws minting a token": Case(
        "role.zone_ceiling", "actions: [s3:GetObject, s3:ListBucket]",
        "actions: [s3:GetObject, \"ecr:Get*\"]", "actions"),
    "zone A ssh shell": Case("role.zone_ceiling", "principals: [ops], force_command: uptime",
                             "principals: [ops]", "principals"),
    "zone A ssh pty": Case("role.zone_ceiling", "principals: [ops], force_command: uptime",
                           "principals: [ops], force_command: uptime, pty: true", "principals"),
    "grant the connector refuses": Case("role.grant", "privileges: [SELECT], tables",
                                        "privileges: [SELEKT], tables", "privileges"),
    "identity changes outside zone C": Case(
        "role.dangerous", "resources: [\"*\"]}", "resources: [\"*\"], "
        "allow_identity_changes: true}", "resources"),
    "role on an unknown target": Case("role.target", "    target: cache\n",
                                      "    target: nowhere\n", "target: nowhere"),
    "zone C approver in the requester team": Case(
        "role.approvers", "dave: {groups: [team:data,", "dave: {groups: [team:platform,",
        "requesters: [group:oncall]\n    grant: {privileges: [SELECT, TRUNCATE]",
        from_top=True),
    "zone C approver without MFA": Case(
        "role.approvers", "carol: {groups: [team:security, approvers], mfa: true}",
        "carol: {groups: [team:security, approvers], mfa: false}",
        "requesters: [group:oncall]\n    grant: {privileges: [SELECT, TRUNCATE]",
        from_top=True),
    "runbook covers zone C": Case("runbook.zone_c", "roles: [db-read]",
                                  "roles: [db-read, db-write]", "db-write"),
    "runbook names an unknown role": Case("runbook.role", "roles: [db-read]",
                                          "roles: [db-read, db-nope]", "db-nope"),
    "runbook auto-approves non-requesters": Case(
        "runbook.requesters", "requesters: [group:oncall]}", "requesters: [group:approvers]}",
        "group:approvers]}"),
    "runbook unknown reason": Case("runbook.reason_code", "reason_codes: [recovery]",
                                   "reason_codes: [sabotage]", "sabotage"),
    "shared account in the directory": Case(
        "identity.shared_account", "directory:\n", "directory:\n  ops-shared: {groups: "
        "[approvers, team:ops], mfa: true}\n", "ops-shared"),
    "shared account approves": Case("identity.shared_account", "  C: [group:approvers]",
                                    "  C: [group:approvers, ops-shared]", "ops-shared"),
    "two spellings of one person": Case(
        "identity.name_spelling", "  bob: {", "  Alice: {groups: [oncall]}\n  bob: {",
        "directory:", from_top=True),
    "unknown connector": Case("target.type", "{type: aws,", "{type: mainframe,", "type: mainframe"),
    "schema: misspelt field": Case("catalog.schema", "    self_approval: true",
                                   "    self_approval: true\n    aprovals: 3", "aprovals"),
    "duplicate key": Case("yaml.syntax", "  bob: {", "  alice: {groups: [oncall]}\n  bob: {",
                          "  alice: {groups: [oncall]}"),
    "workload names an unknown role": Case(
        "workload.roles", "runbooks:\n", "workloads:\n  pipe: {subject: s, target: db, "
        "account: pipeline_svc, roles: [nope]}\nrunbooks:\n", "pipe:"),
}
# fmt: on


def bad_catalog(case: Case, tmp_path: Path) -> tuple[Path, int]:
    """The edited catalog and the 1-based line ``case.at`` names."""
    text = CLEAN.read_text()
    assert text.count(case.old) == 1, case.old
    start = text.index(case.old)
    edited = text[:start] + case.new + text[start + len(case.old):]
    found = edited.index(case.at, 0 if case.from_top else start)
    path = tmp_path / "catalog.yaml"
    path.write_text(edited)
    return path, edited.count("\n", 0, found) + 1


def lint_json(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[dict]]:
    code = lint_catalog(path, "json")
    return code, json.loads(capsys.readouterr().out)["findings"]


def test_the_clean_catalog_lints_clean(capsys):
    code, findings = lint_json(CLEAN, capsys)
    assert (code, findings) == (0, [])


@pytest.mark.parametrize("name", CASES)
def test_lint_names_the_rule_the_line_and_the_exit_code(name, tmp_path, capsys):
    case = CASES[name]
    path, line = bad_catalog(case, tmp_path)
    code, findings = lint_json(path, capsys)
    hits = [f for f in findings if f["rule"] == case.rule]
    assert hits, findings
    assert hits[0]["line"] == line, hits
    assert hits[0]["severity"] == RULES[case.rule].level
    assert code == case.exit
    assert all(f["rule"] in RULES for f in findings)


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c.exit == 1])
def test_serve_refuses_the_same_catalogs_with_the_same_rules(name, tmp_path, capsys):
    path, _ = bad_catalog(CASES[name], tmp_path)
    db = tmp_path / "state" / "broker.db"
    settings = Settings(catalog=path, db_url=f"sqlite:///{db}", dev=True,
                        state_dir=tmp_path / "state", anchor_in_state_dir=True)
    with pytest.raises(CatalogError) as refused:
        bootstrap(settings)
    assert CASES[name].rule in refused.value.rules
    assert f"[{CASES[name].rule}]" in str(refused.value)  # every violation named
    assert not db.exists()  # refused before anything was created
    lint_catalog(path, "json")
    linted = {f["rule"] for f in json.loads(capsys.readouterr().out)["findings"]
              if f["severity"] == "error"}
    assert set(refused.value.rules) == linted


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c.exit == 0])
def test_warnings_load_and_are_kept_for_the_log(name, tmp_path):
    path, _ = bad_catalog(CASES[name], tmp_path)
    loaded = parse_catalog(path.read_text(), str(path), {})
    assert CASES[name].rule in {w.rule for w in loaded.warnings}


def test_every_rule_reported_is_registered_with_its_level():
    for case in CASES.values():
        assert case.rule in RULES
    reported = {case.rule for case in CASES.values()}
    # every invariant of the issue has a bad catalog above
    assert {"zone.c.approvals", "zone.c.outside_team", "zone.c.mfa", "zone.c.self_approval",
            "zone.c.max_ttl", "zone.c.max_ttl_long", "zone.c.extension_approvals",
            "zone.b.outside_team", "zone.b.mfa", "zone.b.self_approval", "zone.approvals_zero",
            "zone.ttl_ceiling", "role.max_ttl", "role.zone_ceiling", "role.approvers",
            "runbook.zone_c", "runbook.requesters", "identity.shared_account"} <= reported


def test_the_ttl_ceiling_is_a_parameter():
    text = CLEAN.read_text()
    rules = {f.rule for f in analyse_catalog(text, {}, ttl_ceiling=timedelta(minutes=45)).findings}
    assert "zone.ttl_ceiling" in rules


def test_every_rule_is_documented_with_an_example():
    docs = (Path(__file__).parent.parent.parent / "docs" / "catalog.md").read_text()
    assert [r for r in RULES if f"| `{r}` |" not in docs] == []


def test_a_connector_that_never_says_what_read_only_means_gets_no_zone_a_roles(monkeypatch):
    """Fail safe: a third-party connector without ``validate_for_zone`` claims nothing."""
    class Silent(MemoryConnector):
        pass

    class Careful(MemoryConnector):
        @classmethod
        def validate_for_zone(cls, grant, zone):
            return []

    text = CLEAN.read_text().replace("{type: aws,", "{type: thirdparty,")
    for cls, refused in ((Silent, True), (Careful, False)):
        real = structure.connector_class
        monkeypatch.setattr(structure, "connector_class",
                            lambda t, cls=cls, real=real: cls if t == "thirdparty" else real(t))
        found = [f for f in analyse_catalog(text, {}).findings if f.rule == "role.zone_ceiling"]
        assert bool(found) is refused, found
        if refused:
            assert found[0].path == ("roles", "cloud-read", "zone")


def test_serve_starts_on_warnings_and_logs_each_one(tmp_path):
    case = CASES["zone C 30 minutes (warning)"]
    path, _ = bad_catalog(case, tmp_path)
    settings = Settings(catalog=path, db_url=f"sqlite:///{tmp_path / 'state' / 'b.db'}",
                        dev=True, state_dir=tmp_path / "state", anchor_in_state_dir=True)
    with capture_logs() as logs:
        container = bootstrap(settings)
    container.engine.dispose()
    warned = [e for e in logs if e["event"] == "catalog warning"]
    assert [(e["rule"], e["path"]) for e in warned] == [("zone.c.max_ttl_long",
                                                         "zones.C.max_ttl")]
