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
    StandingPrivilege,
)

ENTRY_POINT_GROUP = "breakglass.connectors"

__all__ = [
    "ENTRY_POINT_GROUP",
    "MARKER_PREFIX",
    "Connector",
    "GrantSpec",
    "IssuedCredential",
    "StandingPrivilege",
    "connector_class",
    "connector_types",
]


@cache
def _registry() -> dict[str, type[Connector]]:
    found: dict[str, type[Connector]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        cls = ep.load()
        if isinstance(cls, type) and issubclass(cls, Connector):
            found[ep.name] = cls
    return found


def connector_types() -> list[str]:
    return sorted(_registry())


def connector_class(type_name: str) -> type[Connector] | None:
    return _registry().get(type_name)
