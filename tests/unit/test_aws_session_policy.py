"""The AWS connector's pure parts: session policy, guardrails, names, catalog checks."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from breakglass.connectors.aws import (
    GUARDRAILS,
    MAX_SESSION_POLICY_CHARS,
    AwsStsConnector,
    parse_revoke_policy_name,
    revocation_policy,
    revoke_policy_name,
    session_name,
    session_policy,
    session_seconds,
)
from breakglass.connectors.base import MARKER_PREFIX
from breakglass.domain.errors import TargetError

pytestmark = pytest.mark.unit

ROLE_ARN = "arn:aws:iam::123456789012:role/breakglass-emergency"
LOGS_READ = {"actions": ["logs:GetLogEvents", "logs:FilterLogEvents"], "resources": ["*"]}


def statements(grant: dict[str, Any]) -> dict[str, dict[str, Any]]:
    document = json.loads(session_policy(grant, ROLE_ARN))
    assert document["Version"] == "2012-10-17"
    return {s["Sid"]: s for s in document["Statement"]}


def denied_actions(grant: dict[str, Any]) -> set[str]:
    return {
        action
        for s in statements(grant).values()
        if s["Effect"] == "Deny" and s["Resource"] == "*"
        for action in s["Action"]
    }


def test_the_grant_becomes_the_only_allow() -> None:
    conditions = {"StringEquals": {"aws:RequestedRegion": "eu-west-1"}}
    found = statements({**LOGS_READ, "conditions": conditions})
    allows = [s for s in found.values() if s["Effect"] == "Allow"]
    assert allows == [
        {
            "Sid": "BreakglassGrant",
            "Effect": "Allow",
            "Action": ["logs:GetLogEvents", "logs:FilterLogEvents"],
            "Resource": ["*"],
            "Condition": conditions,
        }
    ]


def test_every_guardrail_is_a_deny_on_every_resource() -> None:
    found = statements(LOGS_READ)
    for sid, actions in GUARDRAILS.items():
        assert found[sid] == {
            "Sid": sid,
            "Effect": "Deny",
            "Action": list(actions),
            "Resource": "*",
        }


@pytest.mark.parametrize(
    "action",
    [
        "iam:CreateAccessKey",
        "iam:CreateLoginProfile",
        "iam:UpdateLoginProfile",
        "iam:UpdateAssumeRolePolicy",
        "iam:CreateUser",
        "sts:AssumeRole",
        "organizations:*",
        "cloudtrail:StopLogging",
        "cloudtrail:DeleteTrail",
        "cloudtrail:UpdateTrail",
        "cloudtrail:PutEventSelectors",
        "ec2:AuthorizeSecurityGroupEgress",
        "ec2:CreateInternetGateway",
    ],
)
def test_guardrails_hold_even_when_identity_changes_are_allowed(action: str) -> None:
    zone_c = {"actions": ["iam:*"], "resources": ["*"], "allow_identity_changes": True}
    assert action in denied_actions(zone_c)


def test_a_session_cannot_touch_the_emergency_role_and_lift_its_revocation() -> None:
    assert statements(LOGS_READ)["ProtectEmergencyRole"] == {
        "Sid": "ProtectEmergencyRole",
        "Effect": "Deny",
        "Action": "iam:*",
        "Resource": ROLE_ARN,
    }


def test_the_policy_is_compact_and_leaves_room_for_the_grant() -> None:
    assert " " not in session_policy(LOGS_READ, ROLE_ARN)
    guardrails_only = session_policy({"actions": [], "resources": []}, ROLE_ARN)
    assert len(guardrails_only) <= MAX_SESSION_POLICY_CHARS - 800


def test_a_policy_over_the_sts_limit_is_refused_before_any_call() -> None:
    buckets = [f"arn:aws:s3:::bucket-{i}/*" for i in range(60)]
    many = {"actions": ["s3:GetObject"], "resources": buckets}
    with pytest.raises(TargetError, match="2048"):
        session_policy(many, ROLE_ARN)
    assert any("2048" in e for e in AwsStsConnector.validate_grant(many))


def test_a_policy_just_under_the_limit_is_accepted() -> None:
    resources = ["*"]
    while True:
        grant = {"actions": ["s3:GetObject"], "resources": [*resources, "arn:aws:s3:::b/x"]}
        try:
            document = session_policy(grant, ROLE_ARN)
        except TargetError:
            break
        resources = grant["resources"]
        assert len(document) <= MAX_SESSION_POLICY_CHARS
    assert len(session_policy({"actions": ["s3:GetObject"], "resources": resources}, ROLE_ARN)) > (
        MAX_SESSION_POLICY_CHARS - 30
    )


@pytest.mark.parametrize(
    ("ttl", "expected"),
    [
        (timedelta(minutes=5), 900),  # STS minimum: the broker's revoke is the lock
        (timedelta(minutes=30), 1800),
        (timedelta(minutes=30, milliseconds=1), 1801),  # never shorter than the grant
        (timedelta(hours=24), 43_200),  # STS maximum
    ],
)
def test_native_expiry_is_clamped_to_what_sts_allows(ttl: timedelta, expected: int) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert session_seconds(now + ttl, now) == expected


def test_session_names_carry_the_marker_and_only_characters_sts_accepts() -> None:
    assert session_name("3f2a-g0") == f"{MARKER_PREFIX}3f2a-g0"
    assert session_name("a b/c:d") == f"{MARKER_PREFIX}abcd"
    assert len(session_name("x" * 200)) == 64


@pytest.mark.parametrize("session", ["bg_abc", "bg_req-1-g0", "bg_a-b-c-d"])
def test_revocation_policy_names_carry_session_and_native_expiry(session: str) -> None:
    expiry = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    name = revoke_policy_name(session, expiry)
    assert len(name) <= 128
    assert parse_revoke_policy_name(name) == (session, expiry)


@pytest.mark.parametrize(
    "name", ["emergency-ceiling", "breakglass-revoke-", "breakglass-revoke-bg_x", "other-bg_x-17"]
)
def test_other_policy_names_are_not_revocations(name: str) -> None:
    assert parse_revoke_policy_name(name) is None


def test_the_revocation_denies_everything_to_one_session_only() -> None:
    document = json.loads(revocation_policy("AROAEXAMPLE:bg_abc"))
    assert document["Statement"] == [
        {
            "Sid": "BreakglassRevokedSession",
            "Effect": "Deny",
            "Action": "*",
            "Resource": "*",
            "Condition": {"StringEquals": {"aws:userid": "AROAEXAMPLE:bg_abc"}},
        }
    ]


# -- catalog checks ----------------------------------------------------------------------


def grant_errors(**block: Any) -> list[str]:
    return AwsStsConnector.validate_grant({**LOGS_READ, **block})


def test_a_plain_grant_block_is_valid() -> None:
    assert grant_errors() == []
    assert grant_errors(actions=["s3:Get*", "logs:*", "iam:GetRole", "iam:List*"]) == []
    assert grant_errors(resources=["arn:aws:s3:::models/*"], conditions={"Bool": {"a": "b"}}) == []


@pytest.mark.parametrize("action", ["*", "*:*", "s*:GetObject", "s3", "s3:", 7])
def test_wildcard_or_malformed_actions_are_refused(action: Any) -> None:
    assert grant_errors(actions=[action])
    assert grant_errors(actions=[action], allow_identity_changes=True)


@pytest.mark.parametrize(
    "action",
    [
        "iam:*",
        "iam:Create*",
        "iam:PutRolePolicy",
        "iam:AttachRolePolicy",
        "iam:Put*",
        "iam:*Policy",
    ],
)
def test_iam_changes_need_allow_identity_changes(action: str) -> None:
    refused = grant_errors(actions=[action])
    assert len(refused) == 1
    assert "allow_identity_changes" in refused[0]
    assert grant_errors(actions=[action], allow_identity_changes=True) == []


@pytest.mark.parametrize(
    "action",
    [
        "iam:CreateAccessKey",
        "iam:createaccesskey",
        "iam:UpdateAssumeRolePolicy",
        "iam:CreateLoginProfile",
        "sts:AssumeRole",
        "organizations:LeaveOrganization",
        "cloudtrail:StopLogging",
        "ec2:AuthorizeSecurityGroupEgress",
    ],
)
def test_a_role_cannot_ask_for_an_action_a_guardrail_denies(action: str) -> None:
    refused = grant_errors(actions=["s3:GetObject", action], allow_identity_changes=True)
    assert len(refused) == 1
    assert "guardrail" in refused[0]
    assert grant_errors(actions=[action]) == refused


@pytest.mark.parametrize(
    "block",
    [
        {"actions": []},
        {"actions": "s3:GetObject"},
        {"resources": []},
        {"resources": ["bucket-name"]},
        {"conditions": {"StringEquals": "x"}},
        {"conditions": ["x"]},
        {"allow_identity_changes": "yes"},
        {"action": ["s3:GetObject"]},
    ],
)
def test_malformed_grant_blocks_are_refused(block: dict[str, Any]) -> None:
    assert grant_errors(**block)


def test_missing_actions_or_resources_are_refused() -> None:
    assert len(AwsStsConnector.validate_grant({})) == 2


def test_a_good_target_config_is_valid() -> None:
    config = {"role_arn": ROLE_ARN, "region": "eu-west-1", "external_id": "bg-ext-1"}
    assert AwsStsConnector.validate_config(config) == []
    assert AwsStsConnector.validate_config({"role_arn": ROLE_ARN}) == []
    with_path = {"role_arn": "arn:aws:iam::123456789012:role/ops/bg", "endpoint_url": "http://h:1"}
    assert AwsStsConnector.validate_config(with_path) == []


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({}, "role_arn"),
        ({"role_arn": "arn:aws:iam::123456789012:user/alice"}, "role_arn"),
        ({"role_arn": "arn:aws:iam::1234:role/x"}, "role_arn"),
        ({"role_arn": ROLE_ARN, "region": "Europe"}, "region"),
        ({"role_arn": ROLE_ARN, "endpoint_url": "ftp://x"}, "endpoint_url"),
        ({"role_arn": ROLE_ARN, "external_id": "x"}, "external_id"),
        ({"role_arn": ROLE_ARN, "aws_secret_access_key": "abc"}, "aws_secret_access_key"),
        ({"role_arn": ROLE_ARN, "access_key_id": "AKIA"}, "access_key_id"),
    ],
)
def test_bad_target_configs_are_refused(config: dict[str, Any], key: str) -> None:
    refused = AwsStsConnector.validate_config(config)
    assert len(refused) == 1
    assert refused[0].startswith(key)


def test_a_refusal_never_echoes_a_plaintext_secret() -> None:
    refused = AwsStsConnector.validate_config({"role_arn": ROLE_ARN, "secret_access_key": "s3cr3t"})
    assert refused
    assert "s3cr3t" not in " ".join(refused)
