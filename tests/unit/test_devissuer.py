"""The dev issuer's tokens go through the production verifier."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
import pytest

from breakglass.catalog.schema import DirectoryEntry
from breakglass.domain.errors import Unauthenticated
from breakglass.domain.model import PrincipalKind
from breakglass.identity import DevIssuer, StaticKeySource, TokenVerifier, WorkloadIdentity
from breakglass.identity.devissuer import DEV_ISSUER

pytestmark = pytest.mark.unit

NOW = datetime(2030, 1, 1, 2, 0, tzinfo=UTC)
ALICE = DirectoryEntry(groups=["team:platform", "oncall"], mfa=True)
ERIN = {"groups": ["team:platform", "oncall"], "mfa": False}
PIPELINE = WorkloadIdentity(
    "feature-pipeline", DEV_ISSUER, "system:serviceaccount:ml:pipeline", "breakglass"
)


ISSUER_UNDER_TEST = DevIssuer()


def at(moment: datetime) -> TokenVerifier:
    return ISSUER_UNDER_TEST.verifier(clock=lambda: moment, workloads=[PIPELINE])


def test_directory_user_with_mfa() -> None:
    raw = ISSUER_UNDER_TEST.issue("alice", ALICE, NOW)
    principal = at(NOW).verify(raw)
    assert principal.name == "alice"
    assert principal.kind is PrincipalKind.HUMAN
    assert principal.groups == frozenset({"team:platform", "oncall"})
    assert principal.mfa is True
    assert principal.amr == ("mfa",)
    assert principal.auth_time == NOW


def test_directory_user_without_mfa_from_a_plain_mapping() -> None:
    principal = at(NOW).verify(ISSUER_UNDER_TEST.issue("erin", ERIN, NOW))
    assert principal.mfa is False
    assert principal.amr == ("pwd",)


def test_tokens_are_eddsa_access_tokens_with_the_published_kid() -> None:
    raw = ISSUER_UNDER_TEST.issue("alice", ALICE, NOW)
    header = jwt.get_unverified_header(raw)
    assert header == {"alg": "EdDSA", "typ": "at+jwt", "kid": ISSUER_UNDER_TEST.kid}
    (published,) = ISSUER_UNDER_TEST.jwks()["keys"]
    assert published["kid"] == ISSUER_UNDER_TEST.kid
    assert set(published) == {"kty", "crv", "x", "kid", "use", "alg"}


def test_tokens_expire_after_twelve_hours_by_default() -> None:
    raw = ISSUER_UNDER_TEST.issue("alice", ALICE, NOW)
    assert at(NOW + timedelta(hours=11, minutes=59)).verify(raw).name == "alice"
    with pytest.raises(Unauthenticated) as caught:
        at(NOW + timedelta(hours=12, minutes=2)).verify(raw)
    assert caught.value.rule == "identity.token_expired"


def test_tokens_of_a_previous_run_are_refused() -> None:
    previous = DevIssuer()
    with pytest.raises(Unauthenticated) as caught:
        at(NOW).verify(previous.issue("alice", ALICE, NOW))
    assert caught.value.rule == "identity.unknown_kid"


def test_dev_tokens_are_refused_by_a_production_verifier() -> None:
    production = TokenVerifier(
        "https://idp.example.test",
        "breakglass",
        key_source=StaticKeySource(ISSUER_UNDER_TEST.jwks()),
        clock=lambda: NOW,
    )
    with pytest.raises(Unauthenticated) as caught:
        production.verify(ISSUER_UNDER_TEST.issue("alice", ALICE, NOW))
    assert caught.value.rule == "identity.wrong_issuer"


def test_workload_tokens_stay_on_the_workload_track() -> None:
    raw = ISSUER_UNDER_TEST.issue_workload(PIPELINE.subject, NOW)
    principal = at(NOW).authenticate(raw)
    assert principal.kind is PrincipalKind.WORKLOAD
    assert principal.name == "feature-pipeline"
    with pytest.raises(Unauthenticated) as caught:
        at(NOW).verify(raw)
    assert caught.value.rule == "identity.workload_as_human"


def test_a_directory_user_named_like_a_workload_is_neither() -> None:
    raw = ISSUER_UNDER_TEST.issue(PIPELINE.subject, ERIN, NOW, subject=PIPELINE.subject)
    with pytest.raises(Unauthenticated) as as_human:
        at(NOW).verify(raw)
    assert as_human.value.rule == "identity.workload_as_human"
    with pytest.raises(Unauthenticated) as as_workload:
        at(NOW).authenticate(raw)
    assert as_workload.value.rule == "identity.human_as_workload"
