"""The one place where breakglass is wired together."""

from __future__ import annotations

import hmac
import os
import secrets
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine

from breakglass.audit import (
    Anchor,
    LocalDirectoryAnchor,
    S3ObjectLockAnchor,
    Verifiers,
    load_or_create_signing_key,
    load_signing_key,
    load_signing_key_from_env_text,
)
from breakglass.catalog.loader import LoadedCatalog, load_catalog
from breakglass.connectors import Connector, Ownership, connector_class
from breakglass.domain.errors import (
    AuditError,
    CatalogError,
    InvalidInput,
    NotFound,
    Unauthenticated,
)
from breakglass.domain.events import EventTag
from breakglass.domain.model import Principal
from breakglass.domain.names import normalise_name
from breakglass.domain.policy import Denied
from breakglass.identity.devissuer import DevIssuer
from breakglass.identity.jwks import JwksCache
from breakglass.identity.oidc import TokenVerifier, WorkloadIdentity
from breakglass.notify.operations import Operations, build_operations
from breakglass.service import crashpoints
from breakglass.service.auditlog import AuditLog, CheckpointLoop
from breakglass.service.broker import Broker
from breakglass.service.expiry import ExpiryLoop
from breakglass.service.incidents import HttpIncidentDirectory
from breakglass.service.ports import Clock, SecretBox, SystemClock
from breakglass.service.recording import actor_name, actor_payload
from breakglass.service.refusals import RefusalBudget, RefusalRecorder
from breakglass.service.sessions import SessionLog
from breakglass.settings import Settings, anchor_placement_refusal, local_anchor_dir
from breakglass.storage.migrate import upgrade
from breakglass.storage.uow import UnitOfWork, make_engine

log = structlog.get_logger("breakglass")

DEV_TOKEN_TTL = timedelta(hours=12)


@dataclass
class Container:
    settings: Settings
    loaded: LoadedCatalog
    engine: Engine
    broker: Broker
    authenticator: TokenVerifier
    clock: Clock
    audit: AuditLog
    dev_issuer: DevIssuer | None = None
    connectors: dict[str, Connector] = field(default_factory=dict)
    expiry: ExpiryLoop | None = None
    checkpoints: CheckpointLoop | None = None
    operations: Operations | None = None
    sessions: SessionLog | None = None
    form_key: bytes = field(default=b"", repr=False)
    """Key of the web page's CSRF tokens (derived from the secret key)."""
    refusals: RefusalRecorder = field(init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.refusals = RefusalRecorder(lambda: UnitOfWork(self.engine), self.clock,
                                        refusal_budget(self.settings))

    def authenticate(self, token: str, channel: str) -> Principal:
        """The caller behind ``token``; a refusal and a token's first use are audit events."""
        try:
            principal = self.authenticator.authenticate(token)
        except Unauthenticated as exc:
            self.record_auth_refusal(exc)
            raise
        if self.sessions is not None:
            self.sessions.started(token, principal, channel)
        return principal

    def dev_login(self, username: str) -> tuple[str, int]:
        """Issue a dev token for a directory user (``serve --dev`` only)."""
        if self.dev_issuer is None:
            raise NotFound("dev login needs a --dev server", rule="identity.dev_disabled")
        catalog = self.loaded.catalog
        entry = catalog.directory.get(username)
        if normalise_name(username) in self.loaded.policy.shared_accounts:
            self.broker.refuse_action(None, Denied("identity.shared_account",
                                                    f"'{username}' is a shared account"))
        if entry is None:
            self.broker.refuse_action(None, Denied("identity.unknown_user",
                                                    f"'{username}' is not in the directory"))
        token = self.dev_issuer.issue(username, entry.model_dump(), self.clock.now(),
                                      DEV_TOKEN_TTL)
        with UnitOfWork(self.engine) as uow:
            uow.events.append(ts=self.clock.now(), actor=username, action=EventTag.LOGIN,
                              payload={"method": "dev"})
        return token, int(DEV_TOKEN_TTL.total_seconds())

    def check_hook_secret(self, presented: str) -> None:
        self._check_shared_secret(
            presented, os.environ.get("BREAKGLASS_INCIDENT_HOOK_SECRET", ""),
            Unauthenticated("invalid incident hook secret", rule="identity.hook_secret"))

    def check_metrics_token(self, presented: str) -> None:
        """``GET /metrics``: the configured scrape token; open without one on ``--dev`` only."""
        expected = self.settings.metrics_token
        if expected is None and self.settings.dev:
            return
        self._check_shared_secret(presented, expected or "", Unauthenticated(
            "the metrics scrape token is missing or wrong" if expected else
            "/metrics needs a scrape token: set BREAKGLASS_METRICS_TOKEN (or _FILE) on the "
            "broker and give Prometheus the same value as its bearer token",
            rule="identity.metrics_token"))

    def _check_shared_secret(self, presented: str, expected: str,
                             refusal: Unauthenticated) -> None:
        if not expected or not hmac.compare_digest(presented.encode(), expected.encode()):
            self.record_auth_refusal(refusal)
            raise refusal

    def record_auth_refusal(self, exc: Unauthenticated) -> None:
        """Account for the refusal of a caller not authenticated (from the address of the
        call being served): recorded, or counted once the refusal budget is spent (see
        :mod:`breakglass.service.refusals`)."""
        self.refusals.refused(exc.rule, exc.message)

    def record_input_refusal(self, exc: InvalidInput, who: Principal | None, method: str,
                             path: str) -> None:
        """Account for input the API refused (422), under the same refusal budget: who
        sent it (if known), the method and path, the rule and reason, never the body."""
        payload = actor_payload(who, {"method": method, "path": path[:200]})
        self.refusals.refused(exc.rule, exc.message[:500], actor=actor_name(who or "anonymous"),
                              action=EventTag.INPUT_REFUSED, payload=payload)

    def start_background(self) -> None:
        with self._lock:
            if self.settings.run_expiry and self.expiry is None:
                self.expiry = ExpiryLoop(self.broker, self.clock,
                                         max_sleep=self.settings.expiry_interval,
                                         drift_interval=self.settings.drift_interval,
                                         recover_grace=self.settings.recover_grace)
                self.broker.on_activated.append(self.expiry.wake)
                self.expiry.start()
            if self.checkpoints is None:
                self.checkpoints = CheckpointLoop(self.audit, before=self.refusals.flush)
                self.checkpoints.start()
            if self.operations is not None:
                self.operations.start()

    def stop_background(self) -> None:
        with self._lock:
            if self.expiry is not None:
                self.expiry.stop()
                self.expiry = None
            if self.checkpoints is not None:
                self.checkpoints.stop()
                self.checkpoints = None
            try:
                self.refusals.flush(force=True)
            except Exception:  # stopping goes on: the connectors still close
                log.exception("the count of refusals over budget could not be written")
            if self.operations is not None:
                self.operations.stop()
            for connector in self.connectors.values():
                connector.close()


def refusal_budget(settings: Settings) -> RefusalBudget:
    return RefusalBudget(per_source=settings.refusals_per_address,
                         overall=settings.refusals_per_minute)


def build_connectors(loaded: LoadedCatalog, ownership: Ownership) -> dict[str, Connector]:
    """One connector per target, each naming what it creates with ``ownership``."""
    found: dict[str, Connector] = {}
    for name, target in loaded.catalog.targets.items():
        cls = connector_class(target.type)
        if cls is None:
            raise CatalogError(loaded.source, [f"targets.{name}.type: unknown connector"])
        found[name] = cls(name, target.connector_config(), ownership=ownership)
    return found


def deployment_ownership(engine: Engine, prefix: str, clock: Clock) -> Ownership:
    """The deployment's marker: the configured prefix and the key kept in the store (made
    by the first broker of the fleet to start, read by every other)."""
    with UnitOfWork(engine) as uow:
        key = uow.ownership.ownership_key(secrets.token_bytes(32), clock.now())
    return Ownership(prefix, key)


def _secret_box(settings: Settings) -> SecretBox:
    if settings.secret_key is not None:
        return SecretBox(settings.secret_key)
    # --dev only: a key kept next to the database, created once with 0600.
    path = settings.state_dir / "secret.key"
    if not path.exists():
        settings.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(SecretBox.new_key())
    return SecretBox(Path(path).read_bytes().strip())


def audit_origin(organization: str) -> str:
    """The audit log's name: the origin line of its checkpoints and its key name."""
    return f"breakglass/{organization}"


def audit_signing_key(settings: Settings, *, create: bool = True) -> Ed25519PrivateKey:
    """The checkpoint signing key: ``BREAKGLASS_AUDIT_KEY``, else the key file (made in the
    state directory on first start when ``create``)."""
    if settings.audit_key_text:
        return load_signing_key_from_env_text(settings.audit_key_text)
    key_file = settings.audit_key_file or settings.state_dir / "audit.key"
    return load_or_create_signing_key(key_file) if create else load_signing_key(key_file)


def audit_previous_keys(settings: Settings) -> Verifiers | None:
    """The verifier keys of ``BREAKGLASS_AUDIT_PREVIOUS_KEYS``, if any."""
    if not settings.audit_previous_keys or not settings.audit_previous_keys.strip():
        return None
    try:
        return Verifiers.parse(settings.audit_previous_keys)
    except AuditError as exc:
        raise InvalidInput(f"BREAKGLASS_AUDIT_PREVIOUS_KEYS: {exc}",
                           rule="settings.audit_previous_keys") from exc


def build_audit(settings: Settings, engine: Engine, organization: str,
                clock: Clock) -> AuditLog:
    """The signing key, the anchors and the audit service over the event table."""
    key = audit_signing_key(settings)
    anchors: list[Anchor] = [LocalDirectoryAnchor(local_anchor_dir(settings))]
    if settings.anchor_s3_bucket:
        import boto3  # noqa: PLC0415 - heavy, and only S3 anchoring needs it

        client = boto3.client("s3", endpoint_url=settings.anchor_s3_endpoint)
        anchors.append(S3ObjectLockAnchor(settings.anchor_s3_bucket, settings.anchor_s3_prefix,
                                          client, retention_days=settings.anchor_retention_days))
    return AuditLog(engine, key=key, origin=audit_origin(organization), anchors=anchors,
                    clock=clock, previous=audit_previous_keys(settings))


def _instance_id(state_dir: Path) -> str:
    """A stable name for this broker instance, kept in its state directory."""
    path = state_dir / "instance-id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        value = "broker-" + secrets.token_hex(8)
        path.write_text(value + "\n")
        return value


def _incident_directory(loaded: LoadedCatalog) -> HttpIncidentDirectory | None:
    """The incident system named by ``incident.verify_url``, if any."""
    config = loaded.catalog.incident
    if not config.verify_url:
        return None
    return HttpIncidentDirectory(config.verify_url, open_statuses=config.open_statuses,
                                 timeout=config.verify_timeout.total_seconds())


def _authenticator(
    loaded: LoadedCatalog, clock: Clock, dev_issuer: DevIssuer | None
) -> TokenVerifier:
    identity = loaded.catalog.identity
    issuer = dev_issuer.issuer if dev_issuer is not None else identity.issuer
    if not issuer:
        raise CatalogError(loaded.source, ["identity.issuer: required unless serving with --dev"])
    workloads = [
        WorkloadIdentity(name, w.issuer or issuer, w.subject, w.audience or identity.audience)
        for name, w in loaded.catalog.workloads.items()
    ]
    if dev_issuer is not None:
        return dev_issuer.verifier(clock=clock.now, mfa_amr_any_of=identity.mfa.amr_any_of,
                                   workloads=workloads)
    http = httpx.Client(timeout=5)
    other_issuers = {w.issuer for w in workloads if w.issuer != issuer}
    return TokenVerifier(issuer, identity.audience,
                         key_source=JwksCache(issuer, http, clock.now),
                         groups_claim=identity.groups_claim,
                         mfa_amr_any_of=identity.mfa.amr_any_of, clock=clock.now,
                         workloads=workloads,
                         workload_key_sources={i: JwksCache(i, http, clock.now)
                                               for i in other_issuers})


def bootstrap(settings: Settings, *, clock: Clock | None = None, migrate: bool = True,
              serves_api: bool = True) -> Container:
    """Wire everything. ``serves_api=False`` (``breakglass worker``) verifies no tokens."""
    clock = clock or SystemClock()
    if (refusal := anchor_placement_refusal(settings)) is not None:
        raise refusal
    crashpoints.arm(settings.crash_at)
    loaded = load_catalog(settings.catalog)  # refuses any error-level invariant, naming each
    for finding in loaded.warnings:
        log.warning("catalog warning", rule=finding.rule, path=finding.where,
                    message=finding.message, hint=finding.hint)
    if settings.db_url.startswith("sqlite:///"):
        Path(settings.db_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.db_url)
    if migrate:
        upgrade(engine)
    audit = build_audit(settings, engine, loaded.catalog.organization, clock)
    audit.check_against_anchors()
    connectors = build_connectors(loaded,
                                  deployment_ownership(engine, settings.marker_prefix, clock))
    box = _secret_box(settings)
    broker = Broker(policy=loaded.policy, uow=lambda: UnitOfWork(engine), connectors=connectors,
                    clock=clock, secrets_box=box,
                    instance_id=_instance_id(settings.state_dir),
                    incidents=_incident_directory(loaded))
    identity = loaded.catalog.identity
    dev_issuer = (
        DevIssuer(audience=identity.audience, groups_claim=identity.groups_claim)
        if settings.dev
        else None
    )
    broker.on_activated.append(audit.checkpoint_after_change)
    broker.revoker.on_ended.append(audit.checkpoint_after_change)
    return Container(settings=settings, loaded=loaded, engine=engine, broker=broker, audit=audit,
                     authenticator=_authenticator(loaded, clock, dev_issuer) if serves_api
                     else DevIssuer().verifier(clock=clock.now), clock=clock,
                     dev_issuer=dev_issuer, connectors=connectors,
                     operations=build_operations(loaded, engine, clock,
                                                 marker_prefix=settings.marker_prefix),
                     sessions=SessionLog(lambda: UnitOfWork(engine), clock) if serves_api
                     else None, form_key=box.derive_key("web form tokens"))
