# ruff: noqa: RUF001 - full-width letters are the attack under test
"""A person is a subject (issuer + sub); names are compared only in one normalised form.

Every test plays the attacker: a second username on one ``sub``, a second ``sub``
under one username, a shared account spelled another way, a catalog listing one
person twice.
"""

from __future__ import annotations

import importlib
from datetime import timedelta
from pathlib import Path

import pytest

from breakglass.catalog.loader import LoadedCatalog, parse_catalog
from breakglass.domain import extensions as ext_rules
from breakglass.domain import policy as rules
from breakglass.domain.errors import CatalogError
from breakglass.domain.model import AccessRequest, Approval, Principal, RequestState
from breakglass.domain.names import (
    LEGACY_ISSUER,
    duplicate_spellings,
    legacy_key,
    legacy_name,
    normalise_name,
    same_subject,
    subject_key,
)
from breakglass.identity.devissuer import DevIssuer, dev_subject
from tests.fakes import FakeClock, human

CATALOG = Path(__file__).parent.parent / "fixtures" / "catalog.yaml"
ENV = {"TEST_TARGET_DSN": "postgresql://x@127.0.0.1:1/db"}
SHARED_SPELLINGS = ["ops", "ops ", " OPS", "Ops", "ｏｐｓ", "ＯＰＳ", "o\u200bps", "\u00adops\t"]


def request_by(who: Principal, roles: list[str], loaded: LoadedCatalog, clock: FakeClock,
               state: RequestState = RequestState.PENDING) -> AccessRequest:
    plan = rules.plan_request(loaded.policy, who, roles, "SEV-1234", "recovery", None,
                              clock.now())
    assert isinstance(plan, rules.RequestPlan), plan
    return AccessRequest(
        id="r-1", requester=who.name, requester_subject=who.subject_id, requester_kind=who.kind,
        requester_teams=who.teams, roles=tuple(r.name for r in plan.roles), zone=plan.zone,
        environment=plan.environment, incident="SEV-1234", reason="recovery",
        justification="", ttl=plan.ttl, created_at=clock.now(),
        pending_until=clock.now() + timedelta(hours=1), state=state,
        activated_at=clock.now() if state is RequestState.ACTIVE else None,
        expires_at=clock.now() + plan.ttl if state is RequestState.ACTIVE else None,
    )


def approval_of(who: Principal, clock: FakeClock) -> Approval:
    return Approval(who.name, who.teams, who.mfa, clock.now(), approver_subject=who.subject_id)


def rule_of(result: object) -> str:
    assert isinstance(result, rules.Denied), f"expected a refusal, got {result!r}"
    return result.rule


# --- normalisation ---------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["admin", "admin ", " Admin", "ADMIN", "ａｄｍｉｎ",
                                      "ＡＤＭＩＮ", "ad\u200bmin", "\u200eadmin", "adm\u00adin"])
def test_every_spelling_of_admin_is_admin(spelling: str) -> None:
    assert normalise_name(spelling) == "admin"


def test_different_names_stay_different() -> None:
    assert normalise_name("alice") != normalise_name("alice2")
    assert normalise_name("a lice") != normalise_name("alice")
    assert normalise_name("straße") == normalise_name("STRASSE")  # full case folding


def test_a_subject_key_is_injective_in_issuer_and_sub() -> None:
    assert subject_key("https://a", "b#c") != subject_key("https://a#b", "c")
    assert subject_key("https://a%23", "x") != subject_key("https://a#", "x")
    assert subject_key("https://idp", "u-1") != subject_key("https://other", "u-1")
    assert legacy_name(subject_key("https://a#b", "c")) is None


def test_legacy_keys_are_one_person_by_normalised_name_only() -> None:
    assert legacy_key("alice").startswith(LEGACY_ISSUER)
    assert legacy_name(legacy_key("Alice")) == "Alice"
    assert same_subject(legacy_key("Alice"), legacy_key("alice "))
    assert not same_subject(legacy_key("alice"), subject_key("https://idp", "alice"))


def test_migration_backfill_prefix_is_the_legacy_key() -> None:
    migration = importlib.import_module("breakglass.migrations.versions.0008_subjects")
    assert legacy_key("bob") == migration.LEGACY_PREFIX + "bob"


def test_duplicate_spellings_name_both() -> None:
    assert duplicate_spellings(["Alice", "bob", "alice", "alice"]) == [("Alice", "alice")]
    assert duplicate_spellings(["admin", "ａｄｍｉｎ"]) == [("admin", "ａｄｍｉｎ")]


# --- same-person rules -----------------------------------------------------------------------


def test_one_sub_under_a_second_username_cannot_approve_its_own_request(loaded, clock):
    uma = human("uma", "team:ml-serving", "responders", clock=clock, subject="u-1")
    alias = human("totally-not-uma", "team:sre", "reviewers", clock=clock, subject="u-1")
    req = request_by(uma, ["embeddings-requeue"], loaded, clock)
    assert rule_of(rules.check_approval(loaded.policy, req, alias, clock.now())) == (
        "approval.self")


def test_a_second_approval_by_the_same_sub_is_a_duplicate_and_never_counts(loaded, clock):
    uma = human("uma", "team:ml-serving", "responders", clock=clock, subject="u-1")
    vera = human("vera", "team:sre", "reviewers", clock=clock, subject="v-1")
    vera_again = human("vera.renamed", "team:data-eng", "reviewers", clock=clock,
                       subject="v-1")
    req = request_by(uma, ["embeddings-repair"], loaded, clock)
    req.approvals.append(approval_of(vera, clock))
    assert rule_of(rules.check_approval(loaded.policy, req, vera_again, clock.now())) == (
        "approval.duplicate")
    req.approvals.append(approval_of(vera_again, clock))  # as if it slipped in
    assert not rules.approvals_satisfied(loaded.policy, req)


def test_two_subs_with_one_username_are_two_approvers(loaded, clock):
    uma = human("uma", "team:ml-serving", "responders", clock=clock, subject="u-1")
    vera = human("vera", "team:sre", "reviewers", clock=clock, subject="v-1")
    other_vera = human("Vera", "team:data-eng", "reviewers", clock=clock, subject="v-2")
    req = request_by(uma, ["embeddings-repair"], loaded, clock)
    req.approvals.append(approval_of(vera, clock))
    assert isinstance(rules.check_approval(loaded.policy, req, other_vera, clock.now()),
                      rules.Allowed)
    req.approvals.append(approval_of(other_vera, clock))
    assert rules.approvals_satisfied(loaded.policy, req)


def test_the_requesters_approval_never_counts_under_another_name(loaded, clock):
    uma = human("uma", "team:ml-serving", "responders", clock=clock, subject="u-1")
    vera = human("vera", "team:sre", "reviewers", clock=clock, subject="v-1")
    req = request_by(uma, ["embeddings-repair"], loaded, clock)
    req.approvals += [approval_of(vera, clock),
                      Approval("someone", frozenset(), True, clock.now(),
                               approver_subject=uma.subject_id)]
    assert not rules.approvals_satisfied(loaded.policy, req)


def test_a_username_does_not_make_you_the_requester(loaded, clock):
    uma = human("uma", "team:ml-serving", "responders", clock=clock, subject="u-1")
    impostor = human("uma", "team:ml-serving", "responders", clock=clock, subject="u-666")
    req = request_by(uma, ["embeddings-read"], loaded, clock, RequestState.ACTIVE)
    assert req.requested_by(uma)
    assert not req.requested_by(impostor)
    assert not req.requested_by(human("UMA ", clock=clock, subject="u-666"))
    assert rule_of(ext_rules.plan_extension(loaded.policy, req, impostor, timedelta(minutes=5),
                                            clock.now(), pending=False)) == (
        "extension.requester_only")
    assert isinstance(ext_rules.plan_extension(loaded.policy, req, uma, timedelta(minutes=5),
                                               clock.now(), pending=False),
                      ext_rules.ExtensionPlan)
    assert not rules.may_revoke(loaded.policy, impostor, req)
    assert rules.may_revoke(loaded.policy, uma, req)


def test_a_legacy_request_grants_nothing_but_still_refuses_its_name(loaded, clock):
    """Rows older than subjects: nobody new is their requester; their name cannot approve."""
    uma = human("uma", "team:ml-serving", "responders", clock=clock, subject="u-1")
    req = request_by(uma, ["embeddings-requeue"], loaded, clock)
    req.requester_subject = ""  # as backfilled: legacy key of the display name
    assert req.requester_id == legacy_key("uma")
    assert not req.requested_by(uma)
    uma_as_reviewer = human("Uma", "team:sre", "reviewers", clock=clock, subject="u-1")
    assert rule_of(rules.check_approval(loaded.policy, req, uma_as_reviewer, clock.now())) == (
        "approval.self")
    req.approvals.append(Approval("vera", frozenset({"sre"}), True, clock.now()))
    vera = human("VERA", "team:data-eng", "reviewers", clock=clock, subject="v-1")
    assert rule_of(rules.check_approval(loaded.policy, req, vera, clock.now())) == (
        "approval.duplicate")


@pytest.mark.parametrize("spelling", SHARED_SPELLINGS)
def test_the_shared_account_is_refused_in_any_spelling(loaded, clock, spelling):
    who = human(spelling, "team:ml-serving", "responders", clock=clock)
    assert rule_of(rules.plan_request(loaded.policy, who, ["embeddings-read"], "SEV-1234",
                                      "recovery", None, clock.now())) == (
        "identity.shared_account")


@pytest.mark.parametrize("spelling", ["ops", "OPS", "ｏｐｓ"])
def test_a_shared_account_is_refused_by_its_sub_under_any_display_name(loaded, clock, spelling):
    who = human("uma", "team:ml-serving", "responders", clock=clock, subject=spelling)
    assert rule_of(rules.check_identity(loaded.policy, who, clock.now(), loaded.policy.roles[
        "embeddings-read"].zone)) == "identity.shared_account"


def test_a_blank_display_name_is_refused(loaded, clock):
    who = human("\u200b ", "team:ml-serving", "responders", clock=clock)
    assert rule_of(rules.check_identity(loaded.policy, who, clock.now(), loaded.policy.roles[
        "embeddings-read"].zone)) == "identity.shared_account"


# --- the catalog: selectors, directory subjects, lint ------------------------------------------


def catalog_with(extra: str, *, replace: tuple[str, str] | None = None) -> LoadedCatalog:
    text = CATALOG.read_text(encoding="utf-8")
    if replace is not None:
        assert replace[0] in text
        text = text.replace(*replace)
    return parse_catalog(text + extra, "catalog.yaml", ENV)


def lint_errors(extra: str = "", *, replace: tuple[str, str] | None = None) -> list[str]:
    with pytest.raises(CatalogError) as caught:
        catalog_with(extra, replace=replace)
    return caught.value.errors


@pytest.mark.parametrize(("extra", "where", "first", "second"), [
    ("  Uma: {groups: [team:ml-serving], mfa: true}\n", "directory", "uma", "Uma"),
    ("  ｕｍａ: {groups: [team:ml-serving], mfa: true}\n", "directory", "uma", "ｕｍａ"),
])
def test_lint_refuses_two_spellings_in_the_directory(extra, where, first, second):
    errors = lint_errors(replace=("  yuri:", extra + "  yuri:"))
    assert any(e.startswith(f"{where}: '{first}' and '{second}' are two spellings") for e in
               errors), errors


@pytest.mark.parametrize(("old", "new", "where"), [
    ("shared_accounts: [break-glass-admin, ops]", "shared_accounts: [admin, ａｄｍｉｎ]",
     "identity.shared_accounts"),
    ("shared_accounts: [break-glass-admin, ops]", "shared_accounts: [Admin, 'admin ']",
     "identity.shared_accounts"),
    ("approvers: {B: [group:reviewers], C: [group:reviewers]}",
     "approvers: {B: [user:Alice, user:alice], C: [group:reviewers]}", "approvers.B"),
    ("    requesters: [group:responders]\n    max_ttl: 25m",
     "    requesters: [user:Vera, VERA]\n    max_ttl: 25m",
     "roles.embeddings-requeue.requesters"),
    ("auto_approve: {reason_codes: [recovery], requesters: [group:responders]}",
     "auto_approve: {reason_codes: [recovery], requesters: [user:uma, user:UMA]}",
     "runbooks.RB-7.auto_approve.requesters"),
])
def test_lint_refuses_two_spellings_in_any_list(old, new, where):
    errors = lint_errors(replace=(old, new))
    assert any(e.startswith(f"{where}: ") and "two spellings of one name" in e
               for e in errors), errors


def test_lint_refuses_a_directory_person_spelled_like_a_shared_account():
    errors = lint_errors(replace=("  yuri:", "  ＯＰＳ: {groups: [team:x]}\n  yuri:"))
    assert "directory.ＯＰＳ: listed as a shared account" in errors


def test_lint_refuses_one_subject_bound_to_two_people():
    errors = lint_errors(replace=(
        "  vera:  {groups: [team:sre, reviewers], mfa: true}",
        "  vera:  {groups: [team:sre, reviewers], mfa: true, subject: s-1}\n"
        "  zed:   {groups: [team:zed], mfa: true, subject: s-1}"))
    assert any(e.startswith("directory.zed.subject: also the subject of 'vera'") for e in
               errors), errors


def test_a_name_bound_to_a_subject_matches_that_subject_only(clock):
    loaded = catalog_with("", replace=(
        "  vera:  {groups: [team:sre, reviewers], mfa: true}",
        "  vera:  {groups: [team:sre, reviewers], mfa: true, subject: s-vera}"))
    assert loaded.policy.people == {"vera": "s-vera"}
    real = human("vera", clock=clock, subject="s-vera")
    renamed = human("v.sanchez", clock=clock, subject="s-vera")
    impostor = human("Vera", clock=clock, subject="s-evil")
    assert loaded.policy.selects(real, ["user:vera"])
    assert loaded.policy.selects(renamed, ["user:VERA"])
    assert not loaded.policy.selects(impostor, ["user:vera"])
    assert not loaded.policy.selects(impostor, ["vera"])


def test_an_unbound_name_selector_matches_the_normalised_display_name(clock):
    policy = catalog_with("").policy
    assert policy.selects(human("ＵＭＡ", clock=clock), ["user:uma"])
    assert not policy.selects(human("uma2", clock=clock), ["user:uma"])


# --- the dev issuer ------------------------------------------------------------------------------


def test_dev_users_have_a_stable_sub_that_is_not_their_username(clock):
    issuer, again = DevIssuer(), DevIssuer()
    entry = {"groups": ["team:ml-serving"], "mfa": True}
    uma = issuer.verifier(clock=clock.now).verify(issuer.issue("uma", entry, clock.now()))
    assert uma.subject == dev_subject("uma") != "uma"
    assert uma.subject_id == subject_key(issuer.issuer, dev_subject("uma"))
    assert again.verifier(clock=clock.now).verify(again.issue("uma", entry, clock.now())) \
        .subject_id == uma.subject_id
    bound = issuer.verifier(clock=clock.now).verify(
        issuer.issue("uma", {**entry, "subject": "s-uma"}, clock.now()))
    assert bound.subject == "s-uma"
    assert dev_subject("Uma") != dev_subject("uma")
