"""The AWS STS connector against the moto emulator (``BG_TEST_AWS_ENDPOINT``).

The emulator does not enforce session policies, and its IAM enforcement is off
unless switched on through ``/moto-api/reset-auth``; each test says what it can
observe. Every test starts from an emptied emulator.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import boto3
import httpx
import pytest
from botocore.exceptions import ClientError

from breakglass.connectors.aws import (
    GUARDRAILS,
    AwsStsConnector,
    parse_revoke_policy_name,
    revoke_policy_name,
    session_policy,
)
from breakglass.connectors.base import MARKER_PREFIX, GrantSpec, IssuedCredential
from breakglass.domain.errors import TargetError
from tests.fakes import fresh_ownership
from tests.services import require

OWNERSHIP = fresh_ownership()  # this module's deployment

if TYPE_CHECKING:
    from mypy_boto3_iam import IAMClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sts import STSClient

pytestmark = pytest.mark.integration

ROLE_NAME = "breakglass-emergency"
ACCOUNT = "123456789012"
BROKER_SECRET = "broker-secret-key-never-shown"
TRUST_ACCOUNT = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
            "Action": ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"],
        }
    ],
}
S3_READ = {"actions": ["s3:ListAllMyBuckets", "s3:GetObject"], "resources": ["*"]}


def minted_session(secret: Mapping[str, Any]) -> boto3.session.Session:
    """A boto3 session that uses a minted credential."""
    return boto3.session.Session(
        aws_access_key_id=secret["aws_access_key_id"],
        aws_secret_access_key=secret["aws_secret_access_key"],
        aws_session_token=secret["aws_session_token"],
        region_name=secret["region"],
    )


@dataclass
class Emulator:
    endpoint: str
    role_arn: str
    role_id: str

    def iam(self) -> IAMClient:
        return boto3.client("iam", endpoint_url=self.endpoint, region_name="us-east-1")

    def sts_as(self, secret: Mapping[str, Any]) -> STSClient:
        return minted_session(secret).client("sts", endpoint_url=self.endpoint)

    def s3_as(self, secret: Mapping[str, Any]) -> S3Client:
        return minted_session(secret).client("s3", endpoint_url=self.endpoint)

    def enforce_iam(self, on: bool) -> None:
        """Switch the emulator's IAM checks; with them on, only IAM identities get through."""
        data = b"0" if on else b"inf"
        httpx.post(f"{self.endpoint}/moto-api/reset-auth", content=data).raise_for_status()

    def inline_policies(self) -> list[str]:
        return self.iam().list_role_policies(RoleName=ROLE_NAME)["PolicyNames"]

    def identities(self) -> tuple[int, int, int]:
        """Users, access keys and roles in the account."""
        iam = self.iam()
        users = iam.list_users()["Users"]
        keys = sum(
            len(iam.list_access_keys(UserName=u["UserName"])["AccessKeyMetadata"]) for u in users
        )
        return len(users), keys, len(iam.list_roles()["Roles"])


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    endpoint = require("BG_TEST_AWS_ENDPOINT")
    httpx.post(f"{endpoint}/moto-api/reset").raise_for_status()
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", BROKER_SECRET)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1")
    role = iam.create_role(
        RoleName=ROLE_NAME,
        AssumeRolePolicyDocument=json.dumps(TRUST_ACCOUNT),
        MaxSessionDuration=43_200,
    )["Role"]
    ceiling = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["s3:*", "logs:*"], "Resource": "*"}],
    }
    iam.put_role_policy(
        RoleName=ROLE_NAME, PolicyName="emergency-ceiling", PolicyDocument=json.dumps(ceiling)
    )
    emulator = Emulator(endpoint, role["Arn"], role["RoleId"])
    yield emulator
    emulator.enforce_iam(False)


@pytest.fixture
def connector(emulator: Emulator) -> AwsStsConnector:
    config = {
        "role_arn": emulator.role_arn,
        "region": "us-east-1",
        "endpoint_url": emulator.endpoint,
    }
    assert AwsStsConnector.validate_config(config) == []
    return AwsStsConnector("cloud-test", config, ownership=OWNERSHIP)


Mint = Callable[..., IssuedCredential]


@pytest.fixture
def mint(connector: AwsStsConnector) -> Mint:
    def _mint(ttl: timedelta = timedelta(minutes=30)) -> IssuedCredential:
        spec = GrantSpec(
            grant_id=f"{uuid.uuid4().hex[:12]}-g0",
            request_id="req-42",
            principal="alice@example.com",
            role="cloud-s3-read",
            incident="INC-123",
            grant=S3_READ,
            expires_at=datetime.now(UTC) + ttl,
        )
        return connector.grant(spec)

    return _mint


def test_minted_credentials_work_and_name_the_session(emulator: Emulator, mint: Mint) -> None:
    issued = mint()
    secret = issued.secret
    assert issued.target_ref.startswith(MARKER_PREFIX)
    assert secret["type"] == "aws"
    assert secret["session_name"] == issued.target_ref
    assert secret["region"] == "us-east-1"
    assert secret["aws_access_key_id"].startswith("ASIA")  # temporary, never a long-lived AKIA key

    caller = emulator.sts_as(secret).get_caller_identity()
    assert caller["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/{ROLE_NAME}/{issued.target_ref}"
    assert caller["UserId"] == f"{emulator.role_id}:{issued.target_ref}"
    assert emulator.s3_as(secret).list_buckets()["Buckets"] == []


@pytest.mark.parametrize(
    ("ttl", "native"), [(timedelta(minutes=5), 900), (timedelta(minutes=30), 1800)]
)
def test_native_expiry_follows_the_grant_within_sts_limits(
    mint: Mint, ttl: timedelta, native: int
) -> None:
    secret = mint(ttl=ttl).secret
    lifetime = datetime.fromisoformat(secret["expires_at"]) - datetime.now(UTC)
    assert native - 60 < lifetime.total_seconds() <= native + 1


def test_an_expired_grant_is_not_minted(mint: Mint) -> None:
    with pytest.raises(TargetError, match="already expired"):
        mint(ttl=timedelta(seconds=-1))


def test_sts_receives_the_session_policy_tags_and_source_identity(
    emulator: Emulator, connector: AwsStsConnector, mint: Mint
) -> None:
    sent: dict[str, Any] = {}
    connector._sts.meta.events.register(
        "provide-client-params.sts.AssumeRole", lambda params, **_: sent.update(params)
    )
    issued = mint(ttl=timedelta(minutes=5))

    expected_policy = session_policy(S3_READ, emulator.role_arn)
    assert sent["Policy"] == expected_policy
    assert sent["DurationSeconds"] == 900
    assert sent["RoleSessionName"] == issued.target_ref
    assert sent["SourceIdentity"] == "alice@example.com"
    assert {t["Key"]: t["Value"] for t in sent["Tags"]} == {
        "breakglass:request": "req-42",
        "breakglass:incident": "INC-123",
        "breakglass:principal": "alice@example.com",
    }

    # What the emulator recorded for the session: the same policy, guardrails included.
    recorded = httpx.get(f"{emulator.endpoint}/moto-api/data.json").json()["sts"]["AssumedRole"]
    (session,) = [s for s in recorded if s["session_name"] == issued.target_ref]
    policy = json.loads(session["policy"])
    denies = {s["Sid"]: s["Action"] for s in policy["Statement"] if s["Effect"] == "Deny"}
    assert {sid: tuple(actions) for sid, actions in denies.items() if sid in GUARDRAILS} == dict(
        GUARDRAILS
    )
    assert "iam:CreateAccessKey" in denies["NoLongLivedCredentials"]


def test_revoke_denies_exactly_this_session_until_its_native_expiry(
    emulator: Emulator, connector: AwsStsConnector, mint: Mint
) -> None:
    revoked, other = mint(), mint()
    connector.revoke(revoked.target_ref, revoked.artefacts)
    connector.revoke(revoked.target_ref, revoked.artefacts)  # idempotent

    names = [n for n in emulator.inline_policies() if n != "emergency-ceiling"]
    assert names == list(revoked.artefacts)
    (name,) = names
    parsed = parse_revoke_policy_name(name)
    assert parsed is not None
    assert parsed[0] == revoked.target_ref
    native_expiry = datetime.fromisoformat(revoked.secret["expires_at"])
    assert abs((parsed[1] - native_expiry).total_seconds()) <= 1

    document = emulator.iam().get_role_policy(RoleName=ROLE_NAME, PolicyName=name)["PolicyDocument"]
    assert not isinstance(document, str)
    (statement,) = document["Statement"]
    user_id = emulator.sts_as(revoked.secret).get_caller_identity()["UserId"]
    assert statement == {
        "Sid": "BreakglassRevokedSession",
        "Effect": "Deny",
        "Action": "*",
        "Resource": "*",
        "Condition": {"StringEquals": {"aws:userid": user_id}},
    }
    assert connector.verify(revoked.target_ref) is False
    assert connector.verify(other.target_ref) is True
    assert connector.list_managed() == []


def test_a_revoked_session_is_refused_when_the_emulator_enforces_iam(
    emulator: Emulator, connector: AwsStsConnector, mint: Mint
) -> None:
    """The emulator ignores the ``aws:userid`` condition and so refuses every session
    of the role after a revocation; AWS refuses only the one session. What this
    shows is that the Deny lands on the role the session uses."""
    issued = mint()
    s3 = emulator.s3_as(issued.secret)
    emulator.enforce_iam(True)
    try:
        assert s3.list_buckets()["Buckets"] == []
    finally:
        emulator.enforce_iam(False)

    connector.revoke(issued.target_ref, issued.artefacts)
    emulator.enforce_iam(True)
    try:
        with pytest.raises(ClientError) as refused:
            s3.list_buckets()
        assert refused.value.response["Error"]["Code"] == "AccessDenied"
    finally:
        emulator.enforce_iam(False)


def test_revocation_is_cleaned_up_once_the_native_expiry_has_passed(
    emulator: Emulator, connector: AwsStsConnector, mint: Mint
) -> None:
    issued = mint()
    connector.revoke(issued.target_ref, issued.artefacts)
    native_expiry = datetime.fromisoformat(issued.secret["expires_at"])

    assert connector.cleanup_expired_revocations(datetime.now(UTC)) == []
    assert connector.cleanup_expired_revocations(native_expiry) == []  # clock-skew grace
    later = native_expiry + timedelta(minutes=6)
    assert connector.cleanup_expired_revocations(later) == list(issued.artefacts)
    assert connector.cleanup_expired_revocations(later) == []
    assert emulator.inline_policies() == ["emergency-ceiling"]


def test_revoke_without_artefacts_holds_for_the_longest_sts_session(
    emulator: Emulator, connector: AwsStsConnector, mint: Mint
) -> None:
    issued = mint()
    connector.revoke(issued.target_ref)
    (name,) = [n for n in emulator.inline_policies() if n != "emergency-ceiling"]
    parsed = parse_revoke_policy_name(name)
    assert parsed is not None
    held = parsed[1] - datetime.now(UTC)
    assert timedelta(hours=11, minutes=59) < held <= timedelta(hours=12, seconds=1)


def test_a_session_past_its_native_expiry_needs_no_revocation(
    emulator: Emulator, connector: AwsStsConnector, mint: Mint
) -> None:
    issued = mint()
    long_ago = revoke_policy_name(issued.target_ref, datetime.now(UTC) - timedelta(hours=1))
    connector.revoke(issued.target_ref, (long_ago,))
    assert emulator.inline_policies() == ["emergency-ceiling"]


def test_revoke_refuses_a_session_the_broker_did_not_name(connector: AwsStsConnector) -> None:
    with pytest.raises(TargetError, match="not a breakglass session"):
        connector.revoke("someone-elses-session")


def test_the_broker_never_creates_an_iam_user_access_key_or_role(
    emulator: Emulator, connector: AwsStsConnector, mint: Mint
) -> None:
    before = emulator.identities()
    issued = mint()
    connector.revoke(issued.target_ref, issued.artefacts)
    connector.cleanup_expired_revocations(datetime.now(UTC) + timedelta(days=1))
    connector.inventory()
    assert emulator.identities() == before


def administrator_access(iam: IAMClient, document: dict[str, Any]) -> str:
    """The AWS-managed AdministratorAccess policy, or a same-named copy in the account:
    moto ships AWS-managed policies only when started with MOTO_IAM_LOAD_MANAGED_POLICIES."""
    arn = "arn:aws:iam::aws:policy/AdministratorAccess"
    try:
        iam.get_policy(PolicyArn=arn)
    except ClientError:
        created = iam.create_policy(
            PolicyName="AdministratorAccess", PolicyDocument=json.dumps(document)
        )
        arn = created["Policy"]["Arn"]
    return str(arn)


def test_inventory_reports_standing_privileges(
    emulator: Emulator, connector: AwsStsConnector
) -> None:
    iam = emulator.iam()
    iam.create_user(UserName="ci-deployer")
    key = iam.create_access_key(UserName="ci-deployer")["AccessKey"]["AccessKeyId"]
    iam.create_user(UserName="retired-bot")
    old = iam.create_access_key(UserName="retired-bot")["AccessKey"]["AccessKeyId"]
    iam.update_access_key(UserName="retired-bot", AccessKeyId=old, Status="Inactive")
    everything = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
    }
    admin_arn = administrator_access(iam, everything)
    iam.create_role(RoleName="legacy-admin", AssumeRolePolicyDocument=json.dumps(TRUST_ACCOUNT))
    iam.attach_role_policy(RoleName="legacy-admin", PolicyArn=admin_arn)
    iam.create_group(GroupName="ops")
    iam.attach_group_policy(GroupName="ops", PolicyArn=admin_arn)
    iam.create_user(UserName="shadow-admin")
    iam.put_user_policy(
        UserName="shadow-admin", PolicyName="all", PolicyDocument=json.dumps(everything)
    )

    found = {(p.subject, p.privilege, p.detail) for p in connector.inventory()}
    assert all(p.target == "cloud-test" for p in connector.inventory())
    assert found == {
        ("user/ci-deployer", "long-lived access key", key),
        ("role/legacy-admin", "AdministratorAccess attached", admin_arn),
        ("group/ops", "AdministratorAccess attached", admin_arn),
        ("user/shadow-admin", "inline allow of * on *", "all"),
    }


def test_aws_errors_become_target_errors_naming_the_call(emulator: Emulator) -> None:
    missing = f"arn:aws:iam::{ACCOUNT}:role/no-such-role"
    connector = AwsStsConnector(
        "cloud-test", {"role_arn": missing, "endpoint_url": emulator.endpoint},
        ownership=OWNERSHIP,
    )
    with pytest.raises(TargetError, match="iam:ListRolePolicies failed: NoSuchEntity") as caught:
        connector.revoke(f"{MARKER_PREFIX}abc")
    assert BROKER_SECRET not in str(caught.value)


def test_an_unreachable_target_fails_without_leaking_the_brokers_secret(
    emulator: Emulator,
) -> None:
    config = {"role_arn": emulator.role_arn, "endpoint_url": "http://127.0.0.1:9"}
    connector = AwsStsConnector("cloud-test", config, ownership=OWNERSHIP)
    spec = GrantSpec(
        grant_id="g1",
        request_id="req-1",
        principal="alice",
        role="r",
        incident="INC-123",
        grant=S3_READ,
        expires_at=datetime.now(UTC) + timedelta(minutes=5),
    )
    with pytest.raises(TargetError, match="sts:AssumeRole failed") as caught:
        connector.grant(spec)
    assert BROKER_SECRET not in str(caught.value)
    assert BROKER_SECRET not in repr(caught.value.args)


def test_planned_ref_is_the_session_name_grant_will_use(
    mint: Mint, connector: AwsStsConnector
) -> None:
    issued = mint()
    grant_id = issued.target_ref.removeprefix(MARKER_PREFIX)
    assert connector.planned_ref(grant_id) == issued.target_ref
