"""Target connectors, registered by type name.

Built-in connectors are listed in ``pyproject.toml`` under the entry-point
group ``breakglass.connectors``; third-party packages add their own there.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points

from breakglass.connectors.base import (
    MARKER_PREFIX,
    Connector,
    GrantSpec,
    IssuedCredential,
    Ownership,
    StandingPrivilege,
)

ENTRY_POINT_GROUP = "breakglass.connectors"

__all__ = [
    "ENTRY_POINT_GROUP",
    "MARKER_PREFIX",
    "Connector",
    "GrantSpec",
    "IssuedCredential",
    "Ownership",
    "StandingPrivilege",
    "connector_class",
    "connector_types",
]


@cache
def connector_types() -> list[str]:
    return sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


@cache
def connector_class(type_name: str) -> type[Connector] | None:
    """Load the connector registered under ``type_name`` (only that one)."""
    for ep in entry_points(group=ENTRY_POINT_GROUP, name=type_name):
        cls = ep.load()
        if isinstance(cls, type) and issubclass(cls, Connector):
            return cls
    return None
