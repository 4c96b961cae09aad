"""The catalog file's schema. Field names are the user-facing contract."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from breakglass.domain.durations import parse_duration
from breakglass.domain.errors import InvalidInput

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
SELECTOR = r"^(group:[A-Za-z0-9:_.@-]{1,128}|user:[A-Za-z0-9_.@-]{1,128}|[A-Za-z0-9_.@-]{1,128})$"


def _duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    try:
        return parse_duration(value)
    except InvalidInput as exc:
        raise ValueError(str(exc)) from exc


Duration = Annotated[timedelta, BeforeValidator(_duration)]
Selector = Annotated[str, Field(pattern=SELECTOR)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MfaConfig(Strict):
    amr_any_of: list[str] = Field(default_factory=lambda: ["mfa", "otp", "hwk"])
    max_age: Duration = timedelta(minutes=15)


class IdentityConfig(Strict):
    issuer: str | None = None
    audience: str = "breakglass"
    client_id: str | None = None
    groups_claim: str = "groups"
    mfa: MfaConfig = MfaConfig()
    shared_accounts: list[str] = Field(default_factory=list)


class IncidentConfig(Strict):
    id_pattern: str = r"^(INC|CHG)-[0-9]{3,}$"
    verify_url: str | None = None
    fail_open_zone_a: bool = False
    # GET <verify_url>/<id> answers 200 and {"status": ...}; these words mean open
    open_statuses: list[str] = Field(default_factory=lambda: ["open"], min_length=1)
    verify_timeout: Duration = timedelta(seconds=2)

    @field_validator("verify_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if not value:  # unset, or ${VAR:-} left empty
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("id_pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from exc
        return value


class ZoneConfig(Strict):
    description: str = ""
    default_ttl: Duration
    max_ttl: Duration
    approvals: int = Field(ge=0, le=5)
    self_approval: bool = False
    approvers_outside_team: bool = True
    extension_approvals: int | None = Field(default=None, ge=0, le=5)
    require_mfa: bool = True
    max_total: Duration | None = None

    @model_validator(mode="after")
    def _bounds(self) -> ZoneConfig:
        if self.default_ttl > self.max_ttl:
            raise ValueError("default_ttl is longer than max_ttl")
        if self.self_approval and self.approvals > 0:
            raise ValueError("self_approval needs approvals: 0")
        return self


class DirectoryEntry(Strict):
    groups: list[str] = Field(default_factory=list)
    mfa: bool = False
    # the person's `sub` at the identity issuer: `user:<name>` selectors then match it only
    subject: str | None = Field(default=None, min_length=1, max_length=255)


class TargetConfig(BaseModel):
    """A target: ``type`` picks the connector; the rest is the connector's configuration."""

    model_config = ConfigDict(extra="allow", frozen=True)
    type: str
    environment: str = "prod"
    description: str = ""

    def connector_config(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class RoleConfig(Strict):
    zone: Literal["A", "B", "C"]
    target: str
    description: str = ""
    environments: list[str] | None = None
    requesters: list[Selector] = Field(min_length=1)
    max_ttl: Duration | None = None
    grant: dict[str, Any] = Field(default_factory=dict)


class WorkloadConfig(Strict):
    subject: str
    issuer: str | None = None
    audience: str | None = None
    target: str
    account: str = Field(pattern=NAME)
    requesters: list[Selector] = Field(default_factory=list)
    roles: list[str] = Field(default_factory=list)  # empty: every role on its target


class AutoApprove(Strict):
    reason_codes: list[str] = Field(default_factory=list)
    requesters: list[Selector] = Field(default_factory=list)


class RunbookConfig(Strict):
    title: str
    roles: list[str] = Field(min_length=1)
    auto_approve: AutoApprove = AutoApprove()
    severity: list[str] | None = None


class AlertSink(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    type: Literal["webhook", "slack"]
    url: str
    name: str | None = Field(default=None, pattern=NAME)
    # the environment variable holding the webhook's HMAC-SHA256 key
    secret_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    kinds: list[Literal["notification", "alert"]] = Field(
        default=["notification", "alert"], min_length=1
    )


class StatementLogConfig(Strict):
    """Where a PostgreSQL target's statement log (csvlog or jsonlog) is read from."""

    source: Literal["sql", "file"] = "sql"
    path: str | None = None  # the log directory, for source: file


class IdentityChangeRule(Strict):
    enabled: bool = True
    # by target name; unset means every postgres target, read through SQL
    statement_logs: dict[str, StatementLogConfig] | None = None
    poll_interval: float = Field(default=1.0, gt=0, le=300)


class ViolationBurstRule(Strict):
    refusals: int = Field(default=5, ge=2, le=1000)
    within: Duration = timedelta(minutes=10)


class AlertRulesConfig(Strict):
    zone_c_activation: bool = True
    identity_change: IdentityChangeRule = IdentityChangeRule()
    violation_burst: ViolationBurstRule | None = ViolationBurstRule()
    late_revocation_after: Duration | None = timedelta(seconds=60)
    flagged_events: bool = True  # events the broker marks as alerts (failed revocation, drift)
    events: dict[Annotated[str, Field(pattern=NAME)], list[str]] = Field(default_factory=dict)
    review_overdue: bool = True


class DeliveryConfig(Strict):
    timeout: Duration = timedelta(seconds=5)
    max_backoff: Duration = timedelta(minutes=5)
    max_attempts: int = Field(default=30, ge=1, le=1000)


class AlertsConfig(Strict):
    sinks: list[AlertSink] = Field(default_factory=list)
    notify_approvers: bool = True
    rules: AlertRulesConfig = AlertRulesConfig()
    delivery: DeliveryConfig = DeliveryConfig()


class ReviewsConfig(Strict):
    enabled: bool = True
    due_after: Duration = timedelta(hours=24)
    reviewers: list[Selector] | None = None  # unset: the approver groups of every zone
    check_interval: Duration = timedelta(seconds=60)


class Catalog(Strict):
    version: Literal[1]
    organization: str
    identity: IdentityConfig = IdentityConfig()
    incident: IncidentConfig = IncidentConfig()
    reason_codes: list[str] = Field(
        default_factory=lambda: [
            "containment", "recovery", "data_integrity", "service_restoration"
        ],
        min_length=1,
    )
    zones: dict[Literal["A", "B", "C"], ZoneConfig]
    directory: dict[str, DirectoryEntry] = Field(default_factory=dict)
    approvers: dict[Literal["A", "B", "C"], list[Selector]] = Field(default_factory=dict)
    targets: dict[Annotated[str, Field(pattern=NAME)], TargetConfig] = Field(default_factory=dict)
    roles: dict[Annotated[str, Field(pattern=NAME)], RoleConfig] = Field(default_factory=dict)
    workloads: dict[Annotated[str, Field(pattern=NAME)], WorkloadConfig] = Field(
        default_factory=dict
    )
    runbooks: dict[Annotated[str, Field(pattern=NAME)], RunbookConfig] = Field(
        default_factory=dict
    )
    alerts: AlertsConfig = AlertsConfig()
    reviews: ReviewsConfig = ReviewsConfig()
    pending_timeout: Duration = timedelta(hours=1)
