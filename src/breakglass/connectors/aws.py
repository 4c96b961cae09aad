"""AWS connector: short-lived STS sessions on a pre-provisioned emergency role.

The broker never creates an IAM user, access key or role. A grant is one
``sts:AssumeRole`` on the target's emergency role (its trust policy lets the
broker ``sts:AssumeRole``, ``sts:TagSession``, ``sts:SetSourceIdentity``; its
own policies are the ceiling), narrowed by a session policy: the role's
``grant`` block as an Allow, :data:`GUARDRAILS` as Denies. Configuration::

    cloud-prod: {type: aws, environment: prod, region: eu-west-1,  # default us-east-1
                 role_arn: "arn:aws:iam::123456789012:role/breakglass-emergency",
                 external_id: "${BG_AWS_EXTERNAL_ID}"}  # optional; endpoint_url for emulators
    grant: {actions: [logs:GetLogEvents], resources: ["*"], conditions: {...}}  # a role's

The broker's own credentials come from the standard boto3 chain (environment,
instance profile), never from the catalog. On the emergency role it needs
``iam:GetRole``, ``iam:ListRolePolicies``, ``iam:PutRolePolicy``,
``iam:DeleteRolePolicy``; for inventory ``iam:GetAccountAuthorizationDetails``
and ``iam:ListAccessKeys``.

Expiry: STS sessions last 900 to 43,200 s (at most the role's MaxSessionDuration)
and cannot be extended. A grant under 15 minutes still gets a 15-minute native
expiry: the broker's revoke at ``expires_at`` is the lock, native expiry the
backstop while the broker is down.

Revocation: STS sessions cannot be deleted. Like the console's "Revoke active
sessions", but for one session, revoke puts an inline policy
``breakglass-revoke-<session>-<native expiry, epoch s>`` on the role that denies
everything to ``aws:userid`` ``<role id>:<session>``; other sessions live on.
:meth:`AwsStsConnector.cleanup_expired_revocations` deletes it after the native
expiry (a role's inline policies share a 10,240-character quota).

Drift: STS sessions are not enumerable: ``list_managed`` returns nothing and
``verify`` only knows whether a session was revoked.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from functools import cached_property
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Final
from urllib.parse import unquote

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from breakglass.connectors.aws_read import read_only_errors
from breakglass.connectors.base import (
    MARKER_PREFIX,
    Connector,
    GrantSpec,
    IssuedCredential,
    Ownership,
    StandingPrivilege,
)
from breakglass.domain.errors import TargetError

if TYPE_CHECKING:
    from mypy_boto3_iam import IAMClient
    from mypy_boto3_sts import STSClient
    from mypy_boto3_sts.type_defs import AssumeRoleRequestTypeDef

DEFAULT_REGION: Final = "us-east-1"
MIN_SESSION_SECONDS: Final = 900
MAX_SESSION_SECONDS: Final = 43_200
MAX_SESSION_POLICY_CHARS: Final = 2048
REVOKE_POLICY_PREFIX: Final = "breakglass-revoke-"
CLEANUP_GRACE: Final = timedelta(minutes=5)
"""A revocation outlives its session's native expiry by this much, against clock skew."""

# fmt: off
GUARDRAILS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType({
    "NoLongLivedCredentials": (
        "iam:CreateUser", "iam:CreateAccessKey", "iam:UpdateAccessKey", "iam:CreateLoginProfile",
        "iam:UpdateLoginProfile", "iam:CreateServiceSpecificCredential", "iam:UploadSSHPublicKey",
    ),
    "NoTrustPolicyEdits": ("iam:UpdateAssumeRolePolicy",),
    "NoRoleChaining": ("sts:AssumeRole",),
    "NoOrganizationChanges": ("organizations:*",),
    "ForceApiLogging": ("cloudtrail:StopLogging", "cloudtrail:DeleteTrail",
                        "cloudtrail:UpdateTrail", "cloudtrail:PutEventSelectors"),
    "RestrictEgress": (
        "ec2:AuthorizeSecurityGroupEgress", "ec2:CreateInternetGateway", "ec2:CreateNatGateway",
        "ec2:AttachInternetGateway", "ec2:CreateEgressOnlyInternetGateway",
        "ec2:CreateVpcPeeringConnection",
    ),
})
# fmt: on
"""Actions every session is denied whatever its grant says, by ``Sid``.

Role chaining is denied because a chained session escapes both the session
policy and its revocation. A Deny beats any Allow, so ``allow_identity_changes``
cannot lift these. :func:`session_policy` also denies ``iam:*`` on the emergency
role itself, so a session cannot remove its own revocation.
"""

_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/(?:[\w+=,.@-]+/)*[\w+=,.@-]{1,64}$")
_CONFIG_CHECKS = (
    ("role_arn", _ROLE_ARN, "must be an IAM role ARN: arn:aws:iam::<account>:role/<name>"),
    ("region", re.compile(r"^[a-z]{2}(?:-[a-z]+)+-\d+$"), "must be a region such as eu-west-1"),
    ("endpoint_url", re.compile(r"^https?://\S+$"), "must be an http:// or https:// URL"),
    ("external_id", re.compile(r"^[\w+=,.@:/-]{2,1224}$"), "must be 2-1224 of [\\w+=,.@:/-]"),
)
_PLAINTEXT_CREDENTIAL = re.compile(r"secret|access_key|session_token")
_ACTION = re.compile(r"^([a-z0-9-]+):([A-Za-z0-9*?]+)$")
_READ_ONLY_IAM_VERBS = ("Get", "List", "Generate", "Simulate")
_GRANT_KEYS = frozenset({"actions", "resources", "conditions", "allow_identity_changes"})
_NAME_UNSAFE = re.compile(r"[^\w+=,.@-]")
_TAG_UNSAFE = re.compile(r"[^\w.:/=+@ -]")
_ENTITY_DETAILS = (
    ("user", "UserDetailList", "UserName", "UserPolicyList"),
    ("group", "GroupDetailList", "GroupName", "GroupPolicyList"),
    ("role", "RoleDetailList", "RoleName", "RolePolicyList"),
)
_LONGEST_ROLE_ARN = "arn:aws:iam::000000000000:role/" + "x" * 64
_BOTO_CONFIG = Config(connect_timeout=5, read_timeout=15, retries={"max_attempts": 3})


def _policy_json(statements: list[dict[str, Any]]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": statements}, separators=(",", ":"))


def session_policy(grant: Mapping[str, Any], role_arn: str) -> str:
    """The session policy for one grant, as the compact JSON sent to STS. Pure.

    Allows the grant's actions on its resources (under its conditions), then
    denies :data:`GUARDRAILS` and any IAM action on the emergency role itself.
    Raises :class:`TargetError` when the document exceeds STS's 2,048 characters.
    """
    actions, resources = list(grant.get("actions", ())), list(grant.get("resources", ()))
    allow = {"Sid": "BreakglassGrant", "Effect": "Allow", "Action": actions, "Resource": resources}
    if grant.get("conditions"):
        allow["Condition"] = grant["conditions"]
    denies = [
        {"Sid": sid, "Effect": "Deny", "Action": list(guarded), "Resource": "*"}
        for sid, guarded in GUARDRAILS.items()
    ]
    own_role = {"Sid": "ProtectEmergencyRole", "Effect": "Deny", "Action": "iam:*"}
    document = _policy_json([allow, *denies, own_role | {"Resource": role_arn}])
    if len(document) > MAX_SESSION_POLICY_CHARS:
        raise TargetError(
            f"session policy is {len(document)} characters, STS accepts at most "
            f"{MAX_SESSION_POLICY_CHARS}: list fewer actions or resources (wildcards help)"
        )
    return document


def revocation_policy(user_id: str) -> str:
    """Inline role policy that denies everything to one session (``<role id>:<session>``)."""
    condition = {"StringEquals": {"aws:userid": user_id}}
    deny = {"Sid": "BreakglassRevokedSession", "Effect": "Deny", "Action": "*", "Resource": "*"}
    return _policy_json([deny | {"Condition": condition}])


def session_seconds(expires_at: datetime, now: datetime) -> int:
    """STS ``DurationSeconds`` for a grant ending at ``expires_at``, within 900..43,200."""
    remaining = math.ceil((expires_at - now).total_seconds())
    return max(MIN_SESSION_SECONDS, min(MAX_SESSION_SECONDS, remaining))


def session_name(grant_id: str, prefix: str = MARKER_PREFIX) -> str:
    """The STS ``RoleSessionName`` of a grant, which is also its target reference.

    Only the marker prefix, no ownership tag: STS sessions cannot be listed, so drift
    never acts on them (native expiry ends them), and the name keeps STS's 64 characters
    for the grant's ID."""
    return (prefix + _NAME_UNSAFE.sub("", grant_id))[:64]


def revoke_policy_name(session: str, native_expiry: datetime) -> str:
    return f"{REVOKE_POLICY_PREFIX}{session}-{math.ceil(native_expiry.timestamp())}"


def parse_revoke_policy_name(name: str) -> tuple[str, datetime] | None:
    """``(session, native expiry)`` from a revocation policy name; None for other names."""
    session, _, epoch = name.removeprefix(REVOKE_POLICY_PREFIX).rpartition("-")
    if not name.startswith(REVOKE_POLICY_PREFIX) or not session or not epoch.isdigit():
        return None
    return session, datetime.fromtimestamp(int(epoch), UTC)


def _action_errors(action: object, identity_ok: bool) -> list[str]:
    match = _ACTION.match(action) if isinstance(action, str) else None
    if match is None:
        return [f"action {action!r} is not service:Action (no bare '*', no wildcard service)"]
    service, verb = match.groups()
    guarded = [sid for sid, patterns in GUARDRAILS.items()
               if any(fnmatchcase(str(action).lower(), p.lower()) for p in patterns)]
    if guarded:
        return [f"{action!r} is denied to every session by guardrail {guarded[0]}: "
                "no role can grant it"]
    if service == "iam" and not verb.startswith(_READ_ONLY_IAM_VERBS) and not identity_ok:
        return [f"{action!r} can change IAM: needs allow_identity_changes (zone C only)"]
    return []


def _allows_everything(document: str | Mapping[str, Any]) -> bool:
    parsed = json.loads(unquote(document)) if isinstance(document, str) else document
    statements = parsed.get("Statement", [])
    for statement in statements if isinstance(statements, list) else [statements]:
        actions, resources = statement.get("Action", []), statement.get("Resource", [])
        actions = [actions] if isinstance(actions, str) else actions
        resources = [resources] if isinstance(resources, str) else resources
        if statement.get("Effect") == "Allow" and {"*", "*:*"} & set(actions) and "*" in resources:
            return True
    return False


class AwsStsConnector(Connector):
    """Grants are STS sessions on one emergency IAM role. See the module docstring."""

    type: ClassVar[str] = "aws"
    extends_natively: ClassVar[bool] = False
    lists_managed: ClassVar[bool] = False

    @classmethod
    def validate_config(cls, config: Mapping[str, Any]) -> list[str]:
        errors = [
            f"{key} must not be in the catalog: the broker's AWS credentials come from "
            "its environment"
            for key in sorted(config)
            if _PLAINTEXT_CREDENTIAL.search(key)
        ]
        for key, pattern, problem in _CONFIG_CHECKS:
            value = config.get(key, DEFAULT_REGION if key == "region" else None)
            if value is None and key != "role_arn":
                continue
            if not isinstance(value, str) or not pattern.match(value):
                errors.append(f"{key} {problem}")
        return errors

    @classmethod
    def validate_grant(cls, grant: Mapping[str, Any]) -> list[str]:
        """Refuse ``*``, wildcard services, any action a guardrail denies (it could never
        work) and, without ``allow_identity_changes: true`` (which the catalog accepts on
        zone C roles only), any IAM action but ``Get*``/``List*``/``Generate*``/``Simulate*``.
        Guardrails apply either way."""
        errors = [f"unknown key {key!r} in aws grant" for key in sorted(set(grant) - _GRANT_KEYS)]
        identity_changes = grant.get("allow_identity_changes", False)
        if not isinstance(identity_changes, bool):
            errors.append("allow_identity_changes must be true or false")
        actions, resources = grant.get("actions"), grant.get("resources")
        if not actions or not isinstance(actions, list):
            errors.append("actions must be a non-empty list of IAM actions such as s3:GetObject")
        else:
            errors += [e for a in actions for e in _action_errors(a, identity_changes is True)]
        if not resources or not isinstance(resources, list):
            errors.append("resources must be a non-empty list of ARNs or '*'")
        else:
            errors += [
                f"resource {r!r} is neither an ARN nor '*'"
                for r in resources
                if not isinstance(r, str) or (r != "*" and not r.startswith("arn:"))
            ]
        conditions = grant.get("conditions", {})
        if not isinstance(conditions, Mapping) or not all(
            isinstance(block, Mapping) for block in conditions.values()
        ):
            errors.append("conditions must map condition operators to {key: value} blocks")
        if not errors:
            try:
                session_policy(grant, _LONGEST_ROLE_ARN)
            except TargetError as exc:
                errors.append(exc.message)
        return errors

    @classmethod
    def validate_for_zone(cls, grant: Mapping[str, Any], zone: str) -> list[str]:
        """Zone A is read-only: read verbs only, nothing that mints credentials
        (:mod:`breakglass.connectors.aws_read`). Zones B and C: the grant rules above."""
        if zone != "A":
            return []
        return read_only_errors(grant.get("actions") or [])

    def __init__(self, name: str, config: Mapping[str, Any], *, ownership: Ownership) -> None:
        super().__init__(name, config, ownership=ownership)
        self.role_arn = str(config.get("role_arn", ""))
        self.role_name = self.role_arn.rsplit("/", 1)[-1]
        self.region = str(config.get("region") or DEFAULT_REGION)

    @cached_property
    def _sts(self) -> STSClient:
        return boto3.session.Session().client("sts", **self._client_options())

    @cached_property
    def _iam(self) -> IAMClient:
        return boto3.session.Session().client("iam", **self._client_options())

    def _client_options(self) -> dict[str, Any]:
        endpoint = self.config.get("endpoint_url")
        return {"region_name": self.region, "endpoint_url": endpoint, "config": _BOTO_CONFIG}

    @contextmanager
    def _aws_call(self, operation: str) -> Iterator[None]:
        """Map botocore errors to TargetError; AWS error messages carry no secrets."""
        try:
            yield
        except ClientError as exc:
            error = exc.response.get("Error", {})
            reason = f"{error.get('Code', 'Unknown')} {error.get('Message', '')}".strip()
            raise TargetError(f"aws target {self.name}: {operation} failed: {reason}") from exc
        except BotoCoreError as exc:
            raise TargetError(f"aws target {self.name}: {operation} failed: {exc}") from exc

    def grant(self, spec: GrantSpec) -> IssuedCredential:
        """Assume the emergency role for one grant. The one artefact names the
        revocation policy revoke would put, whose name carries the native expiry."""
        now = datetime.now(UTC)
        if spec.expires_at <= now:
            raise TargetError(f"grant {spec.grant_id} has already expired")
        session = session_name(spec.grant_id, self.ownership.prefix)
        tags = {"request": spec.request_id, "incident": spec.incident, "principal": spec.principal}
        params: AssumeRoleRequestTypeDef = {
            "RoleArn": self.role_arn,
            "RoleSessionName": session,
            "DurationSeconds": session_seconds(spec.expires_at, now),
            "Policy": session_policy(spec.grant, self.role_arn),
            "Tags": [
                {"Key": f"breakglass:{key}", "Value": _TAG_UNSAFE.sub("_", value)[:256]}
                for key, value in tags.items()
            ],
            # SourceIdentity survives role chaining and lands in every CloudTrail event.
            "SourceIdentity": _NAME_UNSAFE.sub("_", spec.principal)[:64].ljust(2, "_"),
        }
        if self.config.get("external_id"):
            params["ExternalId"] = str(self.config["external_id"])
        with self._aws_call("sts:AssumeRole"):
            credentials = self._sts.assume_role(**params)["Credentials"]
        native_expiry = credentials["Expiration"].astimezone(UTC)
        secret = {
            "type": "aws",
            "aws_access_key_id": credentials["AccessKeyId"],
            "aws_secret_access_key": credentials["SecretAccessKey"],
            "aws_session_token": credentials["SessionToken"],
            "region": self.region,
            "expires_at": native_expiry.isoformat(),
            "session_name": session,
        }
        artefact = revoke_policy_name(session, native_expiry)
        return IssuedCredential(target_ref=session, secret=secret, artefacts=(artefact,))

    def revoke(self, target_ref: str, artefacts: tuple[str, ...] = ()) -> None:
        """Deny everything to this one session until its native expiry. Idempotent.
        Without grant's artefact the revocation lasts the longest session STS allows."""
        if not self.ownership.looks_like(target_ref):
            raise TargetError(f"{target_ref!r} is not a breakglass session name")
        now = datetime.now(UTC)
        self.cleanup_expired_revocations(now)
        known = [p[1] for p in map(parse_revoke_policy_name, artefacts) if p and p[0] == target_ref]
        native_expiry = known[0] if known else now + timedelta(seconds=MAX_SESSION_SECONDS)
        if native_expiry + CLEANUP_GRACE <= now or target_ref in self._revoked_sessions():
            return
        with self._aws_call("iam:PutRolePolicy"):
            role_id = self._iam.get_role(RoleName=self.role_name)["Role"]["RoleId"]
            self._iam.put_role_policy(
                RoleName=self.role_name,
                PolicyName=revoke_policy_name(target_ref, native_expiry),
                PolicyDocument=revocation_policy(f"{role_id}:{target_ref}"),
            )

    def cleanup_expired_revocations(self, now: datetime) -> list[str]:
        """Delete the revocation policies of sessions past their native expiry.
        Idempotent; returns the policy names deleted. Run it from the expiry loop."""
        expired = [
            name
            for names in self._revoked_sessions().values()
            for name in names
            if (parsed := parse_revoke_policy_name(name)) and parsed[1] + CLEANUP_GRACE <= now
        ]
        for name in expired:
            # Another broker instance may have got there first.
            with (
                self._aws_call("iam:DeleteRolePolicy"),
                suppress(self._iam.exceptions.NoSuchEntityException),
            ):
                self._iam.delete_role_policy(RoleName=self.role_name, PolicyName=name)
        return expired

    def _revoked_sessions(self) -> dict[str, list[str]]:
        sessions: dict[str, list[str]] = {}
        paginator = self._iam.get_paginator("list_role_policies")
        with self._aws_call("iam:ListRolePolicies"):
            for page in paginator.paginate(RoleName=self.role_name):
                for name in page["PolicyNames"]:
                    if parsed := parse_revoke_policy_name(name):
                        sessions.setdefault(parsed[0], []).append(name)
        return sessions

    def verify(self, target_ref: str) -> bool:
        """True unless the session was revoked; STS cannot say whether it has expired."""
        return target_ref not in self._revoked_sessions()

    def list_managed(self) -> list[str]:
        """Always empty: STS sessions cannot be listed; native expiry is the backstop."""
        return []

    def planned_ref(self, grant_id: str) -> str:
        return session_name(grant_id, self.ownership.prefix)

    def inventory(self) -> list[StandingPrivilege]:
        """Users with an active access key, and users, groups and roles with
        AdministratorAccess attached or an inline allow of ``*`` on ``*``."""
        found: list[StandingPrivilege] = []
        paginator = self._iam.get_paginator("get_account_authorization_details")
        with self._aws_call("iam:GetAccountAuthorizationDetails"):
            for page in paginator.paginate(Filter=["User", "Group", "Role"]):
                details: Mapping[str, Any] = page
                for kind, list_key, name_key, inline_key in _ENTITY_DETAILS:
                    for entity in details.get(list_key, []):
                        subject = f"{kind}/{entity[name_key]}"
                        found += self._policy_findings(subject, entity, inline_key)
                        if kind == "user":
                            keys = self._iam.list_access_keys(UserName=entity[name_key])
                            found += [
                                StandingPrivilege(self.name, subject, "long-lived access key", kid)
                                for key in keys["AccessKeyMetadata"]
                                if key.get("Status") == "Active" and (kid := key.get("AccessKeyId"))
                            ]
        return found

    def _policy_findings(
        self, subject: str, entity: Mapping[str, Any], inline_key: str
    ) -> list[StandingPrivilege]:
        note = " (the broker's emergency role)" if subject == f"role/{self.role_name}" else ""
        findings = [
            StandingPrivilege(self.name, subject, "AdministratorAccess attached", arn + note)
            for policy in entity.get("AttachedManagedPolicies", [])
            if (arn := policy.get("PolicyArn", "")).endswith(":policy/AdministratorAccess")
        ]
        findings += [
            StandingPrivilege(
                self.name, subject, "inline allow of * on *", f"{policy['PolicyName']}{note}"
            )
            for policy in entity.get(inline_key, [])
            if _allows_everything(policy.get("PolicyDocument", "{}"))
        ]
        return findings
