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
* :meth:`Connector.list_managed` lists every target-side reference that
  carries the broker's marker, so drift can be reconciled.

Driver errors are mapped to :class:`breakglass.domain.errors.TargetError`
(``raise TargetError(...) from exc``) and never carry secrets.

Connectors are registered by ``type`` name. Third-party connectors register
through the ``breakglass.connectors`` entry-point group.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

MARKER_PREFIX = "bg_"
"""Every target-side artefact the broker creates carries this prefix."""


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
    lists_managed: ClassVar[bool] = True
    """False for targets that cannot enumerate what the broker made (certificates,
    STS sessions); drift reconciliation skips them and relies on native expiry."""

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        self.name = name
        self.config = config

    @classmethod
    def validate_grant(cls, grant: Mapping[str, Any]) -> list[str]:
        """Check a role's ``grant`` block at catalog load; return error messages."""
        del grant
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
        """Every target-side reference that carries the broker's marker."""

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
