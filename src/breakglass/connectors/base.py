"""The one contract every target connector implements.

A connector turns a role's ``grant`` block from the catalog into a real,
short-lived credential on one target system, and takes it away again. Every
I/O with a target goes through these four methods, nothing else:

* :meth:`Connector.grant` mints the credential (with native expiry wherever
  the target supports it) and returns the target-side reference plus the
  secret, which the broker shows to the requester exactly once.
* :meth:`Connector.revoke` invalidates the credential, terminates live
  sessions and removes every artefact listed at issue time. It is idempotent:
  revoking something already gone succeeds.
* :meth:`Connector.verify` says whether the credential still exists and is
  usable on the target (used by drift detection and tests).
* :meth:`Connector.list_managed` lists every target-side reference whose name
  starts with the deployment's marker prefix, so drift can be reconciled.

**Ownership.** Every connector is built with the deployment's
:class:`Ownership` (a required keyword of the constructor) and names what it
creates with :meth:`Ownership.ref_for`: the marker prefix, the grant's ID and a
tag, an HMAC under a key only this deployment's store holds. A name that merely
starts with the prefix proves nothing; :meth:`Ownership.owns` tells the
deployment's own names from lookalikes (a pre-existing application role, another
deployment's grants, a forgery), and drift never touches a name it does not own.

Driver errors are mapped to :class:`breakglass.domain.errors.TargetError`
(``raise TargetError(...) from exc``) and never carry secrets.

**Account overrides (workload track).** A connector whose class sets
``supports_account_override = True`` can also grant a role's privileges to an
*existing* account instead of minting a new credential: the broker then sets
``GrantSpec.account``. For such a spec, :meth:`Connector.grant`

* reads what the account already holds *before* granting anything, and adds
  only what is missing;
* returns ``artefacts`` that list exactly the privileges it added, each one a
  JSON-encoded object (stable key order), and ``audit`` facts naming what was
  already present; ``secret`` carries no secret (the workload keeps using its
  own credential);
* returns a ``target_ref`` carrying the broker's marker, known in advance from
  :meth:`Connector.planned_ref`, and keeps on the target whatever
  :meth:`Connector.revoke` needs to roll back without the artefacts (after a
  crash between granting and recording).

:meth:`Connector.revoke` with that ``target_ref`` and those ``artefacts`` rolls
the account back to exactly its previous state: it removes only the listed
privileges, never one the account held before, and is idempotent, so a
rollback interrupted half-way converges when it is run again.
:meth:`Connector.validate_override` checks at catalog load that a role's
``grant`` block can never change the account's identity attributes.

Connectors are registered by ``type`` name. Third-party connectors register
through the ``breakglass.connectors`` entry-point group.
"""

from __future__ import annotations

import abc
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

MARKER_PREFIX = "bg_"
"""The default marker prefix (``BREAKGLASS_MARKER_PREFIX``) of target-side names."""

MARKER_PREFIX_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,11}$")
"""A marker prefix: a lowercase letter, then up to 11 lowercase letters, digits or ``_``."""

TAG_CHARS = 16
_MAX_NAME = 63  # PostgreSQL's identifier limit, the tightest of the targets
_MAX_GRANT_CHARS = 32


@dataclass(frozen=True, slots=True)
class Ownership:
    """What marks a target-side name as this deployment's own.

    ``ref_for(grant_id)`` is ``prefix + sanitized grant ID + "_" + tag``, where the tag is
    the first 16 hex digits of HMAC-SHA256 of the rest under ``key``, a random secret
    created once per deployment and kept in its store (every broker of one fleet shares
    it; another deployment has another). At most 61 characters, lowercase ASCII.
    """

    prefix: str
    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not MARKER_PREFIX_PATTERN.match(self.prefix):
            raise ValueError(f"marker prefix {self.prefix!r}: a lowercase letter, then up to "
                             "11 lowercase letters, digits or '_'")
        if len(self.key) < 16:
            raise ValueError("ownership key: at least 16 bytes")

    def ref_for(self, grant_id: str) -> str:
        """The target-side name of a grant, carrying this deployment's tag."""
        body = re.sub(r"[^a-z0-9]", "", grant_id.lower())[:_MAX_GRANT_CHARS]
        if not body:
            raise ValueError(f"grant id {grant_id!r} has no letter or digit to name it by")
        stem = self.prefix + body
        return f"{stem}_{self._tag(stem)}"

    def owns(self, ref: str) -> bool:
        """True only for a name made by :meth:`ref_for` under this deployment's key."""
        if len(ref) > _MAX_NAME or not ref.startswith(self.prefix):
            return False
        stem, sep, tag = ref.rpartition("_")
        if not sep or len(tag) != TAG_CHARS or len(stem) <= len(self.prefix):
            return False
        return hmac.compare_digest(tag.encode(), self._tag(stem).encode())

    def looks_like(self, ref: str) -> bool:
        """True for any name under the marker prefix, owned or not."""
        return ref.startswith(self.prefix)

    def _tag(self, stem: str) -> str:
        return hmac.new(self.key, stem.encode(), hashlib.sha256).hexdigest()[:TAG_CHARS]

IDENTITY_ATTRIBUTES = frozenset({
    "superuser", "createrole", "createdb", "bypassrls", "replication", "login", "inherit",
    "member_of", "in_role", "grant_roles", "with_grant_option", "with_admin_option",
    "all_privileges",
})
"""Words that, anywhere in a grant block, mark a change of an account's identity."""


def _words(value: Any) -> list[str]:
    """Every key and string in a grant block, lower-cased, spaces as underscores."""
    if isinstance(value, Mapping):
        return [w for k, v in value.items() for w in (*_words(str(k)), *_words(v))]
    if isinstance(value, list | tuple):
        return [w for item in value for w in _words(item)]
    if isinstance(value, str):
        return [value.strip().lower().replace(" ", "_")]
    return []


@dataclass(frozen=True, slots=True)
class GrantSpec:
    """What the broker asks a connector to mint for one role of one request."""

    grant_id: str
    request_id: str
    principal: str
    role: str
    incident: str
    grant: Mapping[str, Any]
    expires_at: datetime
    public_key: str | None = None
    account: str | None = None
    """An existing account to override (workload track), instead of a new credential."""
    zone: str = "A"
    """The role's blast-radius zone (``A``, ``B`` or ``C``). A connector that checks the
    credential it minted against the zone's ceiling reads it; unset means the strictest."""


@dataclass(frozen=True, slots=True)
class IssuedCredential:
    """What a connector minted.

    ``target_ref`` names the artefact on the target (role name, ACL user,
    certificate serial, STS session name). ``secret`` is shown to the
    requester once and is never written to logs or audit payloads.
    ``artefacts`` lists anything else created that revoke must clean up.
    """

    target_ref: str
    secret: Mapping[str, Any]
    artefacts: tuple[str, ...] = field(default_factory=tuple)
    audit: Mapping[str, Any] = field(default_factory=dict)
    """Non-secret facts for the grant's audit event (e.g. what an override found present)."""


@dataclass(frozen=True, slots=True)
class StandingPrivilege:
    """One standing privilege found by inventory on a target."""

    target: str
    subject: str
    privilege: str
    detail: str = ""


class Connector(abc.ABC):
    """Base class for target connectors. See the module docstring."""

    type: ClassVar[str]
    extends_natively: ClassVar[bool] = True
    """False where a credential's own expiry cannot move (SSH certificates, STS
    sessions): extensions of such grants are refused rather than recorded and
    silently cut short by the target."""
    lists_managed: ClassVar[bool] = True
    """False for targets that cannot enumerate what the broker made (certificates,
    STS sessions); drift reconciliation skips them and relies on native expiry."""
    accepts_public_key: ClassVar[bool] = False
    """True for targets that sign a requester's own public key (``GrantSpec.public_key``);
    a request that sends one needs at least one role on such a target."""
    supports_account_override: ClassVar[bool] = False
    """True for targets that can add a role's privileges to an existing account and
    roll them back (``GrantSpec.account``); workloads need such a target."""

    def __init__(self, name: str, config: Mapping[str, Any], *, ownership: Ownership) -> None:
        self.name = name
        self.config = config
        self.ownership = ownership
        """The deployment's marker: every name this connector creates comes from it."""

    @classmethod
    def validate_grant(cls, grant: Mapping[str, Any]) -> list[str]:
        """Check a role's ``grant`` block at catalog load; return error messages."""
        del grant
        return []

    @classmethod
    def validate_override(cls, grant: Mapping[str, Any]) -> list[str]:
        """Check a role's ``grant`` block for use as an account override; return errors.

        An override adds privileges and nothing else: any sign of an identity
        attribute (superuser, role creation, role membership, login, replication)
        is refused, whatever the connector."""
        found = sorted({w for w in _words(grant) if w in IDENTITY_ATTRIBUTES})
        if found:
            return [f"would give the account {', '.join(found).upper()}; an override only "
                    "adds privileges, never identity attributes"]
        return []

    @classmethod
    def validate_for_zone(cls, grant: Mapping[str, Any], zone: str) -> list[str]:
        """Check a (schema-valid) ``grant`` block against the ceiling of its role's zone.

        ``zone`` is ``"A"``, ``"B"`` or ``"C"``. Each connector states what its
        ceilings mean for its target (zone A: read-only; zone B: no server
        administration; no zone: changing the target's own users, ACLs or config).
        Called by catalog load, so ``lint`` and ``serve`` refuse what it returns.
        Default: no ceiling known for this target type."""
        del grant, zone
        return []

    @classmethod
    def validate_config(cls, config: Mapping[str, Any]) -> list[str]:
        """Check a target's configuration at catalog load; return error messages."""
        del config
        return []

    @abc.abstractmethod
    def grant(self, spec: GrantSpec) -> IssuedCredential:
        """Mint the credential on the target."""

    @abc.abstractmethod
    def revoke(self, target_ref: str, artefacts: tuple[str, ...] = ()) -> None:
        """Invalidate the credential, kill its sessions, clean its artefacts."""

    @abc.abstractmethod
    def verify(self, target_ref: str) -> bool:
        """True when the credential still exists and can be used."""

    @abc.abstractmethod
    def list_managed(self) -> list[str]:
        """Every target-side reference under the marker prefix, owned or a lookalike
        (drift tells them apart with :meth:`Ownership.owns`)."""

    def planned_ref(self, grant_id: str) -> str | None:
        """The target-side reference a grant will get, when it is known before minting.

        Lets startup recovery find a credential minted just before a crash."""
        del grant_id
        return None

    def inventory(self) -> list[StandingPrivilege]:
        """Standing privileges found on the target (superusers, ``+@all`` users,
        long-lived keys), whether or not the broker made them. Default: none known."""
        return []

    def extend(self, target_ref: str, expires_at: datetime) -> None:
        """Move native expiry on the target, where it has one. Default: nothing to move."""
        del target_ref, expires_at

    def close(self) -> None:  # noqa: B027
        """Release pooled connections."""
